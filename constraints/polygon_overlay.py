"""How each site polygon meets each of its candidate piece polygons, and the area they share, in one
compiled call over all pairs: GEOS's answers without GEOS's cost, or "undecided" where only GEOS's exact
arithmetic can tell.

Asking GEOS costs some 35 us per pair that partly overlaps (``contains_properly``, ``clip_by_rect``,
OverlayNG's intersection, ``area``), almost all of it building topology graphs for polygons of a few
dozen vertices. Here each pair is one pass over the edges of both polygons that can meet:

1. Every pair of edges (one from each polygon) whose boxes meet is asked the four orientation
   questions a crossing depends on. Each is Shewchuk's floating-point orientation with his error
   bound, so its sign is exact whenever it is given; a determinant inside the bound (an exact zero,
   or too close to call) or a vertex within ``NEAR_M`` of the other's edge makes the pair undecided.
   So every decided pair has boundaries that either cross properly (at no vertex) or do not meet at
   all, which is exactly where floating point cannot disagree with GEOS's robust predicates.
2. Each ring's first vertex is placed inside or outside the other polygon by a ray-crossing count
   (the same exact orientations), and each proper crossing swaps inside and outside along both rings.
3. The relation follows: any crossing means the interiors overlap and neither holds the other
   properly (``CROSSES``); otherwise the boundaries are disjoint and the rings' placements decide
   between ``DISJOINT``, ``SITE_INSIDE`` (the piece holds the site properly) and ``PIECE_INSIDE``.
4. The shared area is Green's theorem over the boundary of the intersection: the parts of each
   polygon's rings that lie inside the other, each ring taken the way its polygon's inside is on its
   left (an exterior counter-clockwise, a hole clockwise, whatever way the data stores it: each ring's
   signed area says which). Edges are split at the crossings, whose points are rounded to the
   National Grid's doubles as GEOS rounds the points it inserts (its double-double line
   intersection is correctly rounded in all but ties), and the sums are taken about the site's first
   vertex, so the area agrees with GEOS's to about 1e-12 relative.

Points against polygons (:func:`points_in_polygons`: point pieces against a site, an address site
against polygon pieces) are the same arithmetic in one step: a ray-crossing count whose orientations
are exact, undecided on or within ``NEAR_M`` of an edge, where GEOS says whether the point touches.

Layout
------
Polygons come as ``shapely.to_ragged_array`` gives them: ``xy`` float64 (n, 2), C-contiguous, every ring
closed (its first vertex repeated last); ring ``r`` is ``xy[ring_offsets[r]:ring_offsets[r + 1]]``;
polygon ``p`` has the rings ``rings[p]:rings[p + 1]``, its exterior first, then its holes. Offsets may
be int32 or int64 (the site's are brought to the pieces' type, so the layer's are never copied). Rings
may wind either way. Polygons are valid and their coordinates finite (as the index's and a parsed
site's are): the kernel does not check it, and GEOS's answers for invalid polygons are not its to copy.

Examples
--------
>>> import shapely
>>> site = shapely.box(0, 0, 10, 10)
>>> pieces = [shapely.box(5, 5, 20, 20), shapely.box(-5, -5, 15, 15), shapely.box(2, 2, 3, 3),
...           shapely.box(30, 30, 40, 40), shapely.box(10, 0, 20, 10)]
>>> _, site_xy, (site_ring_offsets, site_rings) = shapely.to_ragged_array([site])
>>> _, piece_xy, (piece_ring_offsets, piece_rings) = shapely.to_ragged_array(pieces)
>>> area, relation = pair_overlaps(site_xy, site_ring_offsets, site_rings, piece_xy, piece_ring_offsets,
...                                piece_rings, np.zeros(5, np.int64), np.arange(5))
>>> area.tolist()[:4], relation.tolist()
([25.0, 100.0, 1.0, 0.0], [1, 2, 3, 0, -1])

The last piece shares an edge with the site: GEOS must say whether that is all they share.
"""

from __future__ import annotations

import numba
import numpy as np

from constraints.pieces import POINT_PIECE, POLYGON_PIECE
from datasets.compiled import compiled

DISJOINT, CROSSES, SITE_INSIDE, PIECE_INSIDE, UNDECIDED = 0, 1, 2, 3, -1  # relation codes (int8)
INTERIOR = 4  # points_in_polygons: the point lies in the polygon's interior (a code of its own, never a polygon pair's)

# A vertex nearer than this (in metres) to the line of another polygon's edge that it may meet makes the
# pair undecided even when the orientation's sign is certain: a micron is ten thousand times the
# spacing of doubles at National Grid magnitudes, and no real boundary is drawn to it, so the pairs it
# sends to GEOS are those drawn from shared lines (where GEOS's snapping and noding take over).
NEAR_M = 1e-6

