"""Validation of red-line boundaries, and parsing of uploaded boundary files.

The checks every site gets live in :func:`constraints.site.parse_site` (structure, closed rings, at
least 3 distinct points, numbers that are finite, Great Britain, latitude/longitude swapped, metres
sent as degrees, holes outside their shell, duplicate points removed, winding corrected, and
self-intersections repaired with the location of the crossing and the area change, or refused above
1 %). A red-line boundary adds its own rules on top: it must be an area (no address points), enclose
at least 1 m² and at most ``max_area_ha`` (100 ha by default), have at most 10,000 vertices, and it can
arrive as a file (GeoJSON, KML, GeoPackage, zipped Shapefile, in any CRS) holding one site.

Examples
--------
>>> b = validate_boundary({"type": "Polygon", "coordinates": [[[-0.1, 51.5], [-0.0999, 51.5],
...     [-0.0999, 51.5001], [-0.1, 51.5001], [-0.1, 51.5]]]})
>>> round(b.area_m2)
77
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from zlib import error as zlib_error

import numpy as np
import orjson
import shapely
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from boundary.errors import BoundaryTooLarge, InvalidBoundary
from constraints.site import SiteError, SiteLimits, SiteTooLarge, limit_overlay, load_json, parse_site
from datasets import crs


@dataclass(frozen=True)
class BoundaryLimits:
    """Limits a boundary must respect on top of a site's (``site``: vertices, parts, holes, repair work);
    every one is configurable through settings."""

    min_area_m2: float = 1.0
    max_area_ha: float = 100.0
    max_repair_change: float = 0.01  # fraction of the area a repair may change
    max_upload_bytes: int = 10 * 1024 * 1024
    max_unpacked_bytes: int = 20_000_000  # what a zip may hold once unpacked, by its declared sizes
    max_ratio: float = 100.0  # unpacked / packed size for a zip member over 1 MB
    max_files: int = 20  # members of a zip
    site: SiteLimits = field(default_factory=SiteLimits)


@dataclass
class ValidBoundary:
    """A validated boundary in EPSG:4326 with its measurements and the warnings its repair produced."""

    geometry: BaseGeometry
    area_m2: float
    perimeter_m: float
    centroid: tuple[float, float]
    grid_reference: str | None
    warnings: list[str] = field(default_factory=list)

    @property
    def area_ha(self) -> float:
        return self.area_m2 / 10_000.0

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return tuple(float(v) for v in self.geometry.bounds)

    def geojson(self) -> dict:
        return mapping(self.geometry)

    def summary(self) -> dict:
        """The answer of ``POST /v1/validate``."""
        return {
            "valid": True,
            "area_m2": round(self.area_m2, 2),
            "area_ha": round(self.area_ha, 4),
            "perimeter_m": round(self.perimeter_m, 2),
            "centroid": {"lon": self.centroid[0], "lat": self.centroid[1]},
            "grid_reference": self.grid_reference,
            "vertices": int(shapely.get_num_coordinates(self.geometry)),
            "warnings": list(self.warnings),
            "site": {"type": "Feature", "properties": {}, "geometry": self.geojson()},
        }


# --- entry point ---------------------------------------------------------------------------------------
def validate_boundary(obj, limits: BoundaryLimits | None = None) -> ValidBoundary:
    """Validate and measure a red-line boundary.

    Parameters
    ----------
    obj : dict, str, bytes or shapely geometry
        GeoJSON Polygon, MultiPolygon, Feature, or FeatureCollection of polygons in EPSG:4326.
    limits : BoundaryLimits, optional

    Returns
    -------
    ValidBoundary

    Raises
    ------
    InvalidBoundary
        With a message naming the fault and, where there is one, a JSON pointer to it
        (:class:`BoundaryTooLarge` for size limits).
    """
    limits = limits or BoundaryLimits()
    site_limits = replace(
        limits.site,
        max_bytes=limits.max_upload_bytes,
        min_area_m2=limits.min_area_m2,
        max_area_m2=limits.max_area_ha * 10_000,
        allow_points=False,  # an address point is a check, not a red line
    )
    if isinstance(obj, dict):
        # parse_site reads GeoJSON lists; mappings built in Python (shapely's ``mapping``) hold tuples.
        try:
            obj = orjson.loads(orjson.dumps(obj))
        except TypeError as exc:  # nested past orjson's limit, or an integer past 64 bits
            raise InvalidBoundary(f"the boundary is not GeoJSON a parser can read ({exc})", code="not-geojson") from None
    try:
        site = parse_site(obj, site_limits)
    except SiteError as exc:
        raise _boundary_error(exc) from exc
    return ValidBoundary(
        geometry=site.geometry,
        area_m2=float(site.area_m2),
        perimeter_m=float(site.perimeter_m),
        centroid=(float(site.centroid[0]), float(site.centroid[1])),
        grid_reference=site.grid_reference,
        warnings=list(site.warnings),
    )


# --- uploads -------------------------------------------------------------------------------------------
UPLOAD_KINDS = {
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".kml": "KML",
    ".gpkg": "GeoPackage",
    ".zip": "zipped Shapefile",
}


def _boundary_error(exc: SiteError) -> InvalidBoundary:
    cls = BoundaryTooLarge if isinstance(exc, SiteTooLarge) else InvalidBoundary
    return cls(exc.message, code=exc.code, pointer=exc.pointer)


def _reproject_to_wgs84(frame) -> BaseGeometry:
    """All polygon geometry of a frame in EPSG:4326; OSGB36 grids go through OSTN15."""
    import pyproj

    src = frame.crs
    if src is None:
        raise InvalidBoundary(
            "the file does not say which coordinate reference system it uses (no .prj or CRS); "
            "save it with one, e.g. EPSG:27700 (British National Grid) or EPSG:4326",
            code="no-crs",
        )
    src = pyproj.CRS.from_user_input(src)
    geoms = frame.geometry.values
    if src.equals(pyproj.CRS.from_epsg(27700)) or src.to_epsg() == 27700:
        return crs.to_wgs84(shapely.union_all(np.asarray(geoms)))
    datum = (src.datum.name or "").lower() if src.datum else ""
    if "osgb" in datum:
        # Same datum as the National Grid: pyproj's projection math is exact here; the datum shift
        # to WGS84 must be OSTN15's, not pyproj's Helmert fallback.
        to_grid = pyproj.Transformer.from_crs(src, 27700, always_xy=True)
        grid = shapely.transform(
            shapely.union_all(np.asarray(geoms)),
            lambda c: np.column_stack(to_grid.transform(c[:, 0], c[:, 1])),
        )
        return crs.to_wgs84(grid)
    if src.is_geographic and src.equals(pyproj.CRS.from_epsg(4326), ignore_axis_order=True):
        return shapely.union_all(np.asarray(geoms))
    to_wgs = pyproj.Transformer.from_crs(src, 4326, always_xy=True)
    return shapely.transform(
        shapely.union_all(np.asarray(geoms)), lambda c: np.column_stack(to_wgs.transform(c[:, 0], c[:, 1]))
    )


ZIP_RATIO_FLOOR = 1 << 20  # members smaller than this may compress as well as they like (text, blanks)


def _path_parts(name: str) -> list[str]:
    return name.replace("\\", "/").split("/")


def _unzip_shapefile(path: str, into: str, filename: str, limits: BoundaryLimits) -> str:
    """Extract the one shapefile of a zip into ``into`` and return its ``.shp`` path.

    The archive is judged by its directory before anything is unpacked: the number of members, their
    names (no absolute paths, no ``..``), their declared sizes in total, and each large member's
    compression ratio (a zip bomb declares its true size, or lies about it; ``zipfile`` reads no more
    than the declared size and then fails the CRC, so a lie is caught while extracting).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX")]
            if len(members) > limits.max_files:
                raise InvalidBoundary(
                    f"{filename} holds {len(members)} files; a zipped shapefile holds at most {limits.max_files} "
                    "(.shp, .shx, .dbf, .prj and a few more)",
                    code="zip-refused",
                )
            names = set()
            for m in members:
                parts = _path_parts(m.filename)
                if m.filename.startswith(("/", "\\")) or ".." in parts or "\x00" in m.filename or ":" in parts[0]:
                    raise InvalidBoundary(f"{filename} holds a file named {m.filename!r}, outside the archive", code="zip-refused")
                base = parts[-1]
                if base.lower() in names:
                    raise InvalidBoundary(f"{filename} holds two files named {base!r}", code="zip-refused")
                names.add(base.lower())
            total = sum(m.file_size for m in members)
            if total > limits.max_unpacked_bytes:
                raise BoundaryTooLarge(
                    f"{filename} unpacks to {total / 1e6:.0f} MB; a boundary file may unpack to at most "
                    f"{limits.max_unpacked_bytes / 1e6:.0f} MB (one site needs far less: simplify it)",
                    code="zip-refused",
                )
            for m in members:
                if m.file_size > ZIP_RATIO_FLOOR and m.file_size > limits.max_ratio * max(m.compress_size, 1):
                    raise BoundaryTooLarge(
                        f"{filename}: {m.filename} unpacks to {m.file_size / max(m.compress_size, 1):.0f} times its "
                        f"packed size (at most {limits.max_ratio:g} accepted); this is not an ordinary shapefile",
                        code="zip-refused",
                    )
            shp = [m for m in members if m.filename.lower().endswith(".shp")]
            if len(shp) != 1:
                raise InvalidBoundary(
                    f"{filename} holds {len(shp)} shapefiles; zip exactly one (.shp with its .shx, .dbf, .prj)",
                    code="one-site-per-file",
                )
            os.makedirs(into)
            for m in members:
                target = os.path.join(into, _path_parts(m.filename)[-1])
                with zf.open(m) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 16)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, zlib_error) as exc:
        raise InvalidBoundary(f"{filename} is not a readable zip file ({exc})", code="bad-file") from None
    return os.path.join(into, _path_parts(shp[0].filename)[-1])


