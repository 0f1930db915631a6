"""The compiled overlap kernels give GEOS's relation (and area) for every pair they decide, and leave to GEOS
every pair whose answer hinges on exact arithmetic (boundaries that touch, share lines, or nearly do; a
point on or next to a polygon's boundary)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from constraints.polygon_overlay import (
    CROSSES,
    DISJOINT,
    INTERIOR,
    NEAR_M,
    PIECE_INSIDE,
    SITE_INSIDE,
    UNDECIDED,
    pair_overlaps,
    points_in_polygons,
    ring_area,
    site_pairs,
)

TOUCHING = -9  # GEOS: they meet, but share no area (a code the kernel never gives)
ORIGIN = np.array([412_345.678, 287_654.321])  # National Grid magnitudes, where doubles are 6e-11 m apart


def geos_relation(site, piece) -> np.ndarray:
    """The relation code GEOS's predicates give, pair by pair."""
    code = np.full(len(site), CROSSES, dtype=np.int64)
    meets = shapely.intersects(site, piece)
    code[~meets] = DISJOINT
    shared = shapely.area(shapely.intersection(site, piece))
    code[meets & (shared == 0)] = TOUCHING
    code[shapely.contains_properly(piece, site)] = SITE_INSIDE
    code[shapely.contains_properly(site, piece)] = PIECE_INSIDE
    return code


def kernel(sites, pieces, site_of, hits, offsets=np.int64):
    _, site_xy, (site_ring_offsets, site_rings) = shapely.to_ragged_array(sites)
    _, piece_xy, (piece_ring_offsets, piece_rings) = shapely.to_ragged_array(pieces)
    return pair_overlaps(
        site_xy, site_ring_offsets.astype(offsets), site_rings.astype(offsets),
        piece_xy, piece_ring_offsets.astype(offsets), piece_rings.astype(offsets), site_of, hits,
    )


def one_by_one(sites, pieces):
    """The kernel over pairs (sites[i], pieces[i])."""
    n = len(sites)
    return kernel(sites, pieces, np.arange(n), np.arange(n))


