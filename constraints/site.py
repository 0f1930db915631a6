"""Reading a site: GeoJSON in, a valid shapely geometry on both grids out, or an error a person can act on.

Accepts a Polygon, MultiPolygon, Feature, or FeatureCollection of polygons (EPSG:4326 lon/lat,
RFC 7946), or a Point for an address-only check. Every refusal is a ``SiteError`` whose message says
what is wrong and where (a JSON pointer into the input), because the person reading it drew the shape.

Examples
--------
>>> site = parse_site({"type": "Point", "coordinates": [-0.1151501, 51.4745098]})
>>> site.grid_reference
'TQ 30999 76744'
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np
import orjson
import shapely
from shapely.geometry.base import BaseGeometry

from datasets.crs import (
    GB_EASTING,
    GB_LAT,
    GB_LON,
    GB_NORTHING,
    RING_CLOCKWISE,
    RING_HAND_BACK,
    RING_UNSURE,
    OutsideGridError,
    geodesic_area_perimeter,
    grid_reference,
    read_site_ring,
    read_site_rings,
    ring_area_perimeter,
    rings_area_perimeter,
    to_bng,
    to_wgs84,
)

from .crossings import count_crossings

POLYGONAL = ("Polygon", "MultiPolygon")
MAX_REPAIR_AREA_CHANGE = 0.01  # a repair that moves the area by more than 1 % changes what was drawn
# Counting crossings compares edges whose boxes overlap: a few per edge for any drawn shape, one per
# pair of edges only for long strokes side by side. Past this many the count itself would be slow.
MAX_REPAIR_EDGE_PAIRS = 250_000


class SiteError(ValueError):
    """A site cannot be checked; ``message`` says why, ``code`` what kind, ``pointer`` where (JSON pointer)."""

    def __init__(self, message: str, *, code: str = "invalid-site", pointer: str | None = None, limit: dict | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.pointer = pointer
        self.limit = limit  # {"name": ..., "value": ...}: the SiteLimits field that refused the site


class SiteTooLarge(SiteError):
    """The site is over a size limit (bytes, vertices, features): the caller must send less."""


@dataclass(frozen=True)
class SiteLimits:
    """What a caller accepts, and how much geometry work a site may cost. ``None`` turns a limit off.

    Every path that reads a site (the check, boundaries, validate, the widget, uploads, batch) goes
    through :func:`parse_site` with one of these, and the work limits are enforced there before any
    work that could grow with them starts: repairing a polygon that crosses itself (GEOS's
    ``make_valid``) or merging overlapping features takes time that grows far faster than the
    crossings, so the crossings are counted first (``constraints.crossings``) and a site past a
    limit is refused with a 422 that names it.
    """

    max_bytes: int | None = 20_000_000
    max_vertices: int | None = 10_000
    max_features: int | None = 100
    max_parts: int | None = 100  # separate polygons in one site
    max_holes: int | None = 100  # holes in all its polygons together
    max_repair_vertices: int | None = 5_000  # vertices of a site that crosses itself, for a repair to be tried
    max_self_intersections: int | None = 50  # points where its edges cross, for a repair to be tried
    min_area_m2: float | None = None
    max_area_m2: float | None = None
    allow_points: bool = True
    max_part_gap_m: float | None = 5_000.0  # parts further apart than this are not one site


@dataclass
class Site:
    geometry: BaseGeometry  # EPSG:4326, 2D, valid
    area_m2: float
    perimeter_m: float
    centroid: tuple[float, float]
    grid_reference: str
    vertices: int
    warnings: list[str] = field(default_factory=list)
    properties: dict = field(default_factory=dict)
    # the exterior of a site of one ring and no holes, float64 (n, 2), C-contiguous: ``bng``'s very
    # coordinates, which the parse computed anyway and the matching kernels take as they are (asking
    # shapely for them again costs microseconds per check); None for any other site
    bng_ring: np.ndarray | None = field(default=None, repr=False, compare=False)
    # ``bng`` when the parse made it; a site of one ring may leave it to be made from ``bng_ring``
    # when first asked for, since a check its ring is matched in one compiled call never asks
    made_bng: BaseGeometry | None = field(default=None, repr=False, compare=False)

    @property
    def bng(self) -> BaseGeometry:
        """The site on the National Grid (EPSG:27700 through OSTN15)."""
        if self.made_bng is None:
            self.made_bng = _ring_polygon(self.bng_ring)
        return self.made_bng

    @property
    def area_ha(self) -> float:
        return self.area_m2 / 10_000

    @property
    def is_point(self) -> bool:
        return self.geometry.geom_type == "Point"

    @property
    def reported_area_m2(self) -> float:
        """The area as answers report it (``summary``'s ``area_m2``; a batch's rows ask for it alone)."""
        return round(self.area_m2, 2)

    def summary(self) -> dict:
        return {
            "area_m2": self.reported_area_m2,
            "area_ha": round(self.area_ha, 6),
            "perimeter_m": round(self.perimeter_m, 2),
            "centroid": {"lon": round(self.centroid[0], 7), "lat": round(self.centroid[1], 7)},
            "grid_reference": self.grid_reference,
            "vertices": self.vertices,
            "warnings": list(self.warnings),
        }


def _reject_constant(name: str):
    raise SiteError(
        f"the coordinates contain {name}, which is not a number; every coordinate must be a finite longitude or latitude",
        code="not-finite",
    )


MAX_JSON_DEPTH = 1024  # orjson's own limit: it refuses deeper nesting before going any deeper
MAX_INT_DIGITS = 20  # no coordinate, id or count needs more; Python's own parser would take thousands


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise SiteError(f"a number with {len(text)} digits is too large: numbers here are coordinates, ids and counts", code="number-too-large")
    return int(text)


def load_json(data: bytes | str, limits: SiteLimits = SiteLimits(), what: str = "the site") -> object:
    """Parse JSON text with the errors a person needs (size, not JSON, NaN, too deep, too large a number).

    The one JSON reader for requests and uploads. orjson refuses nesting deeper than
    ``MAX_JSON_DEPTH`` and numbers beyond a double before it builds anything deep or huge; the standard
    library only runs on text orjson refused, to say where and why (NaN, Infinity), with its integers
    bounded and its recursion caught, so no input can make it raise anything but a ``SiteError``.
    """
    size = len(data)
    if limits.max_bytes is not None and size > limits.max_bytes:
        raise SiteTooLarge(
            f"{what} is {size / 1e6:.1f} MB, more than the {limits.max_bytes / 1e6:.0f} MB accepted; "
            "a planning site boundary needs far fewer vertices: simplify it",
            code="too-large",
        )
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:
        reason = str(err)
    if reason.startswith("depth limit exceeded"):
        raise SiteError(f"{what} is JSON nested more than {MAX_JSON_DEPTH} levels deep; GeoJSON needs fewer than ten", code="too-deep")
    if "infinity when parsed as double" in reason:
        raise SiteError(f"{what} holds a number too large for a coordinate ({reason})", code="number-too-large")
    try:  # the standard library tells NaN and Infinity apart from other faults
        json.loads(data, parse_constant=_reject_constant, parse_int=_bounded_int)
    except SiteError:
        raise
    except RecursionError:
        raise SiteError(f"{what} is JSON nested too deeply to read; GeoJSON needs fewer than ten levels", code="too-deep") from None
    except (ValueError, TypeError):  # JSONDecodeError and UnicodeDecodeError among them
        pass
    raise SiteError(f"{what} is not valid JSON: {reason}", code="not-json")


def _preview(value, width: int) -> str:
    """The start of ``value`` as JSON for a message, however deep or large it is."""
    try:
        return orjson.dumps(value)[:width].decode("utf-8", "replace")
    except TypeError:  # nested past orjson's limit, or an integer past 64 bits
        return "a value that is not a number" if not isinstance(value, list) else "a deeply nested list"


def declared_crs(obj: dict) -> int | None:
    """The EPSG code a GeoJSON object's pre-RFC 7946 ``crs`` member names: 27700, 4326, or None.

    QGIS, FME and many council systems still write one (``{"type": "name", "properties": {"name":
    "urn:ogc:def:crs:EPSG::27700"}}``, or the 2008 ``{"type": "EPSG", "properties": {"code": 27700}}``).

    Raises
    ------
    SiteError
        When the member names another coordinate system, or cannot be read.
    """
    member = obj.get("crs")
    if member is None:
        return None
    properties = member.get("properties") if isinstance(member, dict) else None
    if not isinstance(properties, dict):
        raise SiteError('the "crs" member must be {"type": "name", "properties": {"name": "EPSG:27700"}}', code="unsupported-crs", pointer="/crs")
    name = properties.get("name") or (f"EPSG:{properties['code']}" if "code" in properties else None)
    code = None
    if isinstance(name, str | int) and not isinstance(name, bool):
        from pyproj import CRS

        try:
            named = CRS.from_user_input(str(name))
        except Exception:  # CRSError, and whatever PROJ makes of a NUL or a name a megabyte long
            named = None
        if named is not None and named.equals(CRS.from_epsg(27700)):
            code = 27700
        elif named is not None and named.equals(CRS.from_epsg(4326), ignore_axis_order=True):
            code = 4326
    if code is None:
        raise SiteError(
            f'the "crs" member names {json.dumps(name)[:80]}; redline reads longitude and latitude (EPSG:4326, '
            "as RFC 7946 GeoJSON) or British National Grid (EPSG:27700): convert the site to one of them",
            code="unsupported-crs",
            pointer="/crs",
        )
    return code


def _is_position(value) -> bool:
    return (
        isinstance(value, list | tuple)
        and 2 <= len(value) <= 3
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def _without_declared_crs(obj: dict) -> dict:
    """``obj`` in longitude and latitude, its ``crs`` member read and dropped.

    The one place redline honours the member: checks (CLI, ``POST /v1/check``), boundaries, their
    validation and uploaded GeoJSON all come through ``parse_site``, so a site drawn on the National
    Grid is read the same way by each (through OSTN15, as every layer is). Positions that are not
    pairs of finite numbers are left as they are, for the usual checks to name.
    """
    code = declared_crs(obj)
    obj = {k: v for k, v in obj.items() if k != "crs"}
    if code != 27700:
        return obj
    positions: list = []

    def walk(node, rebuild):
        if isinstance(node, dict):
            out = dict(node) if rebuild is not None else None
            for key in ("coordinates", "geometry", "geometries", "features"):
                if key in node:
                    value = walk(node[key], rebuild)
                    if out is not None:
                        out[key] = value
            return out
        if _is_position(node):
            if rebuild is None:
                positions.append(node)
                return None
            return next(rebuild)
        if isinstance(node, list | tuple):
            values = [walk(item, rebuild) for item in node]
            return values if rebuild is not None else None
        return node

    walk(obj, None)
    if not positions:
        return obj
    from datasets.crs import bng_to_lonlat

    east = np.array([p[0] for p in positions], dtype=np.float64)
    north = np.array([p[1] for p in positions], dtype=np.float64)
    lon, lat = bng_to_lonlat(east, north)
    off = ~(np.isfinite(lon) & np.isfinite(lat))
    if off.any():
        first = positions[int(np.flatnonzero(off)[0])]
        raise SiteError(
            f"the point [{first[0]}, {first[1]}] lies outside the British National Grid (OSTN15), which the "
            '"crs" member (EPSG:27700) says the coordinates are on: is the crs member right?',
            code="outside-great-britain",
            pointer="/crs",
        )
    converted = iter([[x, y, *p[2:]] for x, y, p in zip(lon.tolist(), lat.tolist(), positions, strict=True)])
    return walk(obj, converted)


def _position_error(message: str, pointer: str, code: str = "invalid-coordinates") -> SiteError:
    return SiteError(message, code=code, pointer=pointer)


def _positions_fast(coords) -> np.ndarray | None:
    """The common case at numpy speed: a list of [lon, lat] numbers. None when it needs a closer look.

    numpy turns ``true`` into 1.0 and ``false`` into 0.0 beside floats, so an array holding an exact 0
    or 1 is sent the slow way, which names a boolean for what it is (neither is a longitude or latitude
    in England, so real sites almost never take that way).
    """
    try:
        points = np.array(coords)
    except (ValueError, TypeError, OverflowError):
        return None
    if points.ndim != 2 or points.shape[1] != 2 or points.dtype.kind not in "fi":
        return None
    if points.dtype.kind == "i":
        points = points.astype(np.float64)
    if not np.isfinite(points).all() or ((points == 0) | (points == 1)).any():
        return None
    return points


def _check_positions(coords, pointer: str, warnings: list[str]) -> np.ndarray:
    if isinstance(coords, list) and coords:
        points = _positions_fast(coords)
        if points is not None:
            return points
    if not isinstance(coords, list | tuple) or not coords:
        raise _position_error("expected a list of [longitude, latitude] positions", pointer)
    dims = set()
    for i, position in enumerate(coords):
        if not isinstance(position, list | tuple) or len(position) < 2 or len(position) > 3:
            raise _position_error(
                f"position {i} must be [longitude, latitude] (optionally with a height), got {_preview(position, 60)}",
                f"{pointer}/{i}",
            )
        for value in position:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _position_error(f"position {i} holds {_preview(value, 40)}, not a number", f"{pointer}/{i}")
            try:
                finite = math.isfinite(value)
            except OverflowError:  # an integer beyond any float
                raise SiteError(f"position {i} holds a number too large to be a coordinate", code="number-too-large", pointer=f"{pointer}/{i}") from None
            if not finite:
                raise SiteError(
                    f"position {i} holds {value}, not a finite number", code="not-finite", pointer=f"{pointer}/{i}"
                )
        dims.add(len(position))
    if 3 in dims and "heights (Z) were ignored: the check is two-dimensional" not in warnings:
        warnings.append("heights (Z) were ignored: the check is two-dimensional")
    return np.array([p[:2] for p in coords], dtype=np.float64)


def _three_distinct(ring: np.ndarray) -> bool:
    """True when the first three points differ (cheap); False means: count them properly."""
    if len(ring) < 3:
        return False
    a, b, c = ring[0].tolist(), ring[1].tolist(), ring[2].tolist()
    return a != b and b != c and a != c


def _check_ring(coords, pointer: str, warnings: list[str]) -> np.ndarray:
    ring = _check_positions(coords, pointer, warnings)
    if not _three_distinct(ring) and len(np.unique(ring, axis=0)) < 3:
        raise SiteError(
            "a ring needs at least 3 distinct points to enclose an area", code="too-few-points", pointer=pointer
        )
    if not np.array_equal(ring[0], ring[-1]):
        raise SiteError(
            f"the ring is not closed: it starts at {ring[0].tolist()} but ends at {ring[-1].tolist()}; "
            "GeoJSON rings repeat the first point as the last",
            code="ring-not-closed",
            pointer=pointer,
        )
    return ring


def _check_range(points: np.ndarray, pointer: str) -> None:
    """Lon/lat in range and in Great Britain, with the two commonest mistakes named."""
    x, y = points[:, 0], points[:, 1]
    if (np.abs(x) > 180).any() or (np.abs(y) > 90).any():
        if ((x >= GB_EASTING[0]) & (x <= GB_EASTING[1]) & (y >= GB_NORTHING[0]) & (y <= GB_NORTHING[1])).all():
            raise SiteError(
                "the coordinates look like British National Grid eastings and northings in metres; "
                "GeoJSON must be longitude and latitude in degrees (EPSG:4326): convert them first",
                code="projected-coordinates",
                pointer=pointer,
            )
        raise SiteError(
            "coordinates must be longitude (-180 to 180) and latitude (-90 to 90) in degrees",
            code="out-of-range",
            pointer=pointer,
        )
    in_gb = (x >= GB_LON[0]) & (x <= GB_LON[1]) & (y >= GB_LAT[0]) & (y <= GB_LAT[1])
    if in_gb.all():
        return
    swapped = (y >= GB_LON[0]) & (y <= GB_LON[1]) & (x >= GB_LAT[0]) & (x <= GB_LAT[1])
    if swapped.all():
        raise SiteError(
            "latitude and longitude are swapped: GeoJSON puts longitude first, as [longitude, latitude] "
            f"(e.g. [{y[0]:.5f}, {x[0]:.5f}], not [{x[0]:.5f}, {y[0]:.5f}])",
            code="swapped-coordinates",
            pointer=pointer,
        )
    first = points[~in_gb][0]
    raise SiteError(
        f"the point [{first[0]:.5f}, {first[1]:.5f}] is outside Great Britain; "
        "redline checks sites in England (longitude, latitude in WGS84)",
        code="outside-great-britain",
        pointer=pointer,
    )


def _polygon(coords, pointer: str, warnings: list[str]) -> shapely.Polygon:
    if not isinstance(coords, list | tuple):
        raise _position_error("a Polygon's coordinates are a list of rings", pointer)
    if not coords:
        raise SiteError("the polygon is empty: it has no rings", code="empty", pointer=pointer)
    rings = [_check_ring(ring, f"{pointer}/{i}", warnings) for i, ring in enumerate(coords)]
    for i, ring in enumerate(rings):
        _check_range(ring, f"{pointer}/{i}")
    return shapely.Polygon(rings[0], rings[1:])


def geometry_from_geojson(obj, warnings: list[str], limits: SiteLimits = SiteLimits(), pointer: str = "") -> BaseGeometry:
    """Build a shapely geometry from a GeoJSON object, validating structure and coordinates."""
    if not isinstance(obj, dict):
        raise SiteError("expected a GeoJSON object (a geometry, Feature or FeatureCollection)", code="not-geojson", pointer=pointer or "/")
    kind = obj.get("type")
    if kind == "Feature":
        geometry = obj.get("geometry")
        if geometry is None:
            raise SiteError("the Feature has no geometry", code="empty", pointer=f"{pointer}/geometry")
        if isinstance(geometry, dict) and geometry.get("type") in ("Feature", "FeatureCollection"):
            # RFC 7946: a Feature's geometry is a geometry; refusing here also bounds the recursion
            raise SiteError(f"a Feature's geometry must be a Polygon, MultiPolygon or Point, not a {geometry['type']}", code="not-geojson", pointer=f"{pointer}/geometry/type")
        return geometry_from_geojson(geometry, warnings, limits, f"{pointer}/geometry")
    if kind == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list | tuple) or not features:
            raise SiteError("the FeatureCollection has no features", code="empty", pointer=f"{pointer}/features")
        if limits.max_features is not None and len(features) > limits.max_features:
            raise SiteTooLarge(
                f"the FeatureCollection has {len(features)} features; at most {limits.max_features} make one site",
                code="too-many-geometries",
                pointer=f"{pointer}/features",
            )
        for i, f in enumerate(features):
            if isinstance(f, dict) and f.get("type") == "FeatureCollection":
                raise SiteError("a FeatureCollection cannot hold another FeatureCollection", code="not-geojson", pointer=f"{pointer}/features/{i}/type")
        parts = [geometry_from_geojson(f, warnings, limits, f"{pointer}/features/{i}") for i, f in enumerate(features)]
        if any(p.geom_type not in POLYGONAL for p in parts):
            raise SiteError(
                "a FeatureCollection site must hold polygons only", code="unsupported-geometry", pointer=f"{pointer}/features"
            )
        polygons = [g for p in parts for g in shapely.get_parts(p)]
        if len(polygons) == 1:
            return polygons[0]
        site = shapely.MultiPolygon(polygons)
        _size_limits(site, limits)
        if not site.is_valid and all(shapely.is_valid(polygons)):
            # several parcels that overlap or share edges make one site: merge them, and say so
            limit_overlay(site, limits, "the features overlap", "draw them as one outline", f"{pointer}/features")
            site = shapely.union_all(polygons)
            warnings.append(f"the {len(features)} features overlap or touch, so they were merged into one site")
        return site
    coords = obj.get("coordinates")
    if kind == "Polygon":
        return _polygon(coords, f"{pointer}/coordinates", warnings)
    if kind == "MultiPolygon":
        if not isinstance(coords, list | tuple) or not coords:
            raise SiteError("the MultiPolygon is empty", code="empty", pointer=f"{pointer}/coordinates")
        polygons = [_polygon(p, f"{pointer}/coordinates/{i}", warnings) for i, p in enumerate(coords)]
        return shapely.MultiPolygon(polygons)
    if kind == "Point":
        if not limits.allow_points:
            raise SiteError("a site boundary must be a Polygon or MultiPolygon, not a Point", code="unsupported-geometry", pointer=f"{pointer}/type")
        if coords == []:
            raise SiteError("the Point is empty", code="empty", pointer=f"{pointer}/coordinates")
        points = _check_positions([coords], f"{pointer}/coordinates", warnings)
        _check_range(points, f"{pointer}/coordinates")
        return shapely.Point(points[0])
    if kind in ("LineString", "MultiLineString"):
        raise SiteError(
            f"a {kind} is a line, not a site: draw the boundary as a closed Polygon",
            code="unsupported-geometry",
            pointer=f"{pointer}/type",
        )
    if kind in ("MultiPoint", "GeometryCollection"):
        raise SiteError(
            f"a {kind} is not accepted: send one Polygon or MultiPolygon (or a Point for an address)",
            code="unsupported-geometry",
            pointer=f"{pointer}/type",
        )
    raise SiteError(
        f"unknown GeoJSON type {kind!r}; expected Polygon, MultiPolygon, Feature or FeatureCollection",
        code="not-geojson",
        pointer=f"{pointer}/type",
    )


def _polygonal(geom: BaseGeometry) -> BaseGeometry | None:
    polys = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon"]
    polys += [q for p in shapely.get_parts(geom) if p.geom_type == "MultiPolygon" for q in shapely.get_parts(p)]
    if geom.geom_type == "GeometryCollection":
        polys = [q for p in shapely.get_parts(geom) if p.geom_type in POLYGONAL for q in shapely.get_parts(p)]
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)


def _shoelace_area(geom: BaseGeometry) -> float:
    """Area as drawn, ring by ring, even when the rings cross (where GEOS's area means little)."""
    total = 0.0
    for polygon in shapely.get_parts(geom):
        rings = [polygon.exterior, *polygon.interiors]
        for i, ring in enumerate(rings):
            xy = np.asarray(ring.coords)
            area = 0.5 * abs(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1]))
            total += area if i == 0 else -area
    return total