def parse_upload(
    filename: str, content: bytes, limits: BoundaryLimits | None = None
) -> tuple[dict, list[str]]:
    """Read one site from an uploaded boundary file.

    GeoJSON, KML, GeoPackage and zipped Shapefile, in any CRS (British National Grid through OSTN15).
    One site per file: every polygon feature of the file's single layer is joined into that site.

    Returns
    -------
    (geojson, warnings)
        A GeoJSON geometry in EPSG:4326 to pass to :func:`validate_boundary`, and notes about the file.
    """
    import pyogrio

    limits = limits or BoundaryLimits()
    if len(content) > limits.max_upload_bytes:
        raise BoundaryTooLarge(
            f"the file is {len(content) / 1e6:.1f} MB; boundary files are limited to "
            f"{limits.max_upload_bytes / 1e6:.0f} MB",
        )
    if not content:
        raise InvalidBoundary("the uploaded file is empty", code="empty")
    suffix = Path(filename or "").suffix.lower()
    if suffix not in UPLOAD_KINDS:
        raise InvalidBoundary(
            f"cannot read {filename!r}: upload a GeoJSON (.geojson), KML (.kml), GeoPackage (.gpkg) or "
            "zipped Shapefile (.zip)",
            code="unsupported-file",
        )
    if suffix in (".geojson", ".json"):
        try:
            data = load_json(content, SiteLimits(max_bytes=None), what=filename)
        except SiteError as exc:
            raise InvalidBoundary(f"{exc.message} (a GeoJSON file is expected)", code="not-json") from None
        # as posted to /v1/boundaries: a "crs" member (EPSG:27700) is read by parse_site, for both alike
        return data, []
    with tempfile.TemporaryDirectory(prefix="redline-upload-") as tmp:
        path = os.path.join(tmp, "upload" + suffix)
        with open(path, "wb") as fh:
            fh.write(content)
        if suffix == ".zip":
            path = _unzip_shapefile(path, os.path.join(tmp, "unzipped"), filename, limits)
        try:
            layers = pyogrio.list_layers(path)
        except Exception as exc:  # GDAL's errors are not a stable hierarchy
            raise InvalidBoundary(
                f"cannot read {filename} as {UPLOAD_KINDS[suffix]}: {exc}", code="bad-file"
            ) from exc
        if len(layers) != 1:
            names = ", ".join(str(name) for name, _ in layers)
            raise InvalidBoundary(
                f"{filename} holds {len(layers)} layers ({names}); upload one site per file",
                code="one-site-per-file",
            )
        try:
            frame = pyogrio.read_dataframe(path, layer=layers[0][0])
        except Exception as exc:
            raise InvalidBoundary(f"cannot read {filename}: {exc}", code="bad-file") from exc
    warnings: list[str] = []
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    kinds = frame.geometry.geom_type
    polygonal = frame[kinds.isin(["Polygon", "MultiPolygon"])]
    if len(polygonal) == 0:
        raise InvalidBoundary(
            f"{filename} holds no polygon: a red-line boundary must be an area", code="not-polygon"
        )
    if len(polygonal) < len(frame):
        warnings.append(
            f"ignored {len(frame) - len(polygonal)} feature(s) that are not areas (points or lines)"
        )
    if len(polygonal) > 1:
        warnings.append(f"{len(polygonal)} polygon features were joined into one site")
        try:  # joining them is overlay work: bounded like any repair, before it starts
            limit_overlay(shapely.MultiPolygon([p for g in polygonal.geometry.values for p in shapely.get_parts(g)]), limits.site, f"{filename}: its features overlap", "join them into one outline")
        except SiteError as exc:
            raise _boundary_error(exc) from exc
    try:
        geometry = _reproject_to_wgs84(polygonal)
    except crs.OutsideGridError as exc:
        raise InvalidBoundary(f"{filename}: {exc}", code="outside-great-britain") from exc
    except InvalidBoundary:
        raise
    except Exception as exc:  # pyproj's CRS and transform errors for exotic or broken .prj files
        raise InvalidBoundary(
            f"{filename}: its coordinate reference system cannot be converted to longitude/latitude ({exc})",
            code="bad-crs",
        ) from exc
    geometry = shapely.force_2d(geometry)
    if not all(math.isfinite(v) for v in geometry.bounds):
        raise InvalidBoundary(f"{filename}: coordinates could not be reprojected", code="bad-crs")
    return mapping(geometry), warnings


def amendment(before: BaseGeometry, after: BaseGeometry) -> dict:
    """The areas an amended boundary adds and removes, as GeoJSON geometry (or None) and geodesic m².

    Only areas count: slivers of zero width along a shared edge are lines and points, and dropped.
    """

    def polygonal(geom):
        parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon") and not g.is_empty]
        return shapely.union_all(parts) if parts else None

    added = polygonal(shapely.difference(after, before))
    removed = polygonal(shapely.difference(before, after))
    return {
        "added": mapping(added) if added is not None else None,
        "removed": mapping(removed) if removed is not None else None,
        "area_added_m2": round(crs.geodesic_area(added), 2) if added is not None else 0.0,
        "area_removed_m2": round(crs.geodesic_area(removed), 2) if removed is not None else 0.0,
    }