def star(rng, centre, radius, vertices, holes=0, clockwise=False):
    """A random star-shaped polygon about ``centre``: radii in [0.7, 1] x radius; each hole a smaller
    star about a point near the centre, inside the exterior's inner radius."""
    def ring(middle, low, high, count):
        step = 2 * np.pi / count
        angle = np.arange(count) * step + rng.uniform(-0.4, 0.4, count) * step
        r = rng.uniform(low, high, count)
        xy = middle + np.c_[r * np.cos(angle), r * np.sin(angle)]
        return np.r_[xy, xy[:1]]

    shell = ring(centre, 0.7 * radius, radius, vertices)
    inner = []
    for h in range(holes):  # holes side by side along x, so they never meet one another
        middle = centre + np.array([(h - (holes - 1) / 2) * 0.9 * radius / max(holes, 1), 0.0])
        inner.append(ring(middle, 0.15 * radius / max(holes, 1), 0.4 * radius / max(holes, 1), max(4, vertices // 3)))
    polygon = shapely.Polygon(shell, inner)
    polygon = shapely.orient_polygons(polygon, exterior_cw=clockwise)
    return polygon


def random_pairs(rng, count):
    """Sites and pieces of different sizes and vertex counts, holes or none, either winding, at offsets
    from nothing to beyond touching, so that every relation occurs."""
    sites, pieces = [], []
    while len(sites) < count:
        site_radius = rng.uniform(10, 120)
        piece_radius = site_radius * np.exp(rng.uniform(-2.5, 2.5))
        centre = ORIGIN + rng.uniform(-5000, 5000, 2)
        reach = (site_radius + piece_radius) * rng.uniform(0, 1.2)
        direction = rng.uniform(0, 2 * np.pi)
        offset = reach * np.array([np.cos(direction), np.sin(direction)])
        site = star(rng, centre, site_radius, int(rng.integers(4, 40)), int(rng.integers(0, 3) == 0), bool(rng.integers(2)))
        piece = star(rng, centre + offset, piece_radius, int(rng.integers(4, 120)), int(rng.integers(0, 4)), bool(rng.integers(2)))
        if shapely.is_valid(site) and shapely.is_valid(piece):
            sites.append(site)
            pieces.append(piece)
    return np.array(sites), np.array(pieces)


def assert_agrees(sites, pieces, area, relation):
    """Every decided pair has GEOS's relation and GEOS's area."""
    decided = relation != UNDECIDED
    expected = geos_relation(sites[decided], pieces[decided])
    assert (relation[decided] == expected).all(), np.flatnonzero(decided)[relation[decided] != expected]
    shared = shapely.area(shapely.intersection(sites[decided], pieces[decided]))
    assert area[decided] == pytest.approx(shared, rel=1e-9, abs=1e-9)


def test_random_pairs_agree_with_geos_and_are_almost_all_decided():
    rng = np.random.default_rng(17)
    sites, pieces = random_pairs(rng, 4000)
    area, relation = one_by_one(sites, pieces)
    assert_agrees(sites, pieces, area, relation)
    counts = {code: int((relation == code).sum()) for code in (DISJOINT, CROSSES, SITE_INSIDE, PIECE_INSIDE, UNDECIDED)}
    assert min(counts[code] for code in (DISJOINT, CROSSES, SITE_INSIDE, PIECE_INSIDE)) >= 100, counts
    assert counts[UNDECIDED] <= 0.002 * len(sites), counts


def test_many_sites_and_pieces_in_one_call_follow_the_pairs():
    """Pairs index into shared site and piece arrays, in any order, each piece met by several sites."""
    rng = np.random.default_rng(5)
    sites, pieces = random_pairs(rng, 300)
    site_of = rng.integers(0, len(sites), 3000)
    hits = np.where(rng.random(3000) < 0.5, site_of, rng.integers(0, len(pieces), 3000))
    area, relation = kernel(sites, pieces, site_of, hits)
    assert_agrees(sites[site_of], pieces[hits], area, relation)
    assert (relation[site_of != hits] == DISJOINT).mean() > 0.5  # random pairings are mostly far apart
    same_area, same_relation = kernel(sites, pieces, site_of, hits, offsets=np.int32)
    assert (same_relation == relation).all() and (same_area == area).all()


def test_winding_does_not_matter():
    rng = np.random.default_rng(8)
    sites, pieces = random_pairs(rng, 500)
    area, relation = one_by_one(sites, pieces)
    flipped = one_by_one(shapely.orient_polygons(sites, exterior_cw=True), shapely.orient_polygons(pieces, exterior_cw=False))
    reversed_both = one_by_one(shapely.reverse(sites), shapely.reverse(pieces))
    for other_area, other_relation in (flipped, reversed_both):
        assert (other_relation == relation).all()
        assert other_area == pytest.approx(area, rel=1e-12, abs=1e-9)


def test_pieces_cut_along_grid_lines_agree_with_geos():
    """The index's pieces are layers cut along vertical and horizontal lines: axis-parallel edges, which
    cross a site's (some of them axis-parallel too) at points with one exact coordinate."""
    rng = np.random.default_rng(23)
    sites, pieces = random_pairs(rng, 1500)
    low = np.array([shapely.bounds(piece)[:2] for piece in pieces])
    high = np.array([shapely.bounds(piece)[2:] for piece in pieces])
    cut = low + (high - low) * rng.uniform(0.2, 0.8, (len(pieces), 2))
    quadrant = rng.integers(0, 4, len(pieces))
    x0 = np.where(quadrant % 2 == 0, low[:, 0] - 1, cut[:, 0])
    x1 = np.where(quadrant % 2 == 0, cut[:, 0], high[:, 0] + 1)
    y0 = np.where(quadrant < 2, low[:, 1] - 1, cut[:, 1])
    y1 = np.where(quadrant < 2, cut[:, 1], high[:, 1] + 1)
    cut_pieces = np.array([shapely.clip_by_rect(*args) for args in zip(pieces, x0, y0, x1, y1, strict=True)])
    site_box = shapely.bounds(sites)
    rectangles = shapely.box(site_box[:, 0] + 3, site_box[:, 1] + 3, site_box[:, 2] - 3, site_box[:, 3] - 3)
    for these_sites in (sites, rectangles):
        keep = (shapely.get_type_id(cut_pieces) == 3) & shapely.is_valid(these_sites)
        area, relation = one_by_one(these_sites[keep], cut_pieces[keep])
        assert_agrees(these_sites[keep], cut_pieces[keep], area, relation)
        assert (relation == CROSSES).sum() > 200
        assert (relation == UNDECIDED).mean() <= 0.002


def test_boundaries_crossing_hundreds_of_times():
    """Two fine-toothed stars about one centre cross on most of their edges: far more crossings than
    the kernel first makes room for."""
    angle = np.linspace(0, 2 * np.pi, 401)[:-1]
    teeth = np.where(np.arange(400) % 2 == 0, 100.0, 80.0)
    site = shapely.Polygon(ORIGIN + np.c_[teeth * np.cos(angle), teeth * np.sin(angle)])
    turned = angle + np.pi / 400
    piece = shapely.Polygon(ORIGIN + np.c_[teeth * np.cos(turned), teeth * np.sin(turned)])
    area, relation = one_by_one(np.array([site, site]), np.array([piece, shapely.buffer(site, 1.0)]))
    assert relation.tolist() == [CROSSES, SITE_INSIDE]
    assert area[0] == pytest.approx(shapely.intersection(site, piece).area, rel=1e-12)
    assert shapely.get_num_coordinates(shapely.intersection(site, piece)) > 400


def box(x0, y0, x1, y1, holes=()):
    shell = ORIGIN + np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)])
    return shapely.Polygon(shell, [ORIGIN + np.array([(a, b), (c, b), (c, d), (a, d), (a, b)]) for a, b, c, d in holes])


