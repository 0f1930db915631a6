"""Many sites at once (the batch's way) answer exactly as each site checked alone.

``parse_sites`` and ``ConstraintIndex.match_many`` do a partition's work with one array operation each
for all its sites; every site must come out with the same reading, the same entities in the same
order with the same overlaps, and so the same answer, as ``parse_site`` and ``check`` give it alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from api_fixtures import copy_cache

from constraints.index import ConstraintIndex, Tolerance
from constraints.site import SiteError, parse_site, parse_sites
from datasets.cache import LayerCache
from datasets.catalogue import load_catalogue


@pytest.fixture(scope="module")
def sample_index(sample_cache, tmp_path_factory) -> ConstraintIndex:
    cache = LayerCache(copy_cache(sample_cache, tmp_path_factory.mktemp("cache")))
    return ConstraintIndex.from_cache(cache, load_catalogue())


def _star(rng, lon, lat, radius, n, clockwise=False):
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    if clockwise:
        angles = angles[::-1]
    r = radius * rng.uniform(0.5, 1.0, n)
    ring = np.column_stack([lon + r * np.cos(angles) * 1.6, lat + r * np.sin(angles)])
    return shapely.Polygon(ring)


@pytest.fixture(scope="module")
def sites(sample_index) -> list:
    """Sites on and around the sample entities, with every kind the general path must take."""
    rng = np.random.default_rng(17)
    anchors = []
    for layer in sample_index.snapshot.layer_list:
        rows = rng.choice(len(layer), size=min(len(layer), 12), replace=False)
        anchors += shapely.get_coordinates(shapely.point_on_surface(layer.geometry[rows])).tolist()
    out = []
    for k, (lon, lat) in enumerate(anchors):
        radius = float(np.exp(rng.uniform(np.log(2e-5), np.log(4e-3))))
        out.append(_star(rng, lon, lat, radius, int(rng.integers(4, 40)), clockwise=k % 3 == 0))
    lon, lat = anchors[0]
    d = 1e-3
    out += [
        shapely.Point(lon, lat),  # an address
        shapely.box(lon - d, lat - d, lon + d, lat + d).difference(shapely.box(lon - d / 3, lat - d / 3, lon + d / 3, lat + d / 3)),  # a hole
        shapely.MultiPolygon([shapely.box(lon, lat, lon + d, lat + d), shapely.box(lon + 2 * d, lat, lon + 3 * d, lat + d)]),
        shapely.Polygon([(lon, lat), (lon + d, lat + d), (lon + d, lat), (lon, lat + d)]),  # a bow tie
        shapely.Polygon([(lon, lat), (lon + d, lat), (lon + d, lat), (lon + d, lat + d), (lon, lat)]),  # a repeated point
        shapely.Polygon([(lon, lat, 5), (lon + d, lat, 5), (lon, lat + d, 5)]),  # heights
        shapely.Polygon([(20, 40), (20.1, 40), (20, 40.1)]),  # outside Great Britain
        shapely.Polygon([(lon, lat), (lon + d, lat), (lon + 2 * d, lat)]),  # no area
        _star(rng, lon, lat, d, 12_000),  # too many vertices
    ]
    return out


def _reading(site_or_error):
    if isinstance(site_or_error, SiteError):
        return ("refused", site_or_error.code, site_or_error.message)
    site = site_or_error
    return (site.geometry.wkb, site.bng.wkb, site.area_m2, site.perimeter_m, site.centroid, site.grid_reference, site.vertices, site.warnings)


def test_parse_sites_reads_every_site_as_parse_site_does(sample_index, sites):
    alone = []
    for geom in sites:
        try:
            alone.append(parse_site(geom, sample_index.limits))
        except SiteError as err:
            alone.append(err)
    together = parse_sites(np.array(sites, dtype=object), sample_index.limits)
    assert [_reading(s) for s in together] == [_reading(s) for s in alone]
    assert sum(isinstance(s, SiteError) for s in together) >= 3  # the refusals were really exercised


@pytest.mark.parametrize("tolerance", [Tolerance(), Tolerance.strict()])
def test_match_many_finds_for_each_site_what_it_finds_alone(sample_index, sites, tolerance):
    parsed = [s for s in parse_sites(np.array(sites, dtype=object), sample_index.limits) if not isinstance(s, SiteError)]
    together = sample_index.match_many(parsed, tolerance)
    alone = [sample_index.match(site, tolerance) for site in parsed]

    def plain(matches):
        return [(m.layer.name, m.row, m.relation, m.overlap_m2, m.overlap_pct, m.material) for m in matches]

    assert [plain(m) for m in together] == [plain(m) for m in alone]
    assert sum(1 for m in alone if m) >= len(parsed) // 2  # most sites really meet something
    for site, matches in zip(parsed, together, strict=True):
        with_matches = sample_index.check(site, tolerance=tolerance, matches=matches)
        on_its_own = sample_index.check(site, tolerance=tolerance)
        with_matches["provenance"].pop("checked_at")
        on_its_own["provenance"].pop("checked_at")
        assert with_matches == on_its_own


@pytest.mark.parametrize("tolerance", [Tolerance(), Tolerance.strict(), Tolerance(5.0, 2.0)])
def test_a_site_of_one_ring_matched_in_one_call_finds_what_the_general_path_finds(sample_index, sites, tolerance):
    """``match`` takes a site of one ring through one compiled call; the stage-by-stage path of many sites
    (each site with a second site, so the general path is taken) must find the same entities, in the same
    order, with the same overlaps, for all datasets or some."""
    parsed = [s for s in parse_sites(np.array(sites, dtype=object), sample_index.limits) if not isinstance(s, SiteError)]
    rings = [s for s in parsed if s.bng_ring is not None]
    assert len(rings) >= len(parsed) // 2
    names = [layer.name for layer in sample_index.snapshot.layer_list]

    def plain(matches):
        return [(m.layer.name, m.row, m.relation, m.overlap_m2, m.overlap_pct, m.material) for m in matches]

    met = 0
    for datasets in (None, set(names[::2])):
        for site in rings:
            alone = sample_index.match(site, tolerance, datasets=datasets)
            general = sample_index.match_many([site, rings[0]], tolerance, datasets=datasets)[0]
            assert plain(alone) == plain(general)
            met += bool(alone)
    assert met >= len(rings) // 2
