"""Geometry work is bounded before it starts: parts, holes, and the vertices and crossings of a site
that needs repair, each refused with a 422 that names its limit (``SiteLimits``, one definition)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import shapely

from constraints.crossings import count_crossings
from constraints.site import SiteError, SiteLimits, SiteTooLarge, parse_site

LON, LAT = -2.3610, 51.3815


def square(x: float, y: float, size: float = 0.0002) -> list[list[float]]:
    return [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]


def refused(site, limits: SiteLimits = SiteLimits()) -> SiteError:
    started = time.process_time()  # the work done, not the wall clock a loaded machine stretches
    with pytest.raises(SiteError) as error:
        parse_site(site, limits)
    assert time.process_time() - started < 1.0
    assert not isinstance(error.value, SiteTooLarge)  # a 422 (errors.DOMAIN_ERRORS), not a 413
    return error.value


def test_crossings_are_counted_where_edges_cross_not_where_they_touch_or_run_together():
    assert count_crossings(shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])) == 1  # bow-tie
    pentagram = [(np.cos(a), np.sin(a)) for a in np.pi / 2 + 4 * np.pi * np.arange(5) / 5]
    assert count_crossings(shapely.Polygon(pentagram)) == 5
    parcels = shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)])  # share an edge
    assert count_crossings(parcels) == 0
    hole_across = shapely.Polygon(shapely.box(0, 0, 4, 4).exterior.coords, [shapely.box(3, 1, 5, 2).exterior.coords])
    assert count_crossings(hole_across) == 2


def test_a_site_of_too_many_parts_is_refused_naming_max_parts():
    parts = [[square(LON + 0.001 * i, LAT)] for i in range(11)]
    error = refused({"type": "MultiPolygon", "coordinates": parts}, SiteLimits(max_parts=10))
    assert error.code == "too-many-parts" and error.limit == {"name": "max_parts", "value": 10}
    assert "limit max_parts" in error.message and "one outline" in error.message
    assert parse_site({"type": "MultiPolygon", "coordinates": parts[:10]}, SiteLimits(max_parts=10)).area_m2 > 0


def test_a_site_with_too_many_holes_is_refused_naming_max_holes():
    outer = square(LON, LAT, 0.01)
    holes = [square(LON + 0.0005 + 0.0009 * i, LAT + 0.005)[::-1] for i in range(6)]
    error = refused({"type": "Polygon", "coordinates": [outer, *holes]}, SiteLimits(max_holes=5))
    assert error.code == "too-many-holes" and error.limit["name"] == "max_holes"


def test_a_large_site_that_crosses_itself_is_not_repaired_past_max_repair_vertices():
    angles = np.linspace(0, 2 * np.pi, 3000, endpoint=False)
    ring = np.column_stack([LON + 0.003 * np.cos(angles), LAT + 0.002 * np.sin(angles)])
    ring[[10, 11]] = ring[[11, 10]]  # one small crossing
    site = {"type": "Polygon", "coordinates": [[*ring.tolist(), ring[0].tolist()]]}
    error = refused(site, SiteLimits(max_repair_vertices=2000))
    assert error.code == "too-large-to-repair" and error.limit == {"name": "max_repair_vertices", "value": 2000}
    assert "the boundary was repaired" in parse_site(site).warnings[-1]  # under the default limit it is repaired


def test_long_parallel_strokes_that_cross_are_refused_without_counting_every_pair():
    strokes = []
    for k in range(800):  # a zigzag of parallel diagonals: every edge's box overlaps every other's
        x = LON + 0.00002 * k
        strokes += [[x, LAT], [x + 0.01, LAT + 0.01], [x + 0.01001, LAT + 0.01], [x + 0.00001, LAT]]
    strokes[1601][0] += 0.00003  # one stroke leans over the next: its edges cross that stroke's
    strokes[1602][0] += 0.00003
    site = {"type": "Polygon", "coordinates": [[*strokes, [LON + 0.005, LAT - 0.001], strokes[0]]]}
    error = refused(site)
    assert error.code == "too-large-to-repair" and error.limit["name"] == "max_repair_edge_pairs"


def test_features_that_cross_each_other_too_often_are_not_merged():
    circle = [[LON + 0.002 * np.cos(a), LAT + 0.0012 * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 200, endpoint=False)]
    gear = [[LON + 0.002 * (1.02 if i % 2 else 0.98) * np.cos(a), LAT + 0.0012 * (1.02 if i % 2 else 0.98) * np.sin(a)] for i, a in enumerate(np.linspace(0, 2 * np.pi, 200, endpoint=False))]
    features = [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]}} for ring in (circle, gear)]
    error = refused({"type": "FeatureCollection", "features": features})
    assert error.code == "too-many-self-intersections" and error.pointer == "/features"
    parcels = [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [square(LON + 0.0002 * i, LAT)]}} for i in range(3)]
    merged = parse_site({"type": "FeatureCollection", "features": parcels})  # parcels sharing edges still merge
    assert merged.geometry.geom_type == "Polygon" and any("merged into one site" in w for w in merged.warnings)