def diamond(x, y, r):
    return shapely.Polygon(ORIGIN + np.array([(x - r, y), (x, y - r), (x + r, y), (x, y + r), (x - r, y)]))


SITE = box(0, 0, 10, 10)
DEGENERATE = {  # pieces whose boundary touches the site's, or runs along it, on exactly representable points
    "shared edge outside": box(10, 0, 20, 10),
    "shared part of an edge, overlapping": box(5, 2, 10, 8),
    "collinear edge overlapping past the corner": box(5, -3, 15, 0),
    "shared edge, covering the site": box(0, 0, 10, 20),
    "vertex on an edge from outside": diamond(12, 5, 2),
    "vertex on an edge from inside": diamond(8, 5, 2),
    "vertex on an edge, crossing elsewhere": shapely.Polygon(ORIGIN + np.array([(10, 5), (4, 12), (4, -2), (10, 5)])),
    "touching corners": box(10, 10, 20, 20),
    "corner on an edge": diamond(5, 12, 2),
    "identical": box(0, 0, 10, 10),
    "identical, other start vertex": shapely.Polygon(ORIGIN + np.array([(10, 10), (0, 10), (0, 0), (10, 0), (10, 10)])),
    "the site filling the piece's hole": box(-5, -5, 15, 15, holes=[(0, 0, 10, 10)]),
    "the site touching the rim of the piece's hole": box(-5, -5, 15, 15, holes=[(0, -1, 11, 11)]),
    "the site's corner on a diagonal edge": shapely.Polygon(ORIGIN + np.array([(5, 15), (15, 5), (20, 20), (5, 15)])),
    "a vertex a nanometre outside an edge": shapely.Polygon(
        ORIGIN + np.array([(10 + 1e-9, 5), (14, 2), (14, 12), (5, 12), (5, 11), (13, 11), (13, 6), (10 + 1e-9, 5)])
    ),
    "a vertex a nanometre inside an edge": shapely.Polygon(ORIGIN + np.array([(10 - 1e-9, 5), (14, 2), (14, 8), (10 - 1e-9, 5)])),
}


