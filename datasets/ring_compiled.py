"""A simple site's ring read in one compiled pass: what :func:`constraints.site._simple_polygon` asks
of it besides the projection and the geodesic area.

Reading the commonest site (one ring, no holes) was a dozen array operations of a few microseconds
each on some thirty points: is it closed, are its first points distinct, does it repeat a point on
the grid, which way does it turn (on both grids), is it valid, where is its centroid. Here they are
one loop each, in one call. Every answer is either certain or handed back:

- the turn is only trusted when it is far larger than the rounding its sum can carry (else the
  general path reads the site, as it would a ring that turns neither way);
- validity is only claimed where it is proven with Shewchuk's error bound on each orientation, so
  wherever GEOS could see an edge touch or cross another the caller asks GEOS (``shapely.is_valid``);
- the centroids are GEOS's formula (``geos::algorithm::Centroid``: a fan of triangles from the first
  point, each weighted by twice its area), term for term in the same order, so they are its very
  doubles (``tests/test_site_compiled.py`` holds them to ``shapely.centroid``).

numba without ``fastmath`` neither reorders nor fuses floating-point operations, which is what
makes the last point hold. Imported by ``datasets.crs`` with the OSTN15 grid (which every site needs
first), once per process and before a worker forks its check processes, and compiled (or loaded from
``__pycache__``) at import, with the signatures given, as ``datasets.ostn15_compiled`` is.
"""

from __future__ import annotations

import numba
import numpy as np

from datasets.compiled import compiled
from datasets.crs import RING_CLOCKWISE as CLOCKWISE
from datasets.crs import RING_HAND_BACK as HAND_BACK
from datasets.crs import RING_UNSURE as UNSURE
from datasets.ostn15_compiled import forward

EPSILON = 2.0**-53  # half a unit in the last place of 1.0
# Shewchuk's bound for orient2d computed in doubles (Adaptive Precision Floating-Point Arithmetic
# and Fast Robust Geometric Predicates, 1997): a determinant larger than this times the sum of its
# two products' magnitudes has the sign of the exact one
_ORIENT_BOUND = (3.0 + 16.0 * EPSILON) * EPSILON




@numba.njit(inline="always")
def _orientation(ax, ay, bx, by, cx, cy):
    """+1 when c lies certainly left of a->b, -1 certainly right, 0 when the doubles cannot tell."""
    left = (ax - cx) * (by - cy)
    right = (ay - cy) * (bx - cx)
    det = left - right
    bound = _ORIENT_BOUND * (abs(left) + abs(right))
    if det > bound:
        return 1
    if -det > bound:
        return -1
    return 0


@numba.njit(inline="always")
def _turn(xy):
    """+1 anticlockwise, -1 clockwise, 0 when the ring's shoelace sum is too small to trust.

    Summed about the first point (the terms are then of the ring's size, not of its distance from
    the origin); the bound allows each difference and product its rounding, many times over.
    """
    n = xy.shape[0]
    x0, y0 = xy[0, 0], xy[0, 1]
    total = 0.0
    magnitude = 0.0
    for i in range(n - 1):
        xi, yi = xy[i, 0] - x0, xy[i, 1] - y0
        xj, yj = xy[i + 1, 0] - x0, xy[i + 1, 1] - y0
        total += xi * yj - xj * yi
        magnitude += abs(xi * yj) + abs(xj * yi)
    if abs(total) <= 8.0 * (n + 2) * EPSILON * magnitude:
        return 0
    return 1 if total > 0 else -1


