"""Coordinate transforms between GeoJSON lon/lat (EPSG:4326) and the British National Grid (EPSG:27700).

Every transform goes through OSTN15, the Ordnance Survey's exact ETRS89 <-> OSGB36 grid, read out
of ``convertbng`` once and applied here. pyproj without its OSTN15 grid file (which cannot be downloaded here) silently falls
back to a Helmert fit that is off by up to 3.3 m: enough to move a shared boundary onto the wrong side.

Examples
--------
>>> from shapely import Point
>>> round(to_bng(Point(-0.1151501, 51.4745098)).x)
530999
>>> grid_reference(530512, 179831)
'TQ 30512 79831'
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import NamedTuple

import numpy as np
import shapely
from convertbng.cutil import convert_etrs89_to_osgb36
from pyproj import Geod, Transformer
from pyproj.enums import TransformDirection
from shapely.geometry.base import BaseGeometry

WGS84 = Geod(ellps="WGS84")

# The extent OSTN15 covers, with the sea around Great Britain: anything outside is not in GB.
GB_LON = (-9.0, 2.9)
GB_LAT = (49.75, 61.0)
GB_EASTING = (0.0, 700_000.0)
GB_NORTHING = (0.0, 1_250_000.0)


class OutsideGridError(ValueError):
    """A coordinate lies outside Great Britain, where OSTN15 has no answer."""


# OSTN15 itself: project ETRS89 onto the National Grid's transverse Mercator (on GRS80, an exact
# formula), then add east and north shifts interpolated bilinearly between the four corners of the
# 1 km grid cell the point falls in; the inverse subtracts the shifts, iterating until they settle,
# as OSTN15's user guide describes. ``convertbng`` carries the grid but costs 20 to 70 µs a call
# however few the points, and answers with a pool of worker threads that does not survive ``fork``:
# a check process forked from a worker that had used it hung on its first call. So the shift at each
# of the 701 x 1251 grid nodes is read out of convertbng once per process (in the worker, before any
# check process is forked: see ``constraints.index.build_snapshot``) and every transform is computed
# here, never by convertbng (the shift lookup compiled in ``datasets.ostn15_compiled``): OSTN15's
# answer to within convertbng's own 1 mm rounding, which tests hold it to. Sites and layers go
# through the very same functions, or an edge a site shares with a designation would come out a
# fraction of a millimetre apart.
_ETRS89_TM = Transformer.from_crs(
    "EPSG:4258",
    "+proj=tmerc +lat_0=49 +lon_0=-2 +k=0.9996012717 +x_0=400000 +y_0=-100000 +ellps=GRS80 +units=m +no_defs",
    always_xy=True,
)
_COLUMNS, _ROWS = 700, 1250  # 1 km cells: eastings 0-700 km, northings 0-1250 km
# The longitudes and latitudes convertbng accepts at all (measured on convertbng 2.0); OSTN15's cover
# within them is the cells whose four corners carry shifts.
OSTN15_LON = (-8.579, 1.78)
OSTN15_LAT = (49.922, 60.84)
_NUDGE_M = 0.001  # into a neighbouring cell, to read a node's shift where its own cell has none
_INVERSE_ITERATIONS = 8  # the shifts vary by centimetres a kilometre: three or four iterations settle them
_INVERSE_TOLERANCE_M = 1e-6
_ACCEPTED = np.array([OSTN15_LON[0], OSTN15_LON[1], OSTN15_LAT[0], OSTN15_LAT[1]])


class _Grid(NamedTuple):
    shifts: np.ndarray  # (rows + 1, columns + 1, 2): east and north shift at each node, NaN off cover
    covered: np.ndarray  # (rows, columns): cells whose four corners carry shifts
    compiled: ModuleType  # datasets.ostn15_compiled, the bilinear lookup over all points in one call
    ring: ModuleType  # datasets.ring_compiled, a simple site's ring read in one call


_grid_lock = threading.Lock()
_grid: _Grid | None = None


def _read_grid() -> _Grid:
    east, north = np.meshgrid(np.arange(_COLUMNS + 1) * 1000.0, np.arange(_ROWS + 1) * 1000.0)
    east, north = east.ravel(), north.ravel()
    shifts = np.full((east.size, 2), np.nan)
    # convertbng answers a point from its cell's four corners, so a node is read from a
    # cell that has all four: its own (node at the south-west corner), else the cell to
    # its west, south or south-west, a millimetre inside (the shift moves by a millionth)
    for de, dn in ((0.0, 0.0), (-_NUDGE_M, 0.0), (0.0, -_NUDGE_M), (-_NUDGE_M, -_NUDGE_M)):
        todo = np.flatnonzero(np.isnan(shifts[:, 0]))
        e, n = east[todo] + de, north[todo] + dn
        grid_east, grid_north = convert_etrs89_to_osgb36(np.ascontiguousarray(e), np.ascontiguousarray(n))
        shifts[todo, 0], shifts[todo, 1] = grid_east - e, grid_north - n
    grid = shifts.reshape(_ROWS + 1, _COLUMNS + 1, 2)
    nodes = np.isfinite(grid[..., 0])
    covered = nodes[:-1, :-1] & nodes[1:, :-1] & nodes[:-1, 1:] & nodes[1:, 1:]
    # numba is imported, and the lookup compiled or loaded from its cache, here: once per process,
    # before it forks check processes, and not by every program that imports redline
    from datasets import ostn15_compiled, ring_compiled

    return _Grid(grid, covered, ostn15_compiled, ring_compiled)


def _loaded() -> _Grid:
    global _grid
    if _grid is None:
        with _grid_lock:
            if _grid is None:
                _grid = _read_grid()
    return _grid


def ostn15_grid() -> np.ndarray:
    """East and north shifts (metres) at every node, shape (rows + 1, columns + 1, 2); NaN off cover.

    The only call into convertbng: made once per process, before it forks check processes.
    """
    return _loaded().shifts


def _project_in_place(x: np.ndarray, y: np.ndarray, direction: TransformDirection) -> None:
    """ETRS89 lon/lat <-> its transverse Mercator grid, overwriting ``x`` and ``y`` (contiguous float64).

    The very PROJ call ``Transformer.transform`` makes, without the wrapping that cost 5 of its 7 µs
    on a site's thirty points: a scalar attempt refused with a TypeError, and a copy of each array.
    """
    try:
        _ETRS89_TM._transformer._transform(
            inx=x, iny=y, inz=None, intime=None, direction=direction, radians=False, errcheck=False
        )
    except (AttributeError, TypeError):  # a pyproj whose internals moved: the public call, same PROJ answer
        _ETRS89_TM.transform(x, y, direction=direction, inplace=True)


def _ostn15_points(lon: np.ndarray, lat: np.ndarray, easting: np.ndarray, northing: np.ndarray) -> int:
    """National Grid positions of ``lon``, ``lat`` into ``easting``, ``northing``; returns how many are
    off OSTN15's cover (NaN there)."""
    grid = _loaded()
    projected = np.empty((2, len(lon)))
    projected[0], projected[1] = lon, lat
    _project_in_place(projected[0], projected[1], TransformDirection.FORWARD)
    return grid.compiled.forward(
        lon, lat, projected[0], projected[1], grid.shifts, grid.covered, _ACCEPTED, easting, northing
    )