@pytest.mark.parametrize("name", DEGENERATE)
def test_touching_and_shared_boundaries_are_left_to_geos(name):
    piece = DEGENERATE[name]
    area, relation = one_by_one(np.array([SITE, piece]), np.array([piece, SITE]))  # as site and as piece
    assert relation.tolist() == [UNDECIDED, UNDECIDED]


def test_the_degenerate_families_are_degenerate_to_geos_too():
    """Guards the family above: each piece really touches or nearly touches the site (GEOS finds them
    within a micron), so undecided is the kernel staying out of GEOS's way, not a weakness."""
    pieces = np.array(list(DEGENERATE.values()))
    assert (shapely.distance(shapely.boundary(pieces), SITE.boundary) <= 1e-6).all()


HOLES = {  # (site, piece, relation): holes that the boundaries stay clear of
    "the site inside the piece's hole": (SITE, box(-5, -5, 15, 15, holes=[(-1, -1, 11, 11)]), DISJOINT),
    "the piece's hole inside the site": (SITE, box(-5, -5, 15, 15, holes=[(2, 2, 8, 8)]), CROSSES),
    "the piece's hole straddling the site's edge": (SITE, box(-5, -5, 15, 15, holes=[(8, 2, 12, 8)]), CROSSES),
    "the piece inside the site's hole": (box(0, 0, 10, 10, holes=[(2, 2, 8, 8)]), box(3, 3, 7, 7), DISJOINT),
    "the piece around the site's hole": (box(0, 0, 10, 10, holes=[(4, 4, 6, 6)]), box(3, 3, 7, 7), CROSSES),
    "the piece inside the site, beside its hole": (box(0, 0, 10, 10, holes=[(4, 4, 6, 6)]), box(7, 7, 9, 9), PIECE_INSIDE),
    "the site's hole holding the piece's hole": (box(0, 0, 10, 10, holes=[(2, 2, 8, 8)]), box(-1, -1, 11, 11, holes=[(3, 3, 7, 7)]), SITE_INSIDE),
    "a site beside the piece's hole": (box(1, 1, 3, 3), box(0, 0, 10, 10, holes=[(4, 4, 6, 6)]), SITE_INSIDE),
}


@pytest.mark.parametrize("name", HOLES)
def test_holes_clear_of_the_other_boundary_are_decided(name):
    site, piece, expected = HOLES[name]
    area, relation = one_by_one(np.array([site]), np.array([piece]))
    assert relation.tolist() == [expected]
    assert_agrees(np.array([site]), np.array([piece]), area, relation)


def test_near_misses_beyond_the_tolerance_are_decided():
    """A micron is the kernel's margin: a millimetre apart, GEOS's answer does not depend on rounding
    (nor a nanometre apart when the boxes already are)."""
    gaps = [box(10 + 1e-9, 0, 20, 10), box(10.001, 0, 20, 10), box(9.999, 2, 20, 8), box(10.001, 10.001, 20, 20), diamond(12.001, 5, 2), diamond(7.999, 5, 2)]
    sites = np.array([SITE] * len(gaps))
    area, relation = one_by_one(sites, np.array(gaps))
    assert (relation != UNDECIDED).all()
    assert_agrees(sites, np.array(gaps), area, relation)


# -- points against polygons ------------------------------------------------------------------------


def geos_point_relation(polygons, points) -> np.ndarray:
    """INTERIOR, DISJOINT, or TOUCHING (on the boundary) as GEOS's predicates say, pair by pair."""
    code = np.full(len(points), DISJOINT, dtype=np.int64)
    meets = shapely.intersects(polygons, points)
    code[meets] = INTERIOR
    code[meets & shapely.touches(polygons, points)] = TOUCHING
    return code