@numba.njit(inline="always")
def _centroid(xy, reverse, out, at):
    """GEOS's polygon centroid of the ring (read backwards when ``reverse``), into ``out[at:at + 2]``.

    ``Centroid::addShell``: a fan of triangles from the first point; GEOS weighs each by the sign of
    the ring's turn, which cancels exactly in the quotient, so it is left out here.
    """
    n = xy.shape[0]
    bx, by = xy[0, 0], xy[0, 1]  # the first point reads the same both ways round
    cx = 0.0
    cy = 0.0
    area2 = 0.0
    for k in range(n - 1):
        i = n - 1 - k if reverse else k
        j = i - 1 if reverse else i + 1
        px, py, qx, qy = xy[i, 0], xy[i, 1], xy[j, 0], xy[j, 1]
        tx = bx + px + qx
        ty = by + py + qy
        a2 = (px - bx) * (qy - by) - (qx - bx) * (py - by)
        cx += a2 * tx
        cy += a2 * ty
        area2 += a2
    out[at] = cx / 3 / area2
    out[at + 1] = cy / 3 / area2


@numba.njit(inline="always")
def _proven_simple(xy):
    """True when no two edges of the closed ring meet but neighbours at their shared point (and
    those not folding back onto each other), proven in doubles; False when that cannot be proven."""
    edges = xy.shape[0] - 1
    for i in range(edges):  # neighbours: the corner between them must turn, certainly
        j = (i + 1) % edges
        k = (i + 2) % edges
        if _orientation(xy[i, 0], xy[i, 1], xy[j, 0], xy[j, 1], xy[k, 0], xy[k, 1]) == 0:
            return False
    low = np.empty(edges)
    for i in range(edges):
        low[i] = min(xy[i, 0], xy[i + 1, 0])
    order = np.argsort(low)
    for a in range(edges):  # the others, swept along x: only edges whose x ranges meet are compared
        i = order[a]
        ax, ay, bx, by = xy[i, 0], xy[i, 1], xy[i + 1, 0], xy[i + 1, 1]
        high = max(ax, bx)
        for b in range(a + 1, edges):
            j = order[b]
            if low[j] > high:
                break
            if j == i + 1 or i == j + 1 or (i == 0 and j == edges - 1) or (j == 0 and i == edges - 1):
                continue
            cx, cy, dx, dy = xy[j, 0], xy[j, 1], xy[j + 1, 0], xy[j + 1, 1]
            if max(ay, by) < min(cy, dy) or max(cy, dy) < min(ay, by):
                continue
            c_side = _orientation(ax, ay, bx, by, cx, cy)
            d_side = _orientation(ax, ay, bx, by, dx, dy)
            if c_side != 0 and c_side == d_side:
                continue
            a_side = _orientation(cx, cy, dx, dy, ax, ay)
            b_side = _orientation(cx, cy, dx, dy, bx, by)
            if a_side != 0 and a_side == b_side:
                continue
            return False
    return True


@numba.njit(inline="always")
def _read(lonlat, grid, centroids, from_json):
    """Read a closed ring given in longitude and latitude and on the National Grid (finite, as
    ``datasets.crs.lonlat_points_to_bng`` gives it).

    Returns ``HAND_BACK`` when the general path must read it (not closed, its first three points not
    distinct, a point repeated on the grid, a turn too small to trust, the two grids turning opposite
    ways); else ``CLOCKWISE`` and ``UNSURE`` bits, with the centroids of the ring as it is to be kept
    (anticlockwise) in ``centroids``: longitude, latitude, easting, northing.

    ``from_json``: the positions were JSON numbers read by numpy, which reads ``true`` and ``false``
    as 1 and 0 beside numbers: a ring holding an exact 0 or 1 is handed back, for the general path to
    name a boolean for what it is (neither is a longitude or latitude in England, so real sites
    almost never take that way).
    """
    n = lonlat.shape[0]
    if n < 4:
        return HAND_BACK
    if from_json:
        for i in range(n):
            for axis in range(2):
                if lonlat[i, axis] == 0.0 or lonlat[i, axis] == 1.0:
                    return HAND_BACK
    if lonlat[0, 0] != lonlat[n - 1, 0] or lonlat[0, 1] != lonlat[n - 1, 1]:
        return HAND_BACK
    for a, b in ((0, 1), (1, 2), (0, 2)):
        if lonlat[a, 0] == lonlat[b, 0] and lonlat[a, 1] == lonlat[b, 1]:
            return HAND_BACK
    for i in range(n - 1):
        if grid[i, 0] == grid[i + 1, 0] and grid[i, 1] == grid[i + 1, 1]:
            return HAND_BACK
    turn = _turn(lonlat)
    if turn == 0 or _turn(grid) != turn:
        return HAND_BACK
    flags = 0 if turn > 0 else CLOCKWISE
    if not _proven_simple(grid):
        flags |= UNSURE
    _centroid(lonlat, turn < 0, centroids, 0)
    _centroid(grid, turn < 0, centroids, 2)
    return flags