_EPSILON = 2.0**-53
_ORIENTATION_BOUND = (3.0 + 16.0 * _EPSILON) * _EPSILON  # Shewchuk's ccwerrboundA
_GROW = -2  # a pair found more crossings than the scratch holds: grow it and ask again




@numba.njit(inline="always")
def _orientation(ax, ay, bx, by, cx, cy):
    """Twice the signed area of (a, b, c), positive when c is left of a->b, and the bound below which
    its sign is not certain (Shewchuk's orient2dfast and its error bound)."""
    left = (ax - cx) * (by - cy)
    right = (ay - cy) * (bx - cx)
    return left - right, _ORIENTATION_BOUND * (abs(left) + abs(right))


@numba.njit(inline="always")
def _near(determinant, bound, ax, ay, bx, by):
    """Whether the vertex behind ``determinant`` (against the edge a->b) is too near that edge's line to
    call: within the rounding bound, or within NEAR_M (the determinant is the edge's length times the
    distance; the L1 length overstates the length by at most sqrt(2))."""
    return abs(determinant) <= bound + NEAR_M * (abs(bx - ax) + abs(by - ay))


@numba.njit
def _inside(x, y, xy, ring_offsets, first_ring, end_ring):
    """1 if (x, y) lies in the polygon's interior, 0 if outside it, -1 if an orientation is too close to
    call (the point is on or next to an edge).

    A ray to +x counts the edges it crosses, each edge taken half-open in y so that a vertex at the
    ray's height counts once; whether the crossing lies right of the point is an orientation's sign.
    """
    inside = False
    for ring in range(first_ring, end_ring):
        for j in range(ring_offsets[ring], ring_offsets[ring + 1] - 1):
            ay = xy[j, 1]
            by = xy[j + 1, 1]
            if (ay > y) != (by > y):
                determinant, bound = _orientation(xy[j, 0], ay, xy[j + 1, 0], by, x, y)
                if abs(determinant) <= bound:
                    return -1
                if (determinant > 0) == (by > ay):
                    inside = not inside
    return 1 if inside else 0


@numba.njit(inline="always")
def _crossing_point(p1x, p1y, p2x, p2y, q1x, q1y, q2x, q2y):
    """Where two properly crossing segments cross, rounded to doubles as GEOS's double-double
    intersection rounds it (in all but near-ties): computed about the middle of the boxes' overlap,
    where the coordinates are small and exact, then moved back by one rounded addition."""
    middle_x = (max(min(p1x, p2x), min(q1x, q2x)) + min(max(p1x, p2x), max(q1x, q2x))) / 2.0
    middle_y = (max(min(p1y, p2y), min(q1y, q2y)) + min(max(p1y, p2y), max(q1y, q2y))) / 2.0
    p1x -= middle_x
    p1y -= middle_y
    p2x -= middle_x
    p2y -= middle_y
    q1x -= middle_x
    q1y -= middle_y
    q2x -= middle_x
    q2y -= middle_y
    px = p1y - p2y
    py = p2x - p1x
    pw = p1x * p2y - p2x * p1y
    qx = q1y - q2y
    qy = q2x - q1x
    qw = q1x * q2y - q2x * q1y
    w = px * qy - qx * py
    return (py * qw - qy * pw) / w + middle_x, (qx * pw - px * qw) / w + middle_y


@numba.njit(inline="always")
def _sort_run(order, keys, lo, hi):
    """Insertion sort of order[lo:hi] by keys[order[.]]: the crossings on one edge, rarely more than two."""
    for i in range(lo + 1, hi):
        item = order[i]
        key = keys[item]
        j = i - 1
        while j >= lo and keys[order[j]] > key:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = item


@numba.njit
def _ring_parts(xy, start, end, origin_x, origin_y, inside, order, lo, crossing_edge, crossing_x, crossing_y):
    """Green's sum (twice the signed area) of the parts of one ring lying inside the other polygon, and of
    the whole ring; ``inside`` says where its first vertex lies and ``order[lo:]`` lists the crossings
    on its edges in the ring's order. The third value is where the ring ends (inside or not), which
    must be where it started; the fourth is where its crossings end in ``order``."""
    parts = 0.0
    whole = 0.0
    k = lo
    n = order.shape[0]
    for j in range(start, end - 1):
        ax = xy[j, 0] - origin_x
        ay = xy[j, 1] - origin_y
        bx = xy[j + 1, 0] - origin_x
        by = xy[j + 1, 1] - origin_y
        whole += ax * by - bx * ay
        while k < n and crossing_edge[order[k]] == j:
            cx = crossing_x[order[k]] - origin_x
            cy = crossing_y[order[k]] - origin_y
            if inside:
                parts += ax * cy - cx * ay
            inside = not inside
            ax = cx
            ay = cy
            k += 1
        if inside:
            parts += ax * by - bx * ay
    return parts, whole, inside, k