def repair(geometry_bng: BaseGeometry, warnings: list[str], pointer: str = "", limits: SiteLimits = SiteLimits()) -> BaseGeometry:
    """Repair an invalid polygon on the grid, refusing a repair past the work limits or one that
    changes the area by more than 1 %."""
    if geometry_bng.is_valid:
        return geometry_bng
    reason = shapely.is_valid_reason(geometry_bng)
    where = ""
    if "[" in reason:
        try:
            x, y = (float(v) for v in reason[reason.index("[") + 1 : reason.index("]")].split())
            from datasets.crs import bng_to_lonlat

            lon, lat = bng_to_lonlat([x], [y])
            where = f" at [{lon[0]:.6f}, {lat[0]:.6f}]"
        except ValueError:
            where = ""
    problem = reason.split("[")[0].strip()
    if problem.lower().startswith("hole lies outside shell") or problem.lower().startswith("nested shells"):
        raise SiteError(
            f"the polygon is invalid: {problem.lower()}{where}; a hole must lie inside its outer ring",
            code="hole-outside-shell",
            pointer=pointer or None,
        )
    _repair_limits(geometry_bng, limits, f"the boundary crosses itself{where}", pointer or None)
    fixed = _polygonal(shapely.make_valid(geometry_bng))
    drawn = _shoelace_area(geometry_bng)
    if fixed is None or fixed.is_empty:
        raise SiteError(f"the polygon is invalid ({problem.lower()}{where}) and has no area once repaired", code="self-intersection", pointer=pointer or None)
    change = abs(fixed.area - drawn) / drawn if drawn > 0 else math.inf
    if change > MAX_REPAIR_AREA_CHANGE:
        raise SiteError(
            f"the boundary crosses itself{where} ({problem.lower()}); repairing it would change the area by "
            f"{'more than 100' if change > 1 else f'{change * 100:.1f}'} %, so it was not repaired: redraw it so no edges cross",
            code="self-intersection",
            pointer=pointer or None,
        )
    warnings.append(
        f"the boundary was repaired ({problem.lower()}{where}); the area changed by {abs(fixed.area - drawn):.2f} m² ({change * 100:.3f} %)"
    )
    return fixed


