"""Small raster tile archives made by the tests themselves: MBTiles (as QGIS writes it) and PMTiles v3.

Each tile is a 256 px PNG, encoded here with zlib (no imaging library): a pale fill with a darker
grid, and a colour that depends on the tile's column and row, so a test can tell which tile it got.
"""

from __future__ import annotations

import math
import sqlite3
import struct
import zlib
from pathlib import Path

FILL = (236, 226, 200)  # a pale map beige; no constraint overlay uses it
GRID = (150, 140, 120)
ATTRIBUTION = "Test tiles made by redline's test suite"


def tile_png(z: int, x: int, y: int) -> bytes:
    """A 256 px RGB PNG: grid lines every 64 px over a fill tinted by the tile's column and row parity."""
    tint = (FILL[0] - (x % 2) * 6, FILL[1] - (y % 2) * 6, FILL[2])
    grid_row = b"\x00" + bytes(GRID) * 256
    fill_row = b"\x00" + (bytes(GRID) + bytes(tint) * 63) * 4
    rows = b"".join(grid_row if py % 64 == 0 else fill_row for py in range(256))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 256, 256, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


def tiles_for(bbox: tuple[float, float, float, float], zooms: range):
    """Every (z, x, y) of the XYZ grid covering ``bbox`` (west, south, east, north in degrees)."""
    west, south, east, north = bbox
    for z in zooms:
        n = 1 << z

        def col(lon, n=n):
            return int((lon + 180) / 360 * n)

        def row(lat, n=n):
            rad = math.radians(lat)
            return int((1 - math.log(math.tan(rad) + 1 / math.cos(rad)) / math.pi) / 2 * n)

        for x in range(col(west), col(east) + 1):
            for y in range(row(north), row(south) + 1):
                yield z, x, y


def write_mbtiles(path: Path, bbox, zooms: range) -> int:
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
    conn.execute("CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB)")
    meta = {
        "name": "redline test tiles",
        "format": "png",
        "minzoom": str(zooms.start),
        "maxzoom": str(zooms.stop - 1),
        "bounds": ",".join(map(str, bbox)),
        "attribution": ATTRIBUTION,
    }
    conn.executemany("INSERT INTO metadata VALUES (?, ?)", meta.items())
    count = 0
    for z, x, y in tiles_for(bbox, zooms):
        conn.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (z, x, (1 << z) - 1 - y, tile_png(z, x, y)))
        count += 1
    conn.commit()
    conn.close()
    return count


def write_pmtiles(path: Path, bbox, zooms: range) -> int:
    from pmtiles.tile import Compression, TileType, zxy_to_tileid
    from pmtiles.writer import Writer

    tiles = sorted((zxy_to_tileid(z, x, y), tile_png(z, x, y)) for z, x, y in tiles_for(bbox, zooms))
    with open(path, "wb") as f:
        writer = Writer(f)
        for tile_id, data in tiles:
            writer.write_tile(tile_id, data)
        west, south, east, north = bbox
        writer.finalize(
            {
                "tile_type": TileType.PNG,
                "tile_compression": Compression.NONE,
                "min_zoom": zooms.start,
                "max_zoom": zooms.stop - 1,
                "min_lon_e7": int(west * 1e7),
                "min_lat_e7": int(south * 1e7),
                "max_lon_e7": int(east * 1e7),
                "max_lat_e7": int(north * 1e7),
                "center_zoom": zooms.start,
                "center_lon_e7": int((west + east) / 2 * 1e7),
                "center_lat_e7": int((south + north) / 2 * 1e7),
            },
            {"attribution": ATTRIBUTION},
        )
    return len(tiles)