@numba.njit
def _one_pair(
    sxy, soff, site_first, site_end, pxy, poff, piece_first, piece_end,
    site_edges, piece_edges, piece_box, crossing_edges, crossing_floats, site_order, piece_order, piece_counts,
):
    """(area, relation) of one site polygon (rings site_first:site_end) and one piece polygon; the
    arrays after the polygons are scratch. Relation _GROW: more crossings than the scratch holds."""
    if site_end <= site_first or piece_end <= piece_first:
        return 0.0, UNDECIDED
    for ring in range(site_first, site_end):
        if soff[ring + 1] - soff[ring] < 4:
            return 0.0, UNDECIDED
    for ring in range(piece_first, piece_end):
        if poff[ring + 1] - poff[ring] < 4:
            return 0.0, UNDECIDED
    site_start, site_stop = soff[site_first], soff[site_first + 1]  # the exterior bounds the polygon
    piece_start, piece_stop = poff[piece_first], poff[piece_first + 1]
    s_min_x = s_max_x = sxy[site_start, 0]
    s_min_y = s_max_y = sxy[site_start, 1]
    for j in range(site_start + 1, site_stop):
        x, y = sxy[j, 0], sxy[j, 1]
        s_min_x, s_max_x, s_min_y, s_max_y = min(s_min_x, x), max(s_max_x, x), min(s_min_y, y), max(s_max_y, y)
    p_min_x = p_max_x = pxy[piece_start, 0]
    p_min_y = p_max_y = pxy[piece_start, 1]
    for j in range(piece_start + 1, piece_stop):
        x, y = pxy[j, 0], pxy[j, 1]
        p_min_x, p_max_x, p_min_y, p_max_y = min(p_min_x, x), max(p_max_x, x), min(p_min_y, y), max(p_max_y, y)
    if s_max_x < p_min_x or p_max_x < s_min_x or s_max_y < p_min_y or p_max_y < s_min_y:
        return 0.0, DISJOINT  # exact: boxes apart by any margin cannot hold a shared point

    # the edges of each that reach the other's box (widened by NEAR_M, so near misses are looked at)
    ns = 0
    for ring in range(site_first, site_end):
        for j in range(soff[ring], soff[ring + 1] - 1):
            ax, ay, bx, by = sxy[j, 0], sxy[j, 1], sxy[j + 1, 0], sxy[j + 1, 1]
            if not (max(ax, bx) < p_min_x - NEAR_M or min(ax, bx) > p_max_x + NEAR_M
                    or max(ay, by) < p_min_y - NEAR_M or min(ay, by) > p_max_y + NEAR_M):
                site_edges[ns] = j
                ns += 1
    n_piece = 0
    for ring in range(piece_first, piece_end):
        for j in range(poff[ring], poff[ring + 1] - 1):
            ax, ay, bx, by = pxy[j, 0], pxy[j, 1], pxy[j + 1, 0], pxy[j + 1, 1]
            low_x, high_x, low_y, high_y = min(ax, bx), max(ax, bx), min(ay, by), max(ay, by)
            if not (high_x < s_min_x - NEAR_M or low_x > s_max_x + NEAR_M or high_y < s_min_y - NEAR_M or low_y > s_max_y + NEAR_M):
                piece_edges[n_piece] = j
                piece_box[0, n_piece] = low_x - NEAR_M
                piece_box[1, n_piece] = high_x + NEAR_M
                piece_box[2, n_piece] = low_y - NEAR_M
                piece_box[3, n_piece] = high_y + NEAR_M
                n_piece += 1

    # every pair of those edges whose boxes meet: a crossing, nothing, or too near to call
    crossings = 0
    capacity = crossing_edges.shape[1]
    for a in range(ns):
        j = site_edges[a]
        ax, ay, bx, by = sxy[j, 0], sxy[j, 1], sxy[j + 1, 0], sxy[j + 1, 1]
        low_x, high_x, low_y, high_y = min(ax, bx), max(ax, bx), min(ay, by), max(ay, by)
        for b in range(n_piece):
            if high_x < piece_box[0, b] or low_x > piece_box[1, b] or high_y < piece_box[2, b] or low_y > piece_box[3, b]:
                continue
            i = piece_edges[b]
            cx, cy, dx, dy = pxy[i, 0], pxy[i, 1], pxy[i + 1, 0], pxy[i + 1, 1]
            a_side, bound = _orientation(cx, cy, dx, dy, ax, ay)
            if _near(a_side, bound, cx, cy, dx, dy):
                return 0.0, UNDECIDED
            b_side, bound = _orientation(cx, cy, dx, dy, bx, by)
            if _near(b_side, bound, cx, cy, dx, dy):
                return 0.0, UNDECIDED
            c_side, bound = _orientation(ax, ay, bx, by, cx, cy)
            if _near(c_side, bound, ax, ay, bx, by):
                return 0.0, UNDECIDED
            d_side, bound = _orientation(ax, ay, bx, by, dx, dy)
            if _near(d_side, bound, ax, ay, bx, by):
                return 0.0, UNDECIDED
            if (a_side > 0) != (b_side > 0) and (c_side > 0) != (d_side > 0):
                if crossings == capacity:
                    return 0.0, _GROW
                x, y = _crossing_point(ax, ay, bx, by, cx, cy, dx, dy)
                if not (low_x <= x <= high_x and low_y <= y <= high_y
                        and min(cx, dx) <= x <= max(cx, dx) and min(cy, dy) <= y <= max(cy, dy)):
                    return 0.0, UNDECIDED  # GEOS would move such a point to an endpoint
                crossing_edges[0, crossings] = j
                crossing_edges[1, crossings] = i
                crossing_floats[0, crossings] = a_side / (a_side - b_side)  # how far along the site's edge
                crossing_floats[1, crossings] = c_side / (c_side - d_side)  # and along the piece's
                crossing_floats[2, crossings] = x
                crossing_floats[3, crossings] = y
                crossings += 1

    # the crossings in each ring's order: the site's came edge by edge; the piece's are bucketed
    for c in range(crossings):
        site_order[c] = c
    lo = 0
    while lo < crossings:
        hi = lo + 1
        while hi < crossings and crossing_edges[0, hi] == crossing_edges[0, lo]:
            hi += 1
        _sort_run(site_order, crossing_floats[0], lo, hi)
        lo = hi
    piece_vertices = poff[piece_end] - poff[piece_first]
    if crossings:
        piece_counts[: piece_vertices + 1] = 0
        for c in range(crossings):
            piece_counts[crossing_edges[1, c] - poff[piece_first] + 1] += 1
        for v in range(piece_vertices):
            piece_counts[v + 1] += piece_counts[v]
        for c in range(crossings):
            slot = crossing_edges[1, c] - poff[piece_first]
            piece_order[piece_counts[slot]] = c
            piece_counts[slot] += 1
        lo = 0
        while lo < crossings:
            hi = lo + 1
            while hi < crossings and crossing_edges[1, piece_order[hi]] == crossing_edges[1, piece_order[lo]]:
                hi += 1
            _sort_run(piece_order, crossing_floats[1], lo, hi)
            lo = hi

    # walk every ring, inside or outside the other polygon from its first vertex on
    origin_x, origin_y = sxy[site_start, 0], sxy[site_start, 1]
    total = 0.0
    site_in = False  # the site's exterior starts inside the piece
    any_site_ring_in = False
    k = 0
    for ring in range(site_first, site_end):
        start, end = soff[ring], soff[ring + 1]
        x, y = sxy[start, 0], sxy[start, 1]
        if x < p_min_x or x > p_max_x or y < p_min_y or y > p_max_y:
            placed = 0
        else:
            placed = _inside(x, y, pxy, poff, piece_first, piece_end)
            if placed < 0:
                return 0.0, UNDECIDED
        parts, whole, ends_in, k = _ring_parts(
            sxy, start, end, origin_x, origin_y, placed == 1, site_order[:crossings], k, crossing_edges[0], crossing_floats[2], crossing_floats[3]
        )
        if whole == 0.0 or ends_in != (placed == 1):
            return 0.0, UNDECIDED
        total += parts if (whole > 0) == (ring == site_first) else -parts
        if ring == site_first:
            site_in = placed == 1
        any_site_ring_in = any_site_ring_in or placed == 1
    piece_in = False
    any_piece_ring_in = False
    k = 0
    for ring in range(piece_first, piece_end):
        start, end = poff[ring], poff[ring + 1]
        x, y = pxy[start, 0], pxy[start, 1]
        if x < s_min_x or x > s_max_x or y < s_min_y or y > s_max_y:
            placed = 0
        else:
            placed = _inside(x, y, sxy, soff, site_first, site_end)
            if placed < 0:
                return 0.0, UNDECIDED
        if placed == 1 or (k < crossings and crossing_edges[1, piece_order[k]] < end):
            parts, whole, ends_in, k = _ring_parts(
                pxy, start, end, origin_x, origin_y, placed == 1, piece_order[:crossings], k, crossing_edges[1], crossing_floats[2], crossing_floats[3]
            )
            if whole == 0.0 or ends_in != (placed == 1):
                return 0.0, UNDECIDED
            total += parts if (whole > 0) == (ring == piece_first) else -parts
        if ring == piece_first:
            piece_in = placed == 1
        any_piece_ring_in = any_piece_ring_in or placed == 1
    area = total / 2.0

    if crossings:
        # boundaries crossing properly: each has points inside and outside the other
        return (area, CROSSES) if area > 0 else (0.0, UNDECIDED)
    # boundaries apart: each ring lies wholly inside or wholly outside the other polygon
    if site_in and not any_piece_ring_in:
        return area, SITE_INSIDE
    if piece_in and not any_site_ring_in:
        return area, PIECE_INSIDE
    if site_in or piece_in:
        return area, CROSSES
    return 0.0, DISJOINT