def _from_shapely(geom: BaseGeometry, warnings: list[str], limits: SiteLimits) -> BaseGeometry:
    """Check a shapely geometry as strictly as GeoJSON input, without a round trip through JSON."""
    if geom.is_empty:
        raise SiteError("the geometry is empty", code="empty")
    kind = geom.geom_type
    if kind == "Point" and not limits.allow_points:
        raise SiteError("a site boundary must be a Polygon or MultiPolygon, not a Point", code="unsupported-geometry")
    if kind not in (*POLYGONAL, "Point"):
        return geometry_from_geojson(shapely.geometry.mapping(geom), warnings, limits)
    if shapely.has_z(geom):
        warnings.append("heights (Z) were ignored: the check is two-dimensional")
        geom = shapely.force_2d(geom)
    xmin, ymin, xmax, ymax = shapely.bounds(geom)
    if not (GB_LON[0] <= xmin and xmax <= GB_LON[1] and GB_LAT[0] <= ymin and ymax <= GB_LAT[1]):
        coords = shapely.get_coordinates(geom)  # NaN, or out of range: find which, and say so
        if not np.isfinite(coords).all():
            raise SiteError("the coordinates hold a value that is not a finite number", code="not-finite")
        _check_range(coords, "/coordinates")
    if kind != "Point" and geom.area == 0:  # only a degenerate ring has no area: find it and say which
        for polygon in shapely.get_parts(geom):
            for ring in (polygon.exterior, *polygon.interiors):
                if len(np.unique(np.asarray(ring.coords), axis=0)) < 3:
                    raise SiteError("a ring needs at least 3 distinct points to enclose an area", code="too-few-points")
    return geom