def points_kernel(polygons, points, polygon_of, point_of, offsets=np.int64):
    _, xy, (ring_offsets, polygon_rings) = shapely.to_ragged_array(polygons)
    return points_in_polygons(xy, ring_offsets.astype(offsets), polygon_rings.astype(offsets), polygon_of, shapely.get_coordinates(points), point_of)


def points_around(rng, polygon, count):
    """Points anywhere in and around the polygon's box, and as many near its edges: on the edge's line
    a random way along it, then moved off it across the edge by a millimetre to a nanometre."""
    x0, y0, x1, y1 = polygon.bounds
    spread = rng.uniform([x0 - 0.2 * (x1 - x0), y0 - 0.2 * (y1 - y0)], [x1 + 0.2 * (x1 - x0), y1 + 0.2 * (y1 - y0)], (count, 2))
    xy = shapely.get_coordinates(shapely.get_rings(polygon))
    edges = rng.integers(0, len(xy) - 1, count)
    a, b = xy[edges], xy[edges + 1]
    along = a + (b - a) * rng.uniform(0, 1, (count, 1))
    normal = np.c_[a[:, 1] - b[:, 1], b[:, 0] - a[:, 0]] / np.hypot(*(b - a).T)[:, None]
    away = 10.0 ** rng.uniform(-9, -3, (count, 1)) * rng.choice([-1.0, 1.0], (count, 1))
    return shapely.points(np.r_[spread, along + normal * away])


def test_random_points_agree_with_geos_wherever_decided():
    """Star polygons with holes and either winding, points everywhere around them and a millimetre or
    less from their edges: every decided point is where GEOS puts it, and only those nearer than the
    margin (or exactly on the boundary) are left to GEOS."""
    rng = np.random.default_rng(31)
    polygons, points = [], []
    while len(polygons) < 150 * 80:
        polygon = star(rng, ORIGIN + rng.uniform(-5000, 5000, 2), rng.uniform(5, 200), int(rng.integers(4, 200)), int(rng.integers(0, 4)), bool(rng.integers(2)))
        if shapely.is_valid(polygon):
            polygons += [polygon] * 80
            points += list(points_around(rng, polygon, 40))
    polygons, points = np.array(polygons), np.array(points)
    relation = points_kernel(polygons, points, np.arange(len(points)), np.arange(len(points)))
    expected = geos_point_relation(polygons, points)
    decided = relation != UNDECIDED
    assert (relation[decided] == expected[decided]).all(), np.flatnonzero(decided & (relation != expected))[:10]
    distance = shapely.distance(shapely.boundary(polygons), points)
    assert (distance[~decided] <= 1.5 * NEAR_M).all()  # undecided only within the margin (sqrt 2 of the L1 length)
    assert (relation[distance > 1.5 * NEAR_M] != UNDECIDED).all()
    assert min((relation == INTERIOR).sum(), (relation == DISJOINT).sum(), (~decided).sum()) > 1000


def test_points_on_edges_and_vertices_are_left_to_geos():
    """Exactly on the boundary (vertices, points of axis-parallel and diagonal edges, of a hole's rim),
    GEOS says the point touches: the kernel never decides them."""
    rng = np.random.default_rng(4)
    frame = box(0, 0, 10, 10, holes=[(3, 3, 6, 6)])
    slant = shapely.Polygon(ORIGIN + np.array([(0, 0), (8, 8), (0, 16), (0, 0)]))
    stars = [s for s in (star(rng, ORIGIN, 50, 30, 2) for _ in range(20)) if shapely.is_valid(s)]
    polygons = [frame] * 6 + [slant] * 4
    on = [(0, 5), (10, 0), (7.5, 10), (3, 4.25), (6, 6), (4.5, 3), (0, 7), (4, 4), (6, 10), (8, 8)]
    points = [shapely.Point(ORIGIN + xy) for xy in on]
    for polygon in stars:  # every vertex of every ring
        vertices = shapely.get_coordinates(shapely.get_rings(polygon))
        polygons += [polygon] * len(vertices)
        points += list(shapely.points(vertices))
    polygons, points = np.array(polygons), np.array(points)
    assert (geos_point_relation(polygons, points) == TOUCHING).all()
    assert (points_kernel(polygons, points, np.arange(len(points)), np.arange(len(points))) == UNDECIDED).all()