@numba.njit
def _scratch(most_site, most_piece, capacity):
    """The working arrays of :func:`_one_pair` for rings of up to ``most_site`` and ``most_piece`` vertices
    and ``capacity`` crossings: made once per call over all pairs, not once per pair."""
    return (
        np.empty(most_site, np.int64), np.empty(most_piece, np.int64), np.empty((4, most_piece)),
        np.empty((2, capacity), np.int64), np.empty((4, capacity)), np.empty(capacity, np.int64),
        np.empty(capacity, np.int64), np.empty(most_piece + 1, np.int64),
    )


@numba.njit
def _polygon_pair(site_xy, site_ring_offsets, site_first, site_end, piece_xy, piece_ring_offsets, piece_first, piece_end, scratch):
    """:func:`_one_pair` for one site polygon and one piece polygon, the scratch grown (and handed back
    for the next pairs) whenever the pair has more crossings than it holds."""
    while True:
        site_edges, piece_edges, piece_box, crossing_edges, crossing_floats, site_order, piece_order, piece_counts = scratch
        overlap, code = _one_pair(
            site_xy, site_ring_offsets, site_first, site_end, piece_xy, piece_ring_offsets, piece_first, piece_end,
            site_edges, piece_edges, piece_box, crossing_edges, crossing_floats, site_order, piece_order, piece_counts,
        )
        if code != _GROW:
            return overlap, code, scratch
        scratch = _scratch(site_edges.shape[0], piece_edges.shape[0], crossing_edges.shape[1] * 4)