def _check_area(area: float, limits: SiteLimits) -> None:
    if area <= 0:
        raise SiteError("the polygon has no area", code="empty")
    if limits.min_area_m2 is not None and area < limits.min_area_m2:
        raise SiteError(
            f"the site is {area:.2f} m², smaller than the {limits.min_area_m2:g} m² minimum: is it drawn at the right scale?",
            code="too-small",
        )
    if limits.max_area_m2 is not None and area > limits.max_area_m2:
        raise SiteError(
            f"the site is {area / 10_000:.2f} ha, more than the {limits.max_area_m2 / 10_000:g} ha maximum",
            code="too-big",
        )


def _vertex_limit(vertices: int, limits: SiteLimits) -> None:
    if limits.max_vertices is not None and vertices > limits.max_vertices:
        raise SiteTooLarge(
            f"the site has {vertices} vertices; at most {limits.max_vertices} are accepted: simplify the boundary",
            code="too-many-vertices",
        )


def _limit(name: str, value) -> dict:
    return {"name": name, "value": value}


def _size_limits(geometry: BaseGeometry, limits: SiteLimits) -> None:
    """Refuse a site with more separate polygons or holes than any work on it should face."""
    if geometry.geom_type not in POLYGONAL:
        return
    polygons = shapely.get_parts(geometry)
    if limits.max_parts is not None and len(polygons) > limits.max_parts:
        raise SiteError(
            f"the site is {len(polygons)} separate polygons; at most {limits.max_parts} are accepted in one site "
            "(limit max_parts): draw one outline around parcels that touch, or check the parts as separate sites",
            code="too-many-parts",
            limit=_limit("max_parts", limits.max_parts),
        )
    holes = int(shapely.get_num_interior_rings(polygons).sum())
    if limits.max_holes is not None and holes > limits.max_holes:
        raise SiteError(
            f"the site has {holes} holes; at most {limits.max_holes} are accepted (limit max_holes): "
            "leave out holes that are not part of the application (a courtyard need not be cut out), or simplify the boundary",
            code="too-many-holes",
            limit=_limit("max_holes", limits.max_holes),
        )