def test_points_just_clear_of_the_margin_are_decided():
    """A millimetre in, a millimetre out, inside the hole, beside a vertex at the ray's height: decided."""
    frame = box(0, 0, 10, 10, holes=[(3, 3, 6, 6)])
    spots = [(5, 0.001), (5, -0.001), (10.001, 3), (9.999, 5), (4.5, 4.5), (4.5, 2.999), (-1, 3), (-1, 10), (-1, 0), (2, 6)]
    points = np.array([shapely.Point(ORIGIN + xy) for xy in spots])
    relation = points_kernel(np.array([frame]), points, np.zeros(len(points), np.int64), np.arange(len(points)))
    assert (relation != UNDECIDED).all()
    assert (relation == geos_point_relation(np.array([frame] * len(points)), points)).all()


def test_points_and_polygons_are_paired_in_place_either_way_round():
    """Many points against few polygons (point pieces against a site) and one point against many polygons
    (an address against polygon pieces) index the arrays as they are; int32 offsets answer the same."""
    rng = np.random.default_rng(12)
    polygons = np.array([s for s in (star(rng, ORIGIN + rng.uniform(-300, 300, 2), 100, 40, 1) for _ in range(30)) if shapely.is_valid(s)])
    points = shapely.points(ORIGIN + rng.uniform(-400, 400, (500, 2)))
    polygon_of = rng.integers(0, len(polygons), 5000)
    point_of = rng.integers(0, len(points), 5000)
    relation = points_kernel(polygons, points, polygon_of, point_of)
    expected = geos_point_relation(polygons[polygon_of], points[point_of])
    assert (relation == expected).all() and (relation == INTERIOR).sum() > 100
    assert (points_kernel(polygons, points, polygon_of, point_of, offsets=np.int32) == relation).all()
    address = np.zeros(len(polygons), np.int64)
    assert (points_kernel(polygons, points[:1], np.arange(len(polygons)), address) == geos_point_relation(polygons, np.full(len(polygons), points[0]))).all()


def test_a_multipolygons_rings_are_taken_together():
    """The parts of a multi-part site passed as one polygon (their rings together) answer as the multipolygon."""
    rng = np.random.default_rng(9)
    parts = [star(rng, ORIGIN + (dx, 0), 40, 25, 1) for dx in (0, 100, 200)]
    site = shapely.MultiPolygon(parts)
    assert site.is_valid
    _, xy, (ring_offsets, _polygon_rings, _parts) = shapely.to_ragged_array([site])
    points = shapely.points(ORIGIN + rng.uniform([-50, -50], [250, 50], (2000, 2)))
    relation = points_in_polygons(xy, ring_offsets, np.array([0, len(ring_offsets) - 1]), np.zeros(len(points), np.int64), shapely.get_coordinates(points), np.arange(len(points)))
    assert (relation == geos_point_relation(np.full(len(points), site), points)).all()
    assert (relation == INTERIOR).sum() > 300