def _signatures():
    signatures = []
    for offsets in (numba.int32[::1], numba.int64[::1]):
        signatures.append(
            numba.void(
                numba.float64[:, ::1], offsets, offsets, numba.float64[:, ::1], offsets, offsets,
                numba.int64[::1], numba.int64[::1], numba.float64[::1], numba.int8[::1],
            )
        )
    return signatures


@compiled(_signatures())
def _pair_overlaps(site_xy, site_ring_offsets, site_rings, piece_xy, piece_ring_offsets, piece_rings, site_of, hits, area, relation):
    """The kernel behind :func:`pair_overlaps`, writing into ``area`` and ``relation``."""
    pairs = site_of.shape[0]
    most_site = 1
    most_piece = 1
    for i in range(pairs):
        s = site_of[i]
        p = hits[i]
        most_site = max(most_site, site_ring_offsets[site_rings[s + 1]] - site_ring_offsets[site_rings[s]])
        most_piece = max(most_piece, piece_ring_offsets[piece_rings[p + 1]] - piece_ring_offsets[piece_rings[p]])
    scratch = _scratch(most_site, most_piece, 64)
    for i in range(pairs):
        s = site_of[i]
        p = hits[i]
        overlap, code, scratch = _polygon_pair(
            site_xy, site_ring_offsets, site_rings[s], site_rings[s + 1],
            piece_xy, piece_ring_offsets, piece_rings[p], piece_rings[p + 1], scratch,
        )
        area[i] = overlap
        relation[i] = code