def limit_overlay(geometry: BaseGeometry, limits: SiteLimits, problem: str, advice: str = "redraw the boundary so no edges cross", pointer: str | None = None) -> None:
    """Refuse overlay work (a repair, a union of overlapping parts, a difference of two boundaries)
    on ``geometry``'s polygons when it could take unbounded time: too many vertices, parts or holes,
    or too many points where their edges cross. ``problem`` and ``advice`` complete the message."""
    _vertex_limit(int(shapely.get_num_coordinates(geometry)), limits)
    _size_limits(geometry, limits)
    _repair_limits(geometry, limits, problem, pointer, advice)


def _repair_limits(geometry: BaseGeometry, limits: SiteLimits, problem: str, pointer: str | None, advice: str = "redraw the boundary so no edges cross") -> None:
    """Refuse to repair (or merge) a site whose repair would take unbounded time; ``problem`` says what is wrong."""

    def refuse(why: str, code: str, name: str, value: int, *, or_simplify: bool = True) -> SiteError:
        then = f"{advice}, or simplify it" if or_simplify else advice
        return SiteError(f"{problem}{why} (limit {name}): {then}", code=code, pointer=pointer, limit=_limit(name, value))

    vertices = int(shapely.get_num_coordinates(geometry))
    if limits.max_repair_vertices is not None and vertices > limits.max_repair_vertices:
        raise refuse(
            f", and at {vertices} vertices it is too large to work through: redline repairs and compares sites of at most "
            f"{limits.max_repair_vertices} vertices",
            "too-large-to-repair", "max_repair_vertices", limits.max_repair_vertices,
        )
    if limits.max_self_intersections is None:
        return
    crossings = count_crossings(geometry, stop_after=limits.max_self_intersections, max_pairs=MAX_REPAIR_EDGE_PAIRS)
    if crossings is None:
        raise refuse(
            f", and so many of its edges run side by side that working through the crossings is refused "
            f"(more than {MAX_REPAIR_EDGE_PAIRS:,} pairs of neighbouring edges)",
            "too-large-to-repair", "max_repair_edge_pairs", MAX_REPAIR_EDGE_PAIRS,
        )
    if crossings > limits.max_self_intersections:
        raise refuse(
            f": edges cross at least {crossings} times, and redline works through at most {limits.max_self_intersections} crossings",
            "too-many-self-intersections", "max_self_intersections", limits.max_self_intersections, or_simplify=False,
        )