def test_site_pairs_answers_each_kind_of_pair_as_its_own_kernel_does():
    """One call over sites of every kind (polygons, a multipolygon, addresses) and pieces of every kind
    (polygons, points, lines, an invalid polygon) gives, pair by pair, what pair_overlaps says of two
    polygons (the shared area, or the piece's or the site's own area when one holds the other), what
    points_in_polygons says of a point against a polygon either way round, and UNDECIDED for the rest."""
    from constraints.pieces import PieceStore

    rng = np.random.default_rng(5)
    polygons, _ = random_pairs(rng, 60)
    bowtie = shapely.transform(shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)]), lambda xy: xy + ORIGIN)  # crosses itself
    centre = shapely.centroid(polygons[0])
    pieces = np.array(list(polygons[:40]) + list(points_around(rng, polygons[0], 10)) + [shapely.LineString([centre, shapely.Point(centre.x + 50, centre.y)]),
                      bowtie])
    store = PieceStore.from_geometries(pieces)
    assert not store.valid[-1]
    multi = shapely.MultiPolygon([polygons[41], shapely.transform(polygons[41], lambda xy: xy + 1000.0)])
    assert shapely.is_valid(multi)
    sites = np.array([polygons[0], polygons[40], multi, centre, shapely.Point(shapely.get_coordinates(polygons[1])[0])], dtype=object)
    site_of, hits = np.repeat(np.arange(len(sites)), len(pieces)), np.tile(np.arange(len(pieces)), len(sites))

    type_id = shapely.get_type_id(sites)
    polygonal = type_id >= 3
    parts, part_of = shapely.get_parts(sites[polygonal], return_index=True)
    _, xy, (ring_offsets, part_rings) = shapely.to_ragged_array(parts)
    first_part = np.searchsorted(part_of, np.arange(polygonal.sum() + 1))
    area_of = np.full(len(sites), -1)
    area_of[polygonal] = np.arange(polygonal.sum())
    polygon = np.full(len(sites), -1)
    polygon[np.flatnonzero(polygonal)[type_id[polygonal] == 3]] = first_part[:-1][type_id[polygonal] == 3]
    point_xy = np.full((len(sites), 2), np.nan)
    point_xy[~polygonal] = shapely.get_coordinates(sites[~polygonal])
    site_area = shapely.area(sites)
    area, relation = site_pairs(xy, ring_offsets.astype(np.int64), part_rings.astype(np.int64), polygon.astype(np.int64), area_of.astype(np.int64),
                                part_rings[first_part].astype(np.int64), point_xy, site_area, store, site_of, hits)

    for i, (s, p) in enumerate(zip(site_of.tolist(), hits.tolist(), strict=True)):
        site, piece = sites[s], pieces[p]
        expected_area, expected = 0.0, UNDECIDED
        if polygon[s] >= 0 and p < 40:
            (expected_area,), (expected,) = kernel(np.array([site]), np.array([piece]), np.zeros(1, np.int64), np.zeros(1, np.int64))
            expected_area = {PIECE_INSIDE: store.area[p], SITE_INSIDE: site_area[s], CROSSES: expected_area}.get(expected, 0.0)
        elif polygonal[s] and 40 <= p < 60:  # points_around gives twice the count; a multipolygon's rings all together
            _, site_xy, (site_rings, *_) = shapely.to_ragged_array([site])
            (expected,) = points_in_polygons(site_xy, site_rings, np.array([0, len(site_rings) - 1]), np.zeros(1, np.int64),
                                             shapely.get_coordinates(piece), np.zeros(1, np.int64))
        elif not polygonal[s] and p < 40:
            (expected,) = points_kernel(np.array([piece]), np.array([site]), np.zeros(1, np.int64), np.zeros(1, np.int64))
        assert (relation[i], area[i]) == (expected, expected_area), (s, p)
    assert {DISJOINT, INTERIOR, UNDECIDED} <= set(relation.tolist())
    assert (relation[hits >= 60] == UNDECIDED).all()  # the line and the invalid polygon are GEOS's


def test_ring_area_is_the_very_double_geos_gives_for_the_polygon_of_that_ring():
    """The one-call matching of a site works its area out from its ring; that must be shapely.area's double,
    whichever way the ring winds and however many vertices it has."""
    rng = np.random.default_rng(11)
    for k in range(3000):
        n = int(rng.integers(3, 80))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(0.5, 400, n)
        ring = ORIGIN + rng.uniform(-1e5, 1e5, 2) + np.column_stack([radius * np.cos(angles), radius * np.sin(angles)])
        polygon = shapely.Polygon(ring[::-1] if k % 2 else ring)
        assert ring_area(np.ascontiguousarray(shapely.get_coordinates(polygon.exterior))) == polygon.area