def pair_overlaps(
    site_xy: np.ndarray,
    site_ring_offsets: np.ndarray,
    site_rings: np.ndarray,
    piece_xy: np.ndarray,
    piece_ring_offsets: np.ndarray,
    piece_rings: np.ndarray,
    site_of: np.ndarray,
    hits: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """How site polygon ``site_of[i]`` meets piece polygon ``hits[i]``, and the area they share, for every i.

    Parameters
    ----------
    site_xy, piece_xy : float64 (n, 2), C-contiguous
        Every ring's vertices, each ring closed (see the module's Layout).
    site_ring_offsets, piece_ring_offsets : int32 or int64 (rings + 1,)
        Where each ring's vertices start in ``*_xy``, and where the last ends.
    site_rings, piece_rings : int32 or int64 (polygons + 1,)
        Where each polygon's rings start (its exterior, then its holes), and where the last ends.
    site_of, hits : integer (k,)
        The pairs: a site polygon's index and a piece polygon's index.

    Returns
    -------
    area : float64 (k,)
        The area the two share, for every decided relation (0 when DISJOINT or UNDECIDED).
    relation : int8 (k,)
        DISJOINT (``not shapely.intersects``), CROSSES (the interiors overlap and neither holds the
        other properly), SITE_INSIDE (``shapely.contains_properly(piece, site)``), PIECE_INSIDE
        (``shapely.contains_properly(site, piece)``), or UNDECIDED: the boundaries touch, run along each
        other, or come within ``NEAR_M`` of doing so, and only GEOS's exact arithmetic can say.
    """
    # the pieces' offsets are the whole layer's: never copied when they are int32 or int64 (the site's follow them)
    offsets = piece_rings.dtype if piece_rings.dtype == piece_ring_offsets.dtype and piece_rings.dtype in (np.int32, np.int64) else np.int64
    site_of = np.ascontiguousarray(site_of, dtype=np.int64)
    hits = np.ascontiguousarray(hits, dtype=np.int64)
    area = np.empty(len(hits))
    relation = np.empty(len(hits), dtype=np.int8)
    _pair_overlaps(
        np.ascontiguousarray(site_xy, dtype=np.float64), np.ascontiguousarray(site_ring_offsets, dtype=offsets), np.ascontiguousarray(site_rings, dtype=offsets),
        np.ascontiguousarray(piece_xy, dtype=np.float64), np.ascontiguousarray(piece_ring_offsets, dtype=offsets), np.ascontiguousarray(piece_rings, dtype=offsets),
        site_of, hits, area, relation,
    )
    return area, relation


@numba.njit
def _point_in_polygon(x, y, xy, ring_offsets, first_ring, end_ring):
    """INTERIOR, DISJOINT or UNDECIDED (on or within NEAR_M of an edge) for the point (x, y) and the
    rings first_ring:end_ring.

    One pass over the edges: an edge whose box, widened by NEAR_M, holds the point is asked its
    orientation, and a point near its line is undecided; so a decided point is on no edge, and the
    count of edges crossed by the ray to +x (each taken half-open in y, so that a vertex at the ray's
    height counts once) is exact. Crossing parity needs no ring structure: the rings of a valid
    multipolygon's parts may be passed together.
    """
    if end_ring <= first_ring:
        return UNDECIDED
    inside = False
    for ring in range(first_ring, end_ring):
        if ring_offsets[ring + 1] - ring_offsets[ring] < 4:
            return UNDECIDED  # not a ring GEOS would build
        for j in range(ring_offsets[ring], ring_offsets[ring + 1] - 1):
            ay = xy[j, 1]
            by = xy[j + 1, 1]
            if y < min(ay, by) - NEAR_M or y > max(ay, by) + NEAR_M:
                continue  # neither near the point nor at the ray's height
            ax = xy[j, 0]
            bx = xy[j + 1, 0]
            spans = (ay > y) != (by > y)
            if x > max(ax, bx) + NEAR_M:
                continue  # wholly left of the point: the ray cannot reach it
            if x < min(ax, bx) - NEAR_M:
                if spans:
                    inside = not inside  # wholly right of the point: the ray crosses it if it spans its height
                continue
            determinant, bound = _orientation(ax, ay, bx, by, x, y)
            if _near(determinant, bound, ax, ay, bx, by):
                return UNDECIDED
            if spans and (determinant > 0) == (by > ay):
                inside = not inside
    return INTERIOR if inside else DISJOINT


def _point_signatures():
    signatures = []
    for offsets in (numba.int32[::1], numba.int64[::1]):
        signatures.append(
            numba.void(numba.float64[:, ::1], offsets, offsets, numba.int64[::1], numba.float64[:, ::1], numba.int64[::1], numba.int8[::1])
        )
    return signatures


@compiled(_point_signatures())
def _points_in_polygons(xy, ring_offsets, polygon_rings, polygon_of, point_xy, point_of, relation):
    """The kernel behind :func:`points_in_polygons`, writing into ``relation``."""
    for i in range(polygon_of.shape[0]):
        p = polygon_of[i]
        q = point_of[i]
        relation[i] = _point_in_polygon(point_xy[q, 0], point_xy[q, 1], xy, ring_offsets, polygon_rings[p], polygon_rings[p + 1])


def points_in_polygons(
    xy: np.ndarray,
    ring_offsets: np.ndarray,
    polygon_rings: np.ndarray,
    polygon_of: np.ndarray,
    point_xy: np.ndarray,
    point_of: np.ndarray,
) -> np.ndarray:
    """Where point ``point_of[i]`` lies against polygon ``polygon_of[i]``, for every i: in its interior,
    outside it, or too near its boundary to say.

    Either side may be the site: point pieces against a site polygon's rings, or an address (point)
    site against polygon pieces, each array indexed in place (nothing is gathered per pair).

    Parameters
    ----------
    xy, ring_offsets, polygon_rings
        The polygons in the module's Layout. A polygon's rings may also be every ring of a valid
        multipolygon's parts (``polygon_rings`` spanning them), as the count of crossings is all
        that is asked of them.
    polygon_of, point_of : integer (k,)
        The pairs: a polygon's index and a point's index.
    point_xy : float64 (m, 2)
        The points' coordinates.

    Returns
    -------
    relation : int8 (k,)
        INTERIOR (``shapely.intersects`` and not ``shapely.touches``: the point is in the interior),
        DISJOINT (``not shapely.intersects``), or UNDECIDED: the point is on the boundary, or within
        ``NEAR_M`` of it, and GEOS must say whether it touches.

    Examples
    --------
    >>> import shapely
    >>> frame = shapely.Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(4, 4), (6, 4), (6, 6), (4, 6)]])
    >>> _, xy, (ring_offsets, polygon_rings) = shapely.to_ragged_array([frame])
    >>> points = np.array([(2.0, 2.0), (5.0, 5.0), (12.0, 5.0), (10.0, 3.0), (6.0, 6.0), (2.0, 1e-7)])
    >>> points_in_polygons(xy, ring_offsets, polygon_rings, np.zeros(6, np.int64), points, np.arange(6)).tolist()
    [4, 0, 0, -1, -1, -1]

    The point in the hole is outside; those on an edge, on a vertex, and a tenth of a micron from an
    edge are GEOS's to decide.
    """
    offsets = polygon_rings.dtype if polygon_rings.dtype == ring_offsets.dtype and polygon_rings.dtype in (np.int32, np.int64) else np.int64
    relation = np.empty(len(polygon_of), dtype=np.int8)
    _points_in_polygons(
        np.ascontiguousarray(xy, dtype=np.float64), np.ascontiguousarray(ring_offsets, dtype=offsets), np.ascontiguousarray(polygon_rings, dtype=offsets),
        np.ascontiguousarray(polygon_of, dtype=np.int64), np.ascontiguousarray(point_xy, dtype=np.float64).reshape(-1, 2),
        np.ascontiguousarray(point_of, dtype=np.int64), relation,
    )
    return relation


def _site_pair_signatures():
    signatures = []
    ids = numba.int64[::1]
    for offsets in (numba.int32[::1], numba.int64[::1]):
        signatures.append(
            numba.void(
                numba.float64[:, ::1], ids, ids, ids, ids, ids, numba.float64[:, ::1], numba.float64[::1],
                numba.float64[:, ::1], offsets, offsets, numba.float64[:, ::1], numba.int8[::1], ids, numba.boolean[::1], numba.float64[::1],
                ids, ids, numba.float64[::1], numba.int8[::1],
            )
        )
    return signatures


@numba.njit
def ring_area(ring):
    """The area of the polygon of one closed ring (float64 (n, 2)), as GEOS works it out (``shapely.area``):
    its shoelace sum about the first vertex's x, in the same order, so the very same double."""
    n = ring.shape[0]
    if n < 3:
        return 0.0
    total = 0.0
    x0 = ring[0, 0]
    for i in range(1, n - 1):
        total += (ring[i, 0] - x0) * (ring[i - 1, 1] - ring[i + 1, 1])
    return abs(total / 2.0)


@numba.njit
def site_pairs_into(
    site_xy, site_ring_offsets, site_rings, site_polygon, site_area_of, site_area_rings, site_point_xy, site_area,
    piece_xy, piece_ring_offsets, piece_rings, piece_point_xy, piece_kind, piece_slot, piece_valid, piece_area,
    site_of, hits, area, relation,
):
    """:func:`site_pairs`' work, writing into ``area`` and ``relation``: the one body of the compiled
    calls that decide site-piece pairs (``_site_pairs``, and the check's whole matching in one call)."""
    pairs = site_of.shape[0]
    most_site = 1
    most_piece = 1
    for i in range(pairs):
        s = site_of[i]
        p = hits[i]
        if site_polygon[s] >= 0 and piece_kind[p] == POLYGON_PIECE:
            q = site_polygon[s]
            r = piece_slot[p]
            most_site = max(most_site, site_ring_offsets[site_rings[q + 1]] - site_ring_offsets[site_rings[q]])
            most_piece = max(most_piece, piece_ring_offsets[piece_rings[r + 1]] - piece_ring_offsets[piece_rings[r]])
    scratch = _scratch(most_site, most_piece, 64)
    for i in range(pairs):
        s = site_of[i]
        p = hits[i]
        kind = piece_kind[p]
        r = piece_slot[p]
        area[i] = 0.0
        relation[i] = UNDECIDED
        if site_area[s] > 0:  # an area site
            if kind == POLYGON_PIECE and piece_valid[p] and piece_area[p] > 0 and site_polygon[s] >= 0:
                q = site_polygon[s]
                overlap, code, scratch = _polygon_pair(
                    site_xy, site_ring_offsets, site_rings[q], site_rings[q + 1],
                    piece_xy, piece_ring_offsets, piece_rings[r], piece_rings[r + 1], scratch,
                )
                relation[i] = code
                if code == CROSSES:
                    area[i] = overlap
                elif code == PIECE_INSIDE:
                    area[i] = piece_area[p]
                elif code == SITE_INSIDE:
                    area[i] = site_area[s]
            elif kind == POINT_PIECE and site_area_of[s] >= 0:
                a = site_area_of[s]
                relation[i] = _point_in_polygon(piece_point_xy[r, 0], piece_point_xy[r, 1], site_xy, site_ring_offsets,
                                                site_area_rings[a], site_area_rings[a + 1])
        elif kind == POLYGON_PIECE and piece_valid[p] and not np.isnan(site_point_xy[s, 0]):  # an address site
            relation[i] = _point_in_polygon(site_point_xy[s, 0], site_point_xy[s, 1], piece_xy, piece_ring_offsets, piece_rings[r], piece_rings[r + 1])


@compiled(_site_pair_signatures())
def _site_pairs(
    site_xy, site_ring_offsets, site_rings, site_polygon, site_area_of, site_area_rings, site_point_xy, site_area,
    piece_xy, piece_ring_offsets, piece_rings, piece_point_xy, piece_kind, piece_slot, piece_valid, piece_area,
    site_of, hits, area, relation,
):
    """The kernel behind :func:`site_pairs`, writing into ``area`` and ``relation``."""
    site_pairs_into(
        site_xy, site_ring_offsets, site_rings, site_polygon, site_area_of, site_area_rings, site_point_xy, site_area,
        piece_xy, piece_ring_offsets, piece_rings, piece_point_xy, piece_kind, piece_slot, piece_valid, piece_area,
        site_of, hits, area, relation,
    )


def piece_offsets(store) -> tuple[np.ndarray, np.ndarray]:
    """The store's ring and polygon offsets as the kernels take them: as they are when both are int32
    or both int64 (never copied), else as int64."""
    same = store.polygon_offsets.dtype == store.ring_offsets.dtype and store.ring_offsets.dtype in (np.int32, np.int64)
    offsets = store.ring_offsets.dtype if same else np.int64
    return np.ascontiguousarray(store.ring_offsets, dtype=offsets), np.ascontiguousarray(store.polygon_offsets, dtype=offsets)


def site_pairs(
    site_xy: np.ndarray,
    site_ring_offsets: np.ndarray,
    site_rings: np.ndarray,
    site_polygon: np.ndarray,
    site_area_of: np.ndarray,
    site_area_rings: np.ndarray,
    site_point_xy: np.ndarray,
    site_area: np.ndarray,
    store,
    site_of: np.ndarray,
    hits: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """How each site meets each of its candidate pieces, in one compiled call whatever the pieces are:
    :func:`pair_overlaps` for an area site and a valid polygon piece of some area, a point's place
    (as :func:`points_in_polygons`) for an area site and a point piece, or an address site and a
    valid polygon piece; UNDECIDED for every other pair (lines, the rest), left to GEOS.

    Parameters
    ----------
    site_xy, site_ring_offsets, site_rings : the sites' polygons in the module's Layout (int64 offsets).
    site_polygon : int64 (sites,)
        Per site: its polygon in ``site_rings`` when it is a single polygon, else -1 (not asked of pair_overlaps).
    site_area_of, site_area_rings : int64
        Per site: its place in ``site_area_rings`` (where its rings, all its parts', start and end) when
        it is polygonal, else -1.
    site_point_xy : float64 (sites, 2)
        Per site: its coordinates when it is an address (point), NaN otherwise.
    site_area : float64 (sites,)
        Per site: its area (> 0 for an area site).
    store : constraints.pieces.PieceStore
        The pieces, indexed in place by ``hits``.
    site_of, hits : int64 (k,)
        The pairs: a site and a piece.

    Returns
    -------
    area : float64 (k,)
        The area the site and piece share where decided (the piece's or the site's own area when one
        holds the other properly, as GEOS gave them); 0 otherwise.
    relation : int8 (k,)
        pair_overlaps' code for polygon pairs, INTERIOR or DISJOINT for a decided point, UNDECIDED else.
    """
    ring_offsets, polygon_offsets = piece_offsets(store)
    area = np.empty(len(hits))
    relation = np.empty(len(hits), dtype=np.int8)
    _site_pairs(
        site_xy, site_ring_offsets, site_rings, site_polygon, site_area_of, site_area_rings, site_point_xy, site_area,
        store.xy, ring_offsets, polygon_offsets,
        store.point_xy, store.kind, np.ascontiguousarray(store.slot, dtype=np.int64), store.valid, store.area,
        site_of, hits, area, relation,
    )
    return area, relation
