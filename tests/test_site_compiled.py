"""The compiled read of a simple site's ring (``datasets.ring_compiled``) and the geodesic area of a ring.

The quick path of ``parse_site`` trusts them for a site's turn, validity and centroid, so each is held
to GEOS (and pyproj) here, on rings drawn at random and on the degenerate ones that decide validity:
vertices on edges, spikes, rings touching themselves, collinear runs, crossings.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely

from constraints import site as site_module
from constraints.site import SiteError, parse_site
from datasets.crs import (
    RING_CLOCKWISE,
    RING_HAND_BACK,
    RING_UNSURE,
    WGS84,
    lonlat_points_to_bng,
    read_ring,
    read_site_ring,
    read_site_rings,
    ring_area_perimeter,
    rings_area_perimeter,
)


def _closed(points) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return np.ascontiguousarray(np.vstack([points, points[:1]]))


def _random_rings(rng, count: int) -> list[np.ndarray]:
    """Grid rings: star-shaped ones (simple, in either direction), and rings of points in random order
    on a small lattice (crossing, touching, folding back and running collinear)."""
    rings = []
    for _ in range(count):
        centre = rng.uniform([300_000, 100_000], [600_000, 600_000])
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 60)))
        radius = rng.uniform(5, 300) * rng.uniform(0.3, 1.0, len(angles))
        star = centre + np.column_stack([radius * np.cos(angles), radius * np.sin(angles)])
        rings.append(_closed(star))
        rings.append(_closed(star[::-1]))
        lattice = centre.round() + rng.integers(0, 4, (rng.integers(3, 9), 2))
        rings.append(_closed(lattice))
        snapped = star.copy()
        snapped[::3] = snapped[::3].round(-1)  # some vertices on a 10 m grid: collinear runs and touches
        rings.append(_closed(snapped))
    return rings


DEGENERATE = [
    [(0, 0), (4, 0), (4, 4), (2, 0), (0, 4)],  # a vertex on another edge
    [(0, 0), (2, 2), (4, 0), (4, 4), (2, 2), (0, 4)],  # a figure of eight through one point
    [(0, 0), (4, 0), (6, 0), (4, 0), (4, 4), (0, 4)],  # a spike folding back along an edge
    [(0, 0), (2, 0), (4, 0), (4, 4), (0, 4)],  # a straight run through a vertex (valid)
    [(0, 0), (4, 4), (4, 0), (0, 4)],  # a bow tie
    [(0, 0), (4, 0), (4, 4), (0, 4), (0, 2), (2, 2), (0, 2)],  # a cut to the middle and back
    [(0, 0), (4, 0), (0, 0.0000001), (4, 4), (0, 4)],  # an edge all but on another
]


def test_a_ring_proven_simple_is_valid_in_geos_and_most_simple_rings_are_proven():
    rng = np.random.default_rng(11)
    rings = _random_rings(rng, 400) + [_closed(np.asarray(r, dtype=float) + 400_000) for r in DEGENERATE]
    proven = valid = 0
    for grid in rings:
        lonlat = np.ascontiguousarray(grid * 1e-5)  # turns the same way: what is read here is the grid
        code = read_ring(lonlat, grid, np.empty(4))
        geos_valid = bool(shapely.is_valid(shapely.polygons(grid)))
        valid += geos_valid
        if code != RING_HAND_BACK and not code & RING_UNSURE:
            proven += 1
            assert geos_valid, grid.tolist()
    assert valid > 800 and proven > 0.9 * valid


@pytest.mark.parametrize("ring", DEGENERATE)
def test_no_degenerate_ring_is_taken_for_simple(ring):
    grid = _closed(np.asarray(ring, dtype=float) + 400_000)
    code = read_ring(np.ascontiguousarray(grid * 1e-5), grid, np.empty(4))
    if not shapely.is_valid(shapely.polygons(grid)):
        assert code == RING_HAND_BACK or code & RING_UNSURE


def test_the_turn_and_the_centroids_are_geos_own():
    rng = np.random.default_rng(12)
    read = 0
    for grid in _random_rings(rng, 300):
        if not shapely.is_valid(shapely.polygons(grid)):
            continue
        lonlat = np.ascontiguousarray(grid * 1e-5 - [5.0, -45.0])
        centroids = np.empty(4)
        code = read_ring(lonlat, grid, centroids)
        if code == RING_HAND_BACK:
            continue
        read += 1
        kept = [ring[::-1] if code & RING_CLOCKWISE else ring for ring in (lonlat, grid)]
        assert bool(code & RING_CLOCKWISE) == (not shapely.is_ccw(shapely.linearrings(grid)))
        expected = shapely.get_coordinates(shapely.centroid(shapely.polygons(kept))).ravel().tolist()
        assert centroids.tolist() == expected  # the very doubles, not close ones
    assert read > 500


def test_rings_that_are_not_closed_or_repeat_a_point_are_handed_back():
    grid = _closed([(400_000, 100_000), (400_010, 100_000), (400_010, 100_010)])
    lonlat = np.ascontiguousarray(grid * 1e-5)
    assert read_ring(lonlat, grid, np.empty(4)) != RING_HAND_BACK
    assert read_ring(np.ascontiguousarray(lonlat[:-1]), np.ascontiguousarray(grid[:-1]), np.empty(4)) == RING_HAND_BACK
    repeated = np.ascontiguousarray(np.insert(grid, 2, grid[1], axis=0))
    assert read_ring(np.ascontiguousarray(repeated * 1e-5), repeated, np.empty(4)) == RING_HAND_BACK
    flat = _closed([(400_000, 100_000), (400_010, 100_000), (400_020, 100_000)])
    assert read_ring(np.ascontiguousarray(flat * 1e-5), flat, np.empty(4)) == RING_HAND_BACK


def test_a_site_ring_is_put_on_the_grid_as_every_other_point_is_and_read_as_read_ring_reads_it():
    rng = np.random.default_rng(15)
    rewound = 0
    for grid in _random_rings(rng, 50):
        drawn = np.ascontiguousarray(grid * 1e-5 + [-5.0, 50.0])
        lonlat = drawn.copy()
        code, on_grid, centroids, rows = read_site_ring(lonlat)
        expected, off = lonlat_points_to_bng(drawn)
        assert off == 0
        again = np.empty(4)
        assert code == read_ring(drawn, expected, again)
        if code == RING_HAND_BACK:
            assert on_grid.tolist() == expected.tolist()
            continue
        # a ring read is kept anticlockwise: rewound in place on both grids, its lon/lat rows as kept
        kept = slice(None, None, -1) if code & RING_CLOCKWISE else slice(None)
        rewound += bool(code & RING_CLOCKWISE)
        assert on_grid.tolist() == expected[kept].tolist() and lonlat.tolist() == drawn[kept].tolist()
        assert rows.flags.c_contiguous and rows.tolist() == drawn[kept].T.tolist()
        assert centroids.tolist() == again.tolist()
    assert rewound > 20
    at_sea = np.ascontiguousarray(_closed([(-12.0, 50.0), (-11.9, 50.0), (-11.9, 50.1)]))
    assert read_site_ring(at_sea)[0] == RING_HAND_BACK


def test_many_site_rings_are_read_in_one_call_as_each_is_read_alone():
    rng = np.random.default_rng(16)
    rings = [np.ascontiguousarray(grid * 1e-5 + [-5.0, 50.0]) for grid in _random_rings(rng, 40)]
    rings.insert(5, np.ascontiguousarray(_closed([(-12.0, 50.0), (-11.9, 50.0), (-11.9, 50.1)])))  # off the grid
    offsets = np.r_[0, np.cumsum([len(r) for r in rings])].astype(np.int64)
    lonlat = np.concatenate(rings)
    codes, grid, centroids, rows = read_site_rings(lonlat, offsets)
    for k, drawn in enumerate(rings):
        alone = read_site_ring(drawn.copy())
        lo, hi = offsets[k], offsets[k + 1]
        assert codes[k] == alone.code
        if alone.code == RING_HAND_BACK:
            continue
        assert grid[lo:hi].tolist() == alone.grid.tolist() and lonlat[lo:hi].tolist() == alone.rows.T.tolist()
        assert rows[:, lo:hi].tolist() == alone.rows.tolist() and centroids[k].tolist() == alone.centroids.tolist()
    assert codes[5] == RING_HAND_BACK and (codes != RING_HAND_BACK).sum() > len(rings) / 2
    assert len(read_site_rings(np.empty((0, 2)), np.zeros(1, dtype=np.int64)).code) == 0


def test_the_geodesic_area_of_a_ring_is_pyprojs_to_the_last_bit():
    rng = np.random.default_rng(13)
    for _ in range(300):
        n = rng.integers(3, 80)
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(1e-5, 0.05)
        ring = _closed(np.column_stack([rng.uniform(-5, 1.5) + radius * np.cos(angles), rng.uniform(50, 55) + radius * np.sin(angles)]))
        for variant in (ring, ring[::-1]):
            assert ring_area_perimeter(variant[:, 0], variant[:, 1]) == WGS84.polygon_area_perimeter(variant[:, 0], variant[:, 1])
            assert ring_area_perimeter(variant[:, 0], variant[:, 1]) == WGS84.geometry_area_perimeter(shapely.polygons(variant))


def test_the_geodesic_areas_of_many_rings_are_each_rings_own():
    rng = np.random.default_rng(17)
    rings = []
    for _ in range(50):
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 40)))
        radius = rng.uniform(1e-5, 0.05)
        rings.append(_closed(np.column_stack([rng.uniform(-5, 1.5) + radius * np.cos(angles), rng.uniform(50, 55) + radius * np.sin(angles)])))
    offsets = np.r_[0, np.cumsum([len(r) for r in rings])].astype(np.int64)
    area, perimeter = rings_area_perimeter(np.concatenate(rings).T.copy(), offsets)
    assert [(a, p) for a, p in zip(area.tolist(), perimeter.tolist(), strict=True)] == [WGS84.polygon_area_perimeter(r[:, 0], r[:, 1]) for r in rings]


def test_a_shapely_site_reads_the_same_by_the_quick_way_and_the_careful_one(monkeypatch):
    # the benchmarks and the batch hand parse_site shapely polygons: the quick path must read them
    # exactly as the general path does, degenerate ones included
    rng = np.random.default_rng(14)
    sites = []
    for grid in _random_rings(rng, 60) + [_closed(np.asarray(r, dtype=float) * 20 + 400_000) for r in DEGENERATE]:
        lonlat = np.ascontiguousarray(grid * 1e-5 + [-5.0, 50.0])
        sites.append(shapely.polygons(lonlat))
    assert (lonlat_points_to_bng(shapely.get_coordinates(sites[0]))[1]) == 0  # in Great Britain

    def read(site):
        try:
            return parse_site(site)
        except SiteError as err:
            return err

    quick = [read(site) for site in sites]
    taken = sum(site_module._simple_polygon(site, site_module.SiteLimits()) is not None for site in sites)
    assert taken > len(sites) / 2
    monkeypatch.setattr(site_module, "_simple_polygon", lambda obj, limits: None)
    careful = [read(site) for site in sites]
    for a, b in zip(quick, careful, strict=True):
        if isinstance(b, SiteError):
            assert isinstance(a, SiteError) and a.message == b.message
            continue
        assert shapely.to_wkb(a.geometry) == shapely.to_wkb(b.geometry)
        assert shapely.to_wkb(a.bng) == shapely.to_wkb(b.bng)
        assert (a.area_m2, a.perimeter_m, a.centroid, a.grid_reference, a.vertices) == (b.area_m2, b.perimeter_m, b.centroid, b.grid_reference, b.vertices)
        assert (a.warnings, a.properties) == (b.warnings, b.properties)
        assert json.dumps(a.summary()) == json.dumps(b.summary())


def test_a_one_ring_site_keeps_its_grid_vertices_for_the_matching_kernels():
    """A site of one ring (read alone or in a batch, either winding) carries its BNG ring as the very
    coordinates of its ``bng`` geometry, C-ordered doubles; a site with a hole, several parts or a
    point carries none, and the kernels read those from GEOS."""
    ring = [[-0.1, 51.5], [-0.099, 51.5], [-0.099, 51.501], [-0.1, 51.5]]
    sites = [parse_site(json.dumps({"type": "Polygon", "coordinates": [ring]})), parse_site(json.dumps({"type": "Polygon", "coordinates": [ring[::-1]]})),
             parse_site(shapely.Polygon(ring)), *site_module.parse_sites([shapely.Polygon(ring), shapely.Polygon(ring[::-1])])]
    # read alone, a site proven simple makes its BNG polygon only when asked for (a check whose ring
    # the kernels match never asks), and then it is the ring's
    assert sites[0].made_bng is None and sites[2].made_bng is None
    for site in sites:
        assert site.bng_ring is not None and site.bng_ring.flags.c_contiguous and site.bng_ring.dtype == np.float64
        assert np.array_equal(site.bng_ring, shapely.get_coordinates(site.bng))
        assert site.made_bng is site.bng
    holed = shapely.Polygon([(-0.1, 51.5), (-0.09, 51.5), (-0.09, 51.51), (-0.1, 51.51)], [[(-0.097, 51.503), (-0.097, 51.505), (-0.095, 51.505), (-0.097, 51.503)]])
    for other in (holed, shapely.MultiPolygon([shapely.Polygon(ring), shapely.Polygon([(x + 0.002, y) for x, y in ring])]), shapely.Point(-0.1, 51.5)):
        assert parse_site(other).bng_ring is None


@pytest.mark.parametrize("anticlockwise", [True, False])
def test_a_shapely_site_is_its_own_geometry_as_drawn_or_reversed_and_loses_any_m_values(anticlockwise):
    ring = [(-0.1, 51.5), (-0.099, 51.5), (-0.099, 51.501), (-0.1, 51.5)]
    drawn = ring if anticlockwise else ring[::-1]
    plain = shapely.Polygon(drawn)
    measured = shapely.from_wkt("POLYGON M ((" + ", ".join(f"{x} {y} {m}" for m, (x, y) in enumerate(drawn)) + "))")
    kept = shapely.to_wkb(shapely.Polygon(ring))
    for site in (parse_site(plain), *site_module.parse_sites([plain]), parse_site(measured), *site_module.parse_sites([measured])):
        assert shapely.to_wkb(site.geometry) == kept and not site.geometry.has_m
        assert site.warnings == ([] if anticlockwise else ["rings were rewound: outer rings anticlockwise, holes clockwise (RFC 7946)"])
    if anticlockwise:
        assert parse_site(plain).geometry is plain  # nothing made again
