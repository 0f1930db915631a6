"""Coordinate transforms between GeoJSON lon/lat (EPSG:4326) and the British National Grid (EPSG:27700).

Every transform goes through OSTN15, the Ordnance Survey's exact ETRS89 <-> OSGB36 grid, as carried
by ``convertbng``. pyproj without its OSTN15 grid file (which cannot be downloaded here) silently falls
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

import numpy as np
import shapely
from convertbng.cutil import convert_bng, convert_lonlat
from pyproj import Geod, Transformer
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
# 1 km grid cell the point falls in. ``convertbng`` carries that grid but costs 20 to 70 µs a call
# however few the points (its worker threads must wake), which was most of a check's budget. So the
# shifts at all 701 x 1251 grid nodes are read back from convertbng once per process (half a second,
# 14 MB) and every input is interpolated here: OSTN15's answer to within convertbng's own 1 mm
# rounding, which a test holds it to. Sites and layers must go through the very same function, or an
# edge a site shares with a designation would come out a fraction of a millimetre apart.
_ETRS89_TM = Transformer.from_crs(
    "EPSG:4258",
    "+proj=tmerc +lat_0=49 +lon_0=-2 +k=0.9996012717 +x_0=400000 +y_0=-100000 +ellps=GRS80 +units=m +no_defs",
    always_xy=True,
)
_COLUMNS, _ROWS = 700, 1250  # 1 km cells: eastings 0-700 km, northings 0-1250 km
_grid_lock = threading.Lock()
_shift_grid: np.ndarray | None = None
_interior_cells: np.ndarray | None = None


def ostn15_grid() -> np.ndarray:
    """East and north shifts (metres) at every node, shape (rows + 1, columns + 1, 2); NaN off cover."""
    global _shift_grid
    if _shift_grid is None:
        with _grid_lock:
            if _shift_grid is None:
                east, north = np.meshgrid(np.arange(_COLUMNS + 1) * 1000.0, np.arange(_ROWS + 1) * 1000.0)
                lon, lat = _ETRS89_TM.transform(east.ravel(), north.ravel(), direction="INVERSE")
                grid_east, grid_north = convert_bng(np.ascontiguousarray(lon), np.ascontiguousarray(lat))
                shifts = np.stack([grid_east - east.ravel(), grid_north - north.ravel()], axis=1)
                grid = shifts.reshape(_ROWS + 1, _COLUMNS + 1, 2)
                nodes = np.isfinite(grid[..., 0])
                cells = nodes[:-1, :-1] & nodes[1:, :-1] & nodes[:-1, 1:] & nodes[1:, 1:]
                # cells at least one cell away from OSTN15's edge; nearer the edge convertbng decides
                padded = np.pad(cells, 1, constant_values=False)
                interior = np.ones_like(cells)
                for dr in (0, 1, 2):
                    for dc in (0, 1, 2):
                        interior &= padded[dr : dr + _ROWS, dc : dc + _COLUMNS]
                global _interior_cells
                _interior_cells = interior
                _shift_grid = grid
    return _shift_grid


def _ostn15(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    east, north = _ETRS89_TM.transform(lon, lat)
    fe, fn = east / 1000.0, north / 1000.0
    inside = np.isfinite(fe) & np.isfinite(fn) & (fe >= 0) & (fn >= 0) & (fe < _COLUMNS) & (fn < _ROWS)
    if not inside.all():
        fe, fn = np.where(inside, fe, 0.0), np.where(inside, fn, 0.0)
    column, row = fe.astype(np.intp), fn.astype(np.intp)
    fx, fy = (fe - column)[:, None], (fn - row)[:, None]
    grid = ostn15_grid()
    near_edge = inside & ~_interior_cells[row, column]
    shift = (
        grid[row, column] * ((1 - fx) * (1 - fy))
        + grid[row, column + 1] * (fx * (1 - fy))
        + grid[row + 1, column] * ((1 - fx) * fy)
        + grid[row + 1, column + 1] * (fx * fy)
    )
    grid_east, grid_north = east + shift[:, 0], north + shift[:, 1]
    grid_east[~inside] = np.nan
    edge = near_edge | np.isnan(grid_east)  # off the grid, or by its edge: convertbng's word is final
    if edge.any():  # by the edge of OSTN15's cover, where convertbng knows the exact line
        grid_east[edge], grid_north[edge] = convert_bng(np.ascontiguousarray(lon[edge]), np.ascontiguousarray(lat[edge]))
    grid_north[np.isnan(grid_east)] = np.nan
    return grid_east, grid_north


def lonlat_to_bng(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes (ETRS89/WGS84) to eastings and northings; NaN outside OSTN15 cover."""
    lon = np.ascontiguousarray(lon, dtype=np.float64)
    lat = np.ascontiguousarray(lat, dtype=np.float64)
    if lon.size == 0:
        return lon.copy(), lat.copy()
    return _ostn15(lon, lat)


def bng_to_lonlat(easting, northing) -> tuple[np.ndarray, np.ndarray]:
    """Eastings and northings to longitudes and latitudes; NaN outside OSTN15 cover."""
    easting = np.ascontiguousarray(easting, dtype=np.float64)
    northing = np.ascontiguousarray(northing, dtype=np.float64)
    if easting.size == 0:
        return easting.copy(), northing.copy()
    return convert_lonlat(easting, northing)


def _transformer(convert):
    def transform(coords: np.ndarray) -> np.ndarray:
        if len(coords) == 0:
            return coords
        x, y = convert(np.ascontiguousarray(coords[:, 0]), np.ascontiguousarray(coords[:, 1]))
        out = np.column_stack([x, y])
        if not np.isfinite(out).all():
            bad = coords[~np.isfinite(out).all(axis=1)][0]
            raise OutsideGridError(
                f"coordinate ({bad[0]:.6f}, {bad[1]:.6f}) lies outside Great Britain (OSTN15 cover)"
            )
        return out

    return transform


_to_bng = _transformer(lonlat_to_bng)
_to_wgs84 = _transformer(lambda x, y: convert_lonlat(x, y))


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
    """Reproject shapely geometry (or an array of them) from EPSG:27700 to EPSG:4326 with OSTN15."""
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


def geodesic_area(geometry: BaseGeometry) -> float:
    """True ground area in m² on the WGS84 ellipsoid (lon/lat input); 0 for points and lines."""
    if geometry.is_empty or geometry.geom_type not in ("Polygon", "MultiPolygon", "GeometryCollection"):
        return 0.0
    area, _ = WGS84.geometry_area_perimeter(shapely.force_2d(geometry))
    return abs(area)


def geodesic_perimeter(geometry: BaseGeometry) -> float:
    """Perimeter (or length) in metres on the WGS84 ellipsoid (lon/lat input)."""
    if geometry.is_empty:
        return 0.0
    _, perimeter = WGS84.geometry_area_perimeter(shapely.force_2d(geometry))
    return abs(perimeter)