def _parts_together(bng: BaseGeometry, limits: SiteLimits) -> None:
    """Refuse a site whose parts fall into groups further apart than ``max_part_gap_m``.

    Parts within the gap of one another (directly or through other parts) are one site, such as the
    parcels of one farm; two groups further apart are two sites drawn as one, whose merged answer
    would say one place has another's constraints. Refused rather than split, so each is checked,
    and named, by the one who drew it.
    """
    gap = limits.max_part_gap_m
    parts = shapely.get_parts(bng)
    if gap is None or len(parts) < 2:
        return
    xmin, ymin, xmax, ymax = shapely.bounds(bng).tolist()
    if math.hypot(xmax - xmin, ymax - ymin) < gap - 1e-6:
        return  # no two points of the site lie a gap apart (a micrometre to spare for rounding)
    left, right = shapely.STRtree(parts).query(parts, predicate="dwithin", distance=gap)
    group = np.arange(len(parts))
    changed = True
    while changed:  # label propagation: every part takes the smallest label of the parts it reaches
        smallest = group.copy()
        np.minimum.at(smallest, left, group[right])
        changed = bool((smallest != group).any())
        group = smallest
    first = group == group[0]
    if first.all():
        return
    apart = shapely.distance(shapely.union_all(parts[first]), shapely.union_all(parts[~first]))
    raise SiteError(
        f"the site's parts lie {apart / 1000:.1f} km apart, more than the {gap / 1000:g} km one site may span "
        "(limit max_part_gap_m): they look like separate sites, so check each on its own",
        code="parts-too-far-apart",
        limit=_limit("max_part_gap_m", gap),
    )


def _ring_turn(xy: np.ndarray) -> float:
    """Twice the signed area of a closed ring (shoelace): positive anticlockwise."""
    x, y = xy[:, 0], xy[:, 1]
    return float(x[:-1] @ y[1:] - x[1:] @ y[:-1])


_WKB_POLYGON = struct.pack("<BII", 1, 3, 1)  # little-endian WKB: a polygon of one ring
# shapely's scalar form of its ufunc (what its geometry properties call): a tenth of the ufunc's cost
# on one geometry
_interior_rings = getattr(shapely.lib, "get_num_interior_rings_scalar", shapely.get_num_interior_rings)


def _ring_polygon(ring: np.ndarray) -> shapely.Polygon:
    """The polygon of one closed ring given as (n, 2) doubles: the very geometry ``shapely.polygons``
    makes, for a third of its cost (no argument checking, no array of one)."""
    return shapely.from_wkb(_WKB_POLYGON + struct.pack("<I", len(ring)) + ring.astype("<f8", copy=False).tobytes())