def _ostn15(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = np.empty((2, len(lon)))
    _ostn15_points(lon, lat, out[0], out[1])
    return out[0], out[1]


def _ostn15_inverse(easting: np.ndarray, northing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # the shift is looked up where the point lies on the ETRS89 grid, which is what is being sought:
    # start from the National Grid position and move by the shift found there until it stops changing
    grid = _loaded()
    out = np.empty((2, len(easting)))
    east, north = out
    grid.compiled.inverse(
        easting, northing, grid.shifts, grid.covered, _INVERSE_ITERATIONS, _INVERSE_TOLERANCE_M, east, north
    )
    lost = ~np.isfinite(east)
    _project_in_place(east, north, TransformDirection.INVERSE)
    east[lost], north[lost] = np.nan, np.nan
    return east, north


def _on_arrays(x, y, convert) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if x.size == 0:
        return x.copy(), y.copy()
    return convert(x, y)


def lonlat_to_bng(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes (ETRS89/WGS84) to eastings and northings; NaN outside OSTN15 cover."""
    return _on_arrays(lon, lat, _ostn15)


def bng_to_lonlat(easting, northing) -> tuple[np.ndarray, np.ndarray]:
    """Eastings and northings to longitudes and latitudes; NaN outside OSTN15 cover."""
    return _on_arrays(easting, northing, _ostn15_inverse)


def lonlat_points_to_bng(lonlat: np.ndarray) -> tuple[np.ndarray, int]:
    """(n, 2) longitudes and latitudes to (n, 2) eastings and northings, and how many of the
    points are off OSTN15's cover (NaN there): the one call a site's ring needs."""
    lonlat = np.asarray(lonlat, dtype=np.float64)
    out = np.empty((len(lonlat), 2))
    if len(lonlat) == 0:
        return out, 0
    return out, _ostn15_points(lonlat[:, 0], lonlat[:, 1], out[:, 0], out[:, 1])


# what datasets.ring_compiled.read_ring answers (here, so that reading them does not import numba)
RING_HAND_BACK = -1  # the general path must read this ring
RING_CLOCKWISE = 1  # bit: the ring turns clockwise and is to be rewound (its centroids are of the rewound ring)
RING_UNSURE = 2  # bit: no proof the ring is simple: ask GEOS


def read_ring(lonlat: np.ndarray, grid: np.ndarray, centroids: np.ndarray, from_json: bool = False) -> int:
    """:func:`datasets.ring_compiled.read_ring` (compiled with the grid, before any fork)."""
    return _loaded().ring.read_ring(lonlat, grid, centroids, from_json)


class SiteRing(NamedTuple):
    """What :func:`read_site_ring` (or :func:`read_site_rings`) makes of a site's ring or rings."""

    code: int | np.ndarray  # RING_HAND_BACK, else the RING_CLOCKWISE and RING_UNSURE bits (per ring)
    grid: np.ndarray  # (n, 2) eastings and northings, C-ordered, of the ring as kept (anticlockwise)
    centroids: np.ndarray  # (4,) or (rings, 4): longitude, latitude, easting, northing of the kept ring
    rows: np.ndarray  # (2, n): the kept ring's longitudes and latitudes, each row contiguous


def _site_grids(lonlat: np.ndarray) -> tuple[_Grid, np.ndarray, np.ndarray]:
    """The grid, the points' ETRS89 grid positions as rows (east, north), and room for their National Grid positions."""
    loaded = _loaded()
    rows = lonlat.T.copy()
    _project_in_place(rows[0], rows[1], TransformDirection.FORWARD)
    return loaded, rows, np.empty((len(lonlat), 2))


def read_site_ring(lonlat: np.ndarray, from_json: bool = False) -> SiteRing:
    """A simple site's ring, (n, 2) longitudes and latitudes (C-ordered doubles), on the National Grid
    as :func:`lonlat_points_to_bng` puts it, and what :func:`read_ring` makes of it, in one compiled
    call after the projection; the code is ``RING_HAND_BACK`` also for a point off OSTN15's cover.

    A ring that is read is kept anticlockwise: when the code says ``RING_CLOCKWISE``, ``lonlat`` (the
    caller's array) is rewound in place, as ``grid`` is, and ``rows`` are always the kept ring's.
    """
    loaded, rows, grid = _site_grids(lonlat)
    centroids = np.empty(4)
    code = loaded.ring.read_site_ring(lonlat, rows, loaded.shifts, loaded.covered, _ACCEPTED, grid, centroids, from_json)
    return SiteRing(code, grid, centroids, rows)


def read_site_rings(lonlat: np.ndarray, offsets: np.ndarray) -> SiteRing:
    """:func:`read_site_ring` for many rings (doubles from shapely), ring ``k`` being points
    ``offsets[k]:offsets[k + 1]`` of ``lonlat``: one projection and one compiled call for them all;
    the codes and centroids per ring, ``grid`` and ``rows`` by point. Rings read are kept
    anticlockwise, ``lonlat`` rewound in place where the code says ``RING_CLOCKWISE``."""
    loaded, rows, grid = _site_grids(lonlat)
    codes, centroids = np.empty(len(offsets) - 1, dtype=np.int64), np.empty((len(offsets) - 1, 4))
    if len(lonlat):
        loaded.ring.read_site_rings(lonlat, rows, loaded.shifts, loaded.covered, _ACCEPTED, grid, offsets, codes, centroids)
    else:
        codes[:] = RING_HAND_BACK
    return SiteRing(codes, grid, centroids, rows)


def _refuse_off_grid(coords: np.ndarray, out: np.ndarray):
    bad = coords[~np.isfinite(out).all(axis=1)][0]
    raise OutsideGridError(f"coordinate ({bad[0]:.6f}, {bad[1]:.6f}) lies outside Great Britain (OSTN15 cover)")


def _to_bng(coords: np.ndarray) -> np.ndarray:
    out, off = lonlat_points_to_bng(coords)
    if off:
        _refuse_off_grid(coords, out)
    return out


def _to_wgs84(coords: np.ndarray) -> np.ndarray:
    if len(coords) == 0:
        return coords
    out = np.column_stack(bng_to_lonlat(coords[:, 0], coords[:, 1]))
    if not np.isfinite(out).all():
        _refuse_off_grid(coords, out)
    return out


def to_bng(geometry):
    """Reproject shapely geometry (or an array of them) from EPSG:4326 to EPSG:27700 with OSTN15.

    Vectorised: one call converts every coordinate of every geometry in the array. Z is dropped.

    Raises
    ------
    OutsideGridError
        When any coordinate lies outside Great Britain.
    """
    return shapely.transform(geometry, _to_bng)


def to_wgs84(geometry):
    """Reproject shapely geometry (or an array of them) from EPSG:27700 to EPSG:4326 with OSTN15.

    Raises
    ------
    OutsideGridError
        When any coordinate lies outside Great Britain.
    """
    return shapely.transform(geometry, _to_wgs84)


_LETTERS = "ABCDEFGHJKLMNOPQRSTUVWXYZ"  # the grid skips I


def grid_reference(easting: float, northing: float, digits: int = 10) -> str:
    """A British National Grid reference such as ``'TQ 30512 79831'`` (``digits`` 2 to 10)."""
    if not (GB_EASTING[0] <= easting < GB_EASTING[1] and GB_NORTHING[0] <= northing < GB_NORTHING[1]):
        raise OutsideGridError(f"({easting:.0f}, {northing:.0f}) is outside the National Grid")
    e100k, n100k = int(easting // 100_000), int(northing // 100_000)
    # 500 km squares first (S, T, N, O, H), then the 100 km square within it.
    l1 = (19 - n100k) - (19 - n100k) % 5 + (e100k + 10) // 5
    l2 = (19 - n100k) * 5 % 25 + e100k % 5
    letters = _LETTERS[l1] + _LETTERS[l2]
    half = digits // 2
    e = int(easting % 100_000) // 10 ** (5 - half)
    n = int(northing % 100_000) // 10 ** (5 - half)
    return f"{letters} {e:0{half}d} {n:0{half}d}"


def ring_area_perimeter(lon: np.ndarray, lat: np.ndarray) -> tuple[float, float]:
    """Signed area (anticlockwise positive) and perimeter of one ring on the WGS84 ellipsoid: what
    ``WGS84.polygon_area_perimeter`` answers, without the copy it makes of arrays already contiguous
    doubles (a quarter of its time on a site's thirty points)."""
    lon = np.ascontiguousarray(lon, dtype=np.float64)
    lat = np.ascontiguousarray(lat, dtype=np.float64)
    try:  # the very Karney sums: pyproj's public call copies its arguments and hands them to this
        return WGS84._polygon_area_perimeter(lon, lat, radians=False)
    except (AttributeError, TypeError, ValueError, BufferError):  # pyproj's internals moved, or a read-only array
        return WGS84.polygon_area_perimeter(lon, lat)


def rings_area_perimeter(rows: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ring_area_perimeter` of many rings, ``rows`` (2, n) their longitudes and latitudes (each
    row contiguous doubles) and ring ``k`` points ``offsets[k]:offsets[k + 1]``: the very doubles, with
    no copy or check per ring (a view of each row is what pyproj's Karney sums read)."""
    lon, lat = np.ascontiguousarray(rows[0], dtype=np.float64), np.ascontiguousarray(rows[1], dtype=np.float64)
    count = len(offsets) - 1
    area, perimeter = np.empty(count), np.empty(count)
    bounds = offsets.tolist()
    try:
        sums = WGS84._polygon_area_perimeter
        for k in range(count):
            lo, hi = bounds[k], bounds[k + 1]
            area[k], perimeter[k] = sums(lon[lo:hi], lat[lo:hi], radians=False)
    except (AttributeError, TypeError, ValueError, BufferError):  # as ring_area_perimeter: the public call
        for k in range(count):
            lo, hi = bounds[k], bounds[k + 1]
            area[k], perimeter[k] = WGS84.polygon_area_perimeter(lon[lo:hi], lat[lo:hi])
    return area, perimeter


def _ring_area_perimeter(ring: BaseGeometry) -> tuple[float, float]:
    lon, lat = shapely.get_coordinates(ring).T
    return ring_area_perimeter(lon, lat)


def _polygon_area_perimeter(polygon: shapely.Polygon) -> tuple[float, float]:
    area, perimeter = _ring_area_perimeter(polygon.exterior)
    for hole in polygon.interiors:  # holes add their (negative) area, not their perimeter
        area += _ring_area_perimeter(hole)[0]
    return area, perimeter


def geodesic_area_perimeter(geometry: BaseGeometry) -> tuple[float, float]:
    """Signed area in m² (anticlockwise positive) and perimeter in metres on the WGS84 ellipsoid
    (lon/lat input), the very doubles ``Geod.geometry_area_perimeter`` answers.

    For polygons it adds up the same geodesic sums over the same coordinates in the same order, but
    reads each ring's coordinates in one call where pyproj's ``.xy`` loops over them in Python (two
    thirds of its time on a site of sixty vertices).
    """
    if geometry.geom_type == "Polygon" and not geometry.is_empty:
        return _polygon_area_perimeter(geometry)
    if geometry.geom_type == "MultiPolygon":
        polygons = shapely.get_parts(geometry)
        if len(polygons) and not shapely.is_empty(polygons).any():
            total_area = total_perimeter = 0.0
            for polygon in polygons:
                area, perimeter = _polygon_area_perimeter(polygon)
                total_area += area
                total_perimeter += perimeter
            return total_area, total_perimeter
    return WGS84.geometry_area_perimeter(geometry)


def geodesic_area(geometry: BaseGeometry) -> float:
    """True ground area in m² on the WGS84 ellipsoid (lon/lat input); 0 for points and lines."""
    if geometry.is_empty or geometry.geom_type not in ("Polygon", "MultiPolygon", "GeometryCollection"):
        return 0.0
    area, _ = geodesic_area_perimeter(shapely.force_2d(geometry))
    return abs(area)


def geodesic_perimeter(geometry: BaseGeometry) -> float:
    """Perimeter (or length) in metres on the WGS84 ellipsoid (lon/lat input)."""
    if geometry.is_empty:
        return 0.0
    _, perimeter = geodesic_area_perimeter(shapely.force_2d(geometry))
    return abs(perimeter)