@numba.njit(inline="always")
def _reverse(xy):
    """The rows of ``xy`` in the opposite order, in place."""
    n = xy.shape[0]
    for i in range(n // 2):
        j = n - 1 - i
        for axis in range(2):
            xy[i, axis], xy[j, axis] = xy[j, axis], xy[i, axis]


@numba.njit(inline="always")
def _read_site(lonlat, rows, shifts, covered, accepted, grid, centroids, from_json):
    """One site's ring: onto the grid (``rows`` holding its ETRS89 grid positions), read, rewound
    anticlockwise in place (``lonlat`` and ``grid``) when it turns clockwise, and its longitudes and
    latitudes as kept copied into ``rows`` (each row contiguous, as the geodesic area takes them)."""
    if forward(lonlat[:, 0], lonlat[:, 1], rows[0], rows[1], shifts, covered, accepted, grid[:, 0], grid[:, 1]):
        return HAND_BACK
    code = _read(lonlat, grid, centroids, from_json)
    if code == HAND_BACK:
        return code
    if code & CLOCKWISE:
        _reverse(lonlat)
        _reverse(grid)
    for i in range(lonlat.shape[0]):
        rows[0, i] = lonlat[i, 0]
        rows[1, i] = lonlat[i, 1]
    return code


_RING = numba.float64[:, ::1]


@compiled(numba.int64(_RING, _RING, numba.float64[::1], numba.boolean))
def read_ring(lonlat, grid, centroids, from_json):
    """What a closed ring is, given in longitude and latitude and on the National Grid: see ``_read``."""
    return _read(lonlat, grid, centroids, from_json)


_SITE_ARGUMENTS = (_RING, _RING, numba.float64[:, :, ::1], numba.boolean[:, ::1], numba.float64[::1], _RING)


@compiled(numba.int64(*_SITE_ARGUMENTS, numba.float64[::1], numba.boolean))
def read_site_ring(lonlat, rows, shifts, covered, accepted, grid, centroids, from_json):
    """A site's ring on the National Grid and what it is, in one call: OSTN15's shifts added to its
    ETRS89 grid positions (``rows``: east, north) into ``grid`` by ``datasets.ostn15_compiled.forward``,
    then ``_read``; ``HAND_BACK`` when a point is off the grid. A ring read (not handed back) is kept
    anticlockwise: ``lonlat`` and ``grid`` rewound in place when the code says ``CLOCKWISE``, and
    ``rows`` then holding its longitudes and latitudes, each row contiguous."""
    return _read_site(lonlat, rows, shifts, covered, accepted, grid, centroids, from_json)


@compiled(numba.void(*_SITE_ARGUMENTS, numba.int64[::1], numba.int64[::1], numba.float64[:, ::1]))
def read_site_rings(lonlat, rows, shifts, covered, accepted, grid, offsets, codes, centroids):
    """:func:`read_site_ring` for many rings in one call, ring ``k`` being points
    ``offsets[k]:offsets[k + 1]`` of every array: its code into ``codes[k]``, its centroids into
    ``centroids[k]``. The positions are doubles from shapely (never JSON's)."""
    for k in range(codes.shape[0]):
        lo, hi = offsets[k], offsets[k + 1]
        codes[k] = _read_site(lonlat[lo:hi], rows[:, lo:hi], shifts, covered, accepted, grid[lo:hi], centroids[k], False)