def _polygons_of(xy: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Polygons of one closed ring each, ring ``k`` being ``xy[offsets[k]:offsets[k + 1]]``: what
    ``shapely.polygons(shapely.linearrings(...))`` makes, in one call costing a fifth as much."""
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy, (offsets, np.arange(len(offsets), dtype=np.int64)))


def _simple_polygon(obj: dict | shapely.Polygon, limits: SiteLimits) -> Site | None:
    """The commonest site, one ring with no holes, read with a handful of calls.

    It answers exactly as the general path does (same coordinates, orientation, area, centroid and
    warnings), and hands anything else back (None): holes, several polygons, heights, repeated points,
    a ring that crosses itself, a bad position, or a point outside Great Britain, so every refusal and
    repair keeps its one, careful implementation. Past the projection, what the ring is (closed, its
    points distinct, which way it turns, valid, its centroids) is read in one compiled pass
    (``datasets.ring_compiled``), which also rewinds it; only a ring it cannot prove simple is put
    to GEOS. A shapely polygon kept as drawn is the site's geometry itself.
    """
    properties: dict = {}
    from_json = not isinstance(obj, shapely.Polygon)
    if not from_json:
        # a shapely polygon (the batch's and the benchmarks' input) takes the same way as its GeoJSON;
        # an empty one has no coordinates, so it is handed back below
        if _interior_rings(obj) or obj.has_z:
            return None
        lonlat = shapely.get_coordinates(obj)
        if len(lonlat) < 4:
            return None
    else:
        if obj.get("type") == "Feature":
            properties = obj.get("properties") or {}
            obj = obj.get("geometry")
            if not isinstance(obj, dict):
                return None
        if obj.get("type") != "Polygon":
            return None
        rings = obj.get("coordinates")
        if not isinstance(rings, list) or len(rings) != 1 or not isinstance(rings[0], list) or len(rings[0]) < 4:
            return None
        # the positions as numpy reads them; what it cannot read as numbers goes the careful way, and
        # what it reads wrongly (a NaN or infinity comes out off the grid, a boolean as 0 or 1) is
        # handed back below
        try:
            lonlat = np.array(rings[0])
        except (ValueError, TypeError, OverflowError):
            return None
        if lonlat.ndim != 2 or lonlat.shape[1] != 2 or lonlat.dtype != np.float64:
            return None
    vertices = len(lonlat)
    if limits.max_vertices is not None and vertices > limits.max_vertices:
        return None  # the general path says so, after whatever it finds wrong first
    # OSTN15's cover lies within Great Britain's box (GB_LON, GB_LAT; a test holds it there), so a
    # point outside the box, or a NaN, comes out off the grid: such a site is handed back here
    ring, grid, centroids, rows = read_site_ring(lonlat, from_json)  # lonlat and grid as kept
    if ring == RING_HAND_BACK:
        return None  # off the grid, not closed, repeated points, turning no clear way: the general path says which
    bng = None  # made when first asked for, unless GEOS must say whether the ring is valid
    if ring & RING_UNSURE:
        bng = _ring_polygon(grid)
        if not bng.is_valid:
            return None
    area, perimeter = ring_area_perimeter(rows[0], rows[1])
    area, perimeter = abs(area), abs(perimeter)
    _check_area(area, limits)
    warnings: list[str] = []
    rewound = ring & RING_CLOCKWISE  # RFC 7946 wants outer rings anticlockwise
    if rewound:
        warnings.append("rings were rewound: outer rings anticlockwise, holes clockwise (RFC 7946)")
    # a shapely polygon is its own geometry, kept as drawn or reversed (GEOS reverses its ring as the
    # read rewound it), unless it carries M values, which the read drops
    if from_json or obj.has_m:
        geometry = _ring_polygon(lonlat)
    else:
        geometry = obj.reverse() if rewound else obj
    lon, lat, x, y = centroids.tolist()
    return Site(
        geometry=geometry,
        area_m2=area,
        perimeter_m=perimeter,
        centroid=(lon, lat),
        grid_reference=grid_reference(x, y),
        vertices=vertices,
        warnings=warnings,
        properties=properties,
        bng_ring=grid,
        made_bng=bng,
    )


def parse_sites(geometries, limits: SiteLimits = SiteLimits()) -> list[Site | SiteError]:
    """:func:`parse_site` for an array of shapely geometries (EPSG:4326), a whole array at a time.

    Simple polygons (one ring, no holes, no repeated points, valid) are read with one array operation
    each for all of them, exactly as :func:`_simple_polygon` reads one; every other geometry, and any
    that breaks a limit, goes through :func:`parse_site` on its own, so each refusal keeps its one
    implementation. Returns, in order, a ``Site`` or the ``SiteError`` that refused it.
    """
    geometries = np.asarray(geometries, dtype=object)
    out: list[Site | SiteError | None] = [None] * len(geometries)
    simple = (shapely.get_type_id(geometries) == 3) & ~shapely.is_empty(geometries) & ~shapely.has_z(geometries)
    simple[simple] = shapely.get_num_interior_rings(geometries[simple]) == 0
    counts = np.zeros(len(geometries), dtype=np.int64)
    counts[simple] = shapely.get_num_coordinates(geometries[simple])
    simple &= counts >= 4
    if limits.max_vertices is not None:
        simple &= counts <= limits.max_vertices
    chosen = np.flatnonzero(simple)
    if len(chosen):
        _simple_polygons(geometries[chosen], counts[chosen], chosen, limits, out)
    for i, site in enumerate(out):
        if site is None:
            try:
                out[i] = parse_site(geometries[i], limits)
            except SiteError as err:
                out[i] = err
    return out


def _simple_polygons(geometries: np.ndarray, counts: np.ndarray, positions: np.ndarray, limits: SiteLimits, out: list) -> None:
    """The vectorised :func:`_simple_polygon`: fills ``out[positions[k]]`` for each polygon it can read.

    One OSTN15 projection and one compiled pass for every ring (``read_site_rings``), one GEOS
    validity call for the rings it could not prove simple, one call making the BNG polygons and one
    the rewound rings' own; then each ring's geodesic area.
    """
    lonlat = shapely.get_coordinates(geometries)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    codes, grid, centroids, rows = read_site_rings(lonlat, offsets)  # lonlat and grid as kept
    read = np.flatnonzero(codes != RING_HAND_BACK)
    if not len(read):
        return
    taken = np.repeat(codes != RING_HAND_BACK, counts)  # per point: of a ring read
    sizes = counts[read]
    kept = np.zeros(len(read) + 1, dtype=np.int64)
    np.cumsum(sizes, out=kept[1:])
    grid_rings = grid[taken]
    bng = _polygons_of(grid_rings, kept)
    valid = np.ones(len(read), dtype=bool)
    asked = np.flatnonzero(codes[read] & RING_UNSURE)
    valid[asked] = shapely.is_valid(bng[asked])
    areas, perimeters = rings_area_perimeter(rows[:, taken], kept)
    areas, perimeters = np.abs(areas).tolist(), np.abs(perimeters).tolist()
    # a polygon kept as drawn is its own geometry; a rewound one (or one with M values, which the
    # read drops) is made again
    rewound = (codes[read] & RING_CLOCKWISE) != 0
    geometry = geometries[read]
    remake = rewound | shapely.has_m(geometry)
    if remake.any():
        remade = np.zeros(len(codes), dtype=bool)
        remade[read[remake]] = True
        remade_offsets = np.zeros(int(remake.sum()) + 1, dtype=np.int64)
        np.cumsum(sizes[remake], out=remade_offsets[1:])
        geometry[remake] = _polygons_of(lonlat[np.repeat(remade, counts)], remade_offsets)
    centres = centroids[read].tolist()
    bounds, rewound = kept.tolist(), rewound.tolist()
    for m, k in enumerate(read.tolist()):
        if not valid[m]:
            continue
        area = areas[m]
        try:
            _check_area(area, limits)
        except SiteError:
            continue  # parse_site says so, the one way it is said
        lon, lat, x, y = centres[m]
        out[positions[k]] = Site(
            geometry=geometry[m],
            area_m2=area,
            perimeter_m=perimeters[m],
            centroid=(lon, lat),
            grid_reference=grid_reference(x, y),
            vertices=bounds[m + 1] - bounds[m],
            warnings=["rings were rewound: outer rings anticlockwise, holes clockwise (RFC 7946)"] if rewound[m] else [],
            properties={},
            bng_ring=grid_rings[bounds[m]:bounds[m + 1]],
            made_bng=bng[m],  # the batch's sites are matched together, from their BNG polygons
        )


def parse_site(obj, limits: SiteLimits = SiteLimits()) -> Site:
    """Read a site from GeoJSON (bytes, str or parsed) or a shapely geometry in EPSG:4326.

    Raises
    ------
    SiteError
        With a message that names the problem, for anything that is not a usable site in Great Britain.

    Examples
    --------
    >>> site = parse_site('{"type": "Polygon", "coordinates": [[[-0.1, 51.5], [-0.099, 51.5], [-0.099, 51.501], [-0.1, 51.5]]]}')
    >>> round(site.area_m2)
    3863
    """
    warnings: list[str] = []
    properties: dict = {}
    if isinstance(obj, bytes | bytearray | str):
        obj = load_json(obj, limits)
    if isinstance(obj, dict) and obj.get("crs") is not None:
        obj = _without_declared_crs(obj)
    if isinstance(obj, dict | shapely.Polygon):
        simple = _simple_polygon(obj, limits)
        if simple is not None:
            return simple
    if isinstance(obj, BaseGeometry):
        geometry = _from_shapely(obj, warnings, limits)
    else:
        if isinstance(obj, dict) and obj.get("type") == "Feature":
            properties = obj.get("properties") or {}
        geometry = geometry_from_geojson(obj, warnings, limits)
    vertices = int(shapely.get_num_coordinates(geometry))
    _vertex_limit(vertices, limits)
    _size_limits(geometry, limits)
    try:
        bng = to_bng(geometry)
    except OutsideGridError as err:
        raise SiteError(f"{err}; redline checks sites in England", code="outside-great-britain") from None
    polygonal = geometry.geom_type in POLYGONAL
    if polygonal:
        _parts_together(bng, limits)
        changed = False
        deduplicated = shapely.remove_repeated_points(bng, 0.0)
        if shapely.get_num_coordinates(deduplicated) < vertices:
            warnings.append("repeated points were removed")
            bng, changed = deduplicated, True
        if not bng.is_valid:
            bng, changed = repair(bng, warnings, limits=limits), True
        oriented = shapely.orient_polygons(bng, exterior_cw=False)
        if not changed and not oriented.equals_exact(bng, 0.0):
            warnings.append("rings were rewound: outer rings anticlockwise, holes clockwise (RFC 7946)")
        bng = oriented
        geometry = to_wgs84(bng) if changed else shapely.orient_polygons(geometry, exterior_cw=False)
        area, perimeter = geodesic_area_perimeter(geometry)
        area, perimeter = abs(area), abs(perimeter)
        _check_area(area, limits)
        centre, centre_bng = geometry.centroid, bng.centroid
    else:
        area = perimeter = 0.0
        centre, centre_bng = geometry, bng
    return Site(
        geometry=geometry,
        area_m2=area,
        perimeter_m=perimeter,
        centroid=(centre.x, centre.y),
        grid_reference=grid_reference(centre_bng.x, centre_bng.y),
        vertices=vertices,
        warnings=warnings,
        properties=properties,
        made_bng=bng,
    )
