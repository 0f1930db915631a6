"""The background map: raster tiles from a local archive (MBTiles, PMTiles) or a key-holding XYZ proxy.

Two sources, one interface (:meth:`TileSource.tile`):

- :class:`ArchiveTiles` reads a tile archive a GIS team made offline: MBTiles (SQLite, TMS rows, as QGIS
  writes it) or PMTiles v3 (the ``pmtiles`` package). Nothing leaves the server.
- :class:`ProxyTiles` fetches from an XYZ URL template (e.g. Ordnance Survey's Maps API with the
  council's key in it) and keeps recent tiles in memory. The browser only ever sees redline's own
  ``/basemap/{z}/{x}/{y}``, so the key never reaches it.
"""

from __future__ import annotations

import gzip
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
from cachetools import LRUCache

MAX_ZOOM = 22
PROXY_TIMEOUT_S = 10.0


class TileMissing(LookupError):
    """The source has no tile there (outside the archive, or the upstream answered 404)."""


class TileSourceError(RuntimeError):
    """The source failed (unreadable archive, upstream down): the caller may retry."""


def media_type(data: bytes) -> str:
    """The image type from the tile's first bytes (archives do not always say, upstreams may lie)."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


@dataclass(frozen=True)
class TileJSON:
    minzoom: int
    maxzoom: int
    attribution: str


class ArchiveTiles:
    """Tiles from a local ``.mbtiles`` or ``.pmtiles`` file.

    Parameters
    ----------
    path : Path
    attribution : str, optional
        Overrides the archive's own ``attribution`` metadata.
    """

    def __init__(self, path: Path, attribution: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise TileSourceError(f"the basemap archive {self.path} does not exist")
        self.kind = self.path.suffix.lower().lstrip(".")
        self._local = threading.local()
        if self.kind == "mbtiles":
            meta = dict(self._mbtiles().execute("SELECT name, value FROM metadata").fetchall())
            zooms = self._mbtiles().execute("SELECT MIN(zoom_level), MAX(zoom_level) FROM tiles").fetchone()
            minzoom = int(meta.get("minzoom", zooms[0] or 0))
            maxzoom = int(meta.get("maxzoom", zooms[1] or MAX_ZOOM))
        elif self.kind == "pmtiles":
            from pmtiles.reader import MmapSource, Reader

            self._file = open(self.path, "rb")  # noqa: SIM115 - held for the mmap's lifetime
            self._pmtiles = Reader(MmapSource(self._file))
            header = self._pmtiles.header()
            meta = self._pmtiles.metadata()
            minzoom, maxzoom = int(header["min_zoom"]), int(header["max_zoom"])
            self._gzip = header["tile_compression"].name == "GZIP"
        else:
            raise TileSourceError(f"the basemap archive {self.path} is neither .mbtiles nor .pmtiles")
        self.info = TileJSON(minzoom, maxzoom, attribution or str(meta.get("attribution") or ""))

    def _mbtiles(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._local.conn = conn
        return conn

    def tile(self, z: int, x: int, y: int) -> bytes:
        if self.kind == "mbtiles":
            row = self._mbtiles().execute(
                "SELECT tile_data FROM tiles WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
                (z, x, (1 << z) - 1 - y),  # MBTiles counts rows from the south (TMS)
            ).fetchone()
            data = row[0] if row else None
        else:
            data = self._pmtiles.get(z, x, y)
            if data is not None and self._gzip:
                data = gzip.decompress(data)
        if not data:
            raise TileMissing(f"the basemap archive has no tile {z}/{x}/{y}")
        return bytes(data)

    async def atile(self, z: int, x: int, y: int) -> bytes:
        return self.tile(z, x, y)  # a local read of a few kilobytes: not worth a thread hop


class ProxyTiles:
    """Tiles fetched from an XYZ template (``{z}``, ``{x}``, ``{y}``), cached in memory.

    Parameters
    ----------
    template : str
        The upstream URL, key included; it is never sent to a browser.
    attribution : str
    minzoom, maxzoom : int
    cache_tiles : int
        How many tiles to keep (a 256 px raster tile is 10 to 50 kB).
    """

    def __init__(self, template: str, attribution: str, minzoom: int, maxzoom: int, cache_tiles: int = 2000):
        if not all(part in template for part in ("{z}", "{x}", "{y}")):
            raise TileSourceError("the basemap URL must hold {z}, {x} and {y}")
        self.template = template
        self.info = TileJSON(minzoom, maxzoom, attribution)
        self._cache: LRUCache = LRUCache(maxsize=cache_tiles)
        self._lock = threading.Lock()
        self._client: httpx.AsyncClient | None = None

    async def atile(self, z: int, x: int, y: int) -> bytes:
        key = (z, x, y)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=PROXY_TIMEOUT_S, headers={"user-agent": "redline-basemap"})
        url = self.template.replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y))
        try:
            response = await self._client.get(url)
        except httpx.HTTPError as exc:
            raise TileSourceError(f"the basemap server could not be reached ({type(exc).__name__})") from None
        if response.status_code in (204, 404):
            raise TileMissing(f"the basemap server has no tile {z}/{x}/{y}")
        if response.status_code != 200:
            # Never echo the upstream URL: it holds the key.
            raise TileSourceError(f"the basemap server answered HTTP {response.status_code}")
        data = response.content
        with self._lock:
            self._cache[key] = data
        return data

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def tile_source(settings) -> ArchiveTiles | ProxyTiles | None:
    """The configured source (an archive wins over a URL), or None when there is no background map."""
    if settings.basemap_archive:
        return ArchiveTiles(settings.basemap_archive, settings.basemap_attribution)
    if settings.basemap_url:
        return ProxyTiles(
            settings.basemap_url,
            settings.basemap_attribution or "",
            settings.basemap_min_zoom,
            settings.basemap_max_zoom,
            settings.basemap_cache_tiles,
        )
    return None
