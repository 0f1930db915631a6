"""OSTN15's shift arithmetic compiled with numba: all of a site's (or a layer's) points in one call.

Read a site and the shift lookup was some twenty numpy operations on arrays of thirty points, each
paying its few microseconds of dispatch for nanoseconds of work: a third of reading a site. Here it
is one loop. The arithmetic is the bilinear formula ``datasets.crs`` describes, written term for term
in the same order, and numba (without ``fastmath``) neither reorders nor fuses floating-point
operations, so every coordinate comes out bit for bit as the numpy formula gives it: layers indexed
before this module existed still meet sites on the very same edges (``tests/test_ostn15.py`` holds
it to that formula on points across the whole grid).

Imported by ``datasets.crs`` with the grid, once per process and before a worker forks its check
processes. The signatures are given, so each function is compiled (or, with ``cache=True``, loaded
from ``__pycache__`` in milliseconds) at import, never inside a check.
"""

from __future__ import annotations

import numba
import numpy as np

from datasets.compiled import compiled

CELL_M = 1000.0  # OSTN15's grid spacing

_POINTS = numba.float64[:]
_GRID = numba.float64[:, :, ::1]
_COVERED = numba.boolean[:, ::1]




@numba.njit(inline="always")
def _shift(east, north, grid, covered):
    """OSTN15's (east, north) shift at one ETRS89 grid position; NaN off its cover."""
    rows, columns = covered.shape
    fe = east / CELL_M
    fn = north / CELL_M
    # written so that NaN fails every test: a NaN or infinite position is off the grid
    if fe >= 0 and fn >= 0 and fe < columns and fn < rows:
        column = int(fe)
        row = int(fn)
        if covered[row, column]:
            fx = fe - column
            fy = fn - row
            south_west, south_east = (1 - fx) * (1 - fy), fx * (1 - fy)
            north_west, north_east = (1 - fx) * fy, fx * fy
            return (
                grid[row, column, 0] * south_west
                + grid[row, column + 1, 0] * south_east
                + grid[row + 1, column, 0] * north_west
                + grid[row + 1, column + 1, 0] * north_east,
                grid[row, column, 1] * south_west
                + grid[row, column + 1, 1] * south_east
                + grid[row + 1, column, 1] * north_west
                + grid[row + 1, column + 1, 1] * north_east,
            )
    return np.nan, np.nan


@compiled(numba.int64(_POINTS, _POINTS, _POINTS, _POINTS, _GRID, _COVERED, numba.float64[::1], _POINTS, _POINTS))
def forward(lon, lat, east, north, grid, covered, accepted, easting, northing):
    """ETRS89 grid positions (``east``, ``north``, projected from ``lon``, ``lat``) plus OSTN15's shift,
    into ``easting``, ``northing`` (which may be ``east``, ``north`` themselves).

    ``accepted`` is (lon_min, lon_max, lat_min, lat_max): outside it, or off the shift grid, NaN.
    Returns how many points came out NaN (or infinite).
    """
    lon_min, lon_max, lat_min, lat_max = accepted[0], accepted[1], accepted[2], accepted[3]
    off = 0
    for i in range(east.shape[0]):
        shift_east, shift_north = _shift(east[i], north[i], grid, covered)
        if not (lon[i] >= lon_min and lon[i] <= lon_max and lat[i] >= lat_min and lat[i] <= lat_max):
            shift_east = shift_north = np.nan
        easting[i] = east[i] + shift_east
        northing[i] = north[i] + shift_north
        if not (abs(easting[i]) < np.inf and abs(northing[i]) < np.inf):
            off += 1
    return off


@compiled(numba.void(_POINTS, _POINTS, _GRID, _COVERED, numba.int64, numba.float64, _POINTS, _POINTS))
def inverse(easting, northing, grid, covered, iterations, tolerance, east, north):
    """National Grid positions to ETRS89 grid positions: subtract the shift found where the point lies on
    the ETRS89 grid, starting from the National Grid position, until no point moves by ``tolerance``.

    Every point takes the same number of iterations (the most any needs), as the numpy loop did.
    """
    n = easting.shape[0]
    east[:] = easting
    north[:] = northing
    for _ in range(iterations):
        moved = 0.0
        for i in range(n):
            shift_east, shift_north = _shift(east[i], north[i], grid, covered)
            next_east = easting[i] - shift_east
            next_north = northing[i] - shift_north
            # NaN (off the grid) fails both tests, so it never counts as moving
            if abs(next_east - east[i]) > moved:
                moved = abs(next_east - east[i])
            if abs(next_north - north[i]) > moved:
                moved = abs(next_north - north[i])
            east[i] = next_east
            north[i] = next_north
        if moved < tolerance:
            break
