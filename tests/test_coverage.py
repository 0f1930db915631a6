"""Never a false "not": a key is clear only where every layer behind it is loaded, current and complete.

Covers a council layer loaded with and without a stated coverage, sites outside England, sites
whose parts lie far apart, and the one definition of "stale" every report uses.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from api_fixtures import BATH_SITE, make_app
from fastapi.testclient import TestClient

from constraints.index import ConstraintIndex
from constraints.site import SiteError, parse_site
from datasets.cache import LayerCache
from datasets.catalogue import load_catalogue
from datasets.crs import to_wgs84

BANES_CA = "banes-geographic-data__banes_conservation_ar.geojson"
NORWICH = shapely.box(1.2900, 52.6300, 1.2910, 52.6306)
LAMBETH_PALACE = shapely.box(-0.1195, 51.4970, -0.1160, 51.4985)
SALTFORD_FIELDS = shapely.box(-2.4700, 51.3950, -2.4690, 51.3956)  # in Bath and North East Somerset, in no conservation area
CARDIFF = shapely.box(-3.1800, 51.4800, -3.1790, 51.4806)
BATH_DISTRICT = shapely.box(-2.72, 51.26, -2.27, 51.44)  # the council's area, as a boundary file would give it


def geojson(path: Path, geometry, **properties) -> Path:
    feature = {"type": "Feature", "properties": properties, "geometry": shapely.geometry.mapping(geometry)}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def conservation(cli, tmp_path, site, data_dir) -> dict:
    path = geojson(tmp_path / f"site-{time.monotonic_ns()}.geojson", site)
    code, out, err = cli("check", str(path), data_dir=data_dir)
    assert code == 0, err
    return next(c for c in json.loads(out)["constraints"] if c["key"] == "designated.conservationArea")


# -- a council layer's coverage ---------------------------------------------------------------------


def test_a_bath_layer_loaded_without_coverage_never_answers_not_and_load_says_so(tmp_path, cli, real_data):
    data_dir = tmp_path / "data"
    code, out, _ = cli("datasets", "load", str(real_data / BANES_CA), "--dataset", "conservation-area", data_dir=data_dir)
    assert code == 0
    assert "conservation-area covers nowhere yet: no --coverage was given" in out
    assert "set it with --coverage FILE" in out and "--coverage england" in out

    for far_away in (NORWICH, LAMBETH_PALACE):
        answer = conservation(cli, tmp_path, far_away, data_dir)
        assert answer["status"] == "unknown"
        assert "does not cover the whole site (it covers nowhere yet" in answer["reason"]
    assert conservation(cli, tmp_path, SALTFORD_FIELDS, data_dir)["status"] == "unknown"
    assert conservation(cli, tmp_path, shapely.geometry.shape(BATH_SITE), data_dir)["status"] == "intersects"


def test_the_same_layer_loaded_with_the_councils_area_answers_not_there_only(tmp_path, cli, real_data):
    data_dir = tmp_path / "data"
    district = geojson(tmp_path / "banes-district.geojson", BATH_DISTRICT, name="Bath and North East Somerset")
    code, out, _ = cli(
        "datasets", "load", str(real_data / BANES_CA), "--dataset", "conservation-area", "--coverage", str(district),
        data_dir=data_dir,
    )
    assert code == 0 and "conservation-area covers the area in banes-district.geojson (--coverage)" in out

    assert conservation(cli, tmp_path, SALTFORD_FIELDS, data_dir)["status"] == "clear"
    assert conservation(cli, tmp_path, shapely.geometry.shape(BATH_SITE), data_dir)["status"] == "intersects"
    for far_away in (NORWICH, LAMBETH_PALACE):
        answer = conservation(cli, tmp_path, far_away, data_dir)
        assert answer["status"] == "unknown" and "banes-district.geojson" in answer["reason"]
    code, listing, _ = cli("datasets", "list", data_dir=data_dir)
    assert "covers the area in banes-district.geojson (--coverage)" in listing


def test_without_coverage_the_organisations_planning_authority_boundary_is_used(tmp_path, cli, real_data):
    data_dir = tmp_path / "data"
    authorities = gpd.GeoDataFrame(
        {"entity": [1], "name": ["Bath and North East Somerset"], "organisation-entity": ["16"]},
        geometry=[BATH_DISTRICT],
        crs=4326,
    )
    LayerCache(data_dir).write("local-planning-authority", authorities, source={"type": "platform", "url": "test"})
    code, out, _ = cli(
        "datasets", "load", str(real_data / BANES_CA), "--dataset", "conservation-area", "--organisation", "16",
        data_dir=data_dir,
    )
    assert code == 0 and "covers the planning-authority boundary of organisation 16" in out
    assert conservation(cli, tmp_path, SALTFORD_FIELDS, data_dir)["status"] == "clear"
    assert conservation(cli, tmp_path, NORWICH, data_dir)["status"] == "unknown"
    code, listing, _ = cli("datasets", "list", "--json", data_dir=data_dir)
    entries = json.loads(listing)
    assert entries["conservation-area"]["covers"].startswith("the planning-authority boundary of organisation 16")
    assert entries["local-planning-authority"]["covers"] == "England (a national layer)"


def test_coverage_england_is_said_explicitly(tmp_path, cli, real_data):
    data_dir = tmp_path / "data"
    code, out, _ = cli(
        "datasets", "load", str(real_data / BANES_CA), "--dataset", "conservation-area", "--coverage", "england",
        data_dir=data_dir,
    )
    assert code == 0 and "covers England (said by --coverage england)" in out
    assert conservation(cli, tmp_path, NORWICH, data_dir)["status"] == "clear"


# -- outside England --------------------------------------------------------------------------------


def test_a_site_in_cardiff_says_outside_england_on_every_key(tmp_path):
    cache = LayerCache(tmp_path)
    national = gpd.GeoDataFrame({"entity": [44000001], "name": ["Bath"]}, geometry=[BATH_DISTRICT], crs=4326)
    cache.write("conservation-area", national, source={"type": "platform", "url": "test"})  # national: England
    index = ConstraintIndex.from_cache(cache, load_catalogue())
    answer = index.check(CARDIFF, council="lambeth")
    assert answer["constraints"]
    for item in answer["constraints"]:
        assert item["status"] == "unknown", item["key"]
        assert item["reason"].startswith("the site is outside England"), item
    # the same national layer does answer "not" in England
    norwich = {c["key"]: c for c in index.check(NORWICH)["constraints"]}
    assert norwich["designated.conservationArea"]["status"] == "clear"


def test_a_site_in_cardiff_over_the_api_is_unknown_everywhere_with_the_reason(sample_cache, tmp_path):
    from api_fixtures import copy_cache

    with TestClient(make_app(copy_cache(sample_cache, tmp_path / "data"))) as client:
        body = client.post("/v1/check", json=shapely.geometry.mapping(CARDIFF)).json()
    assert {c["status"] for c in body["constraints"]} == {"unknown"}
    assert all("outside England" in c["reason"] for c in body["constraints"])


# -- far-apart parts --------------------------------------------------------------------------------


def two_parts_apart(km: float) -> dict:
    """Two 100 m squares whose nearest edges lie ``km`` apart on the British National Grid."""
    west = shapely.box(375_000, 165_000, 375_100, 165_100)
    east = shapely.box(375_100 + km * 1000, 165_000, 375_200 + km * 1000, 165_100)
    return {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(to_wgs84(part))} for part in (west, east)
        ],
    }


def test_a_two_part_site_200_km_apart_is_refused_naming_the_distance():
    with pytest.raises(SiteError) as refused:
        parse_site(two_parts_apart(200))
    assert refused.value.code == "parts-too-far-apart"
    assert "the site's parts lie 200.0 km apart, more than the 5 km one site may span (limit max_part_gap_m)" in refused.value.message


def test_parts_close_together_are_one_site():
    site = parse_site(two_parts_apart(1))
    assert site.geometry.geom_type == "MultiPolygon" and site.area_m2 == pytest.approx(20_000, rel=0.01)


def test_far_apart_parts_are_refused_by_the_api_and_the_cli(sample_cache, tmp_path, cli):
    from api_fixtures import copy_cache

    data_dir = copy_cache(sample_cache, tmp_path / "data")
    with TestClient(make_app(data_dir)) as client:
        response = client.post("/v1/check", json=two_parts_apart(200))
    assert response.status_code == 422
    assert "200.0 km apart" in response.json()["detail"]
    path = tmp_path / "two.geojson"
    path.write_text(json.dumps(two_parts_apart(200)))
    code, _, err = cli("check", str(path), data_dir=data_dir)
    assert code == 2 and "200.0 km apart" in err


# -- one definition of stale ------------------------------------------------------------------------


def _stamp(hours_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(("confirmed_hours_ago", "stale"), [(None, True), (0.1, False)])
def test_stale_is_the_same_in_provenance_datasets_metrics_and_the_list(tmp_path, cli, confirmed_hours_ago, stale):
    data_dir = tmp_path / "data"
    cache = LayerCache(data_dir)
    layer = gpd.GeoDataFrame({"entity": [44000001], "name": ["Bath"]}, geometry=[BATH_DISTRICT], crs=4326)
    cache.write("conservation-area", layer, source={"type": "platform", "url": "https://example.invalid/ca.csv"})
    # loaded three hours ago; confirmed current by a 304 since, or not; the flag the last sync wrote is ignored
    cache.update_entry("conservation-area", loaded_at=_stamp(3), checked_at=_stamp(confirmed_hours_ago) if confirmed_hours_ago else None, stale=not stale)

    index = ConstraintIndex.from_cache(cache, load_catalogue(), stale_after_hours=1)
    provenance = index.check(SALTFORD_FIELDS)["provenance"]["datasets"]["conservation-area"]
    with TestClient(make_app(data_dir, load_samples=False, stale_after_hours=1)) as client:
        listed = client.get("/v1/datasets").json()["datasets"]
        metrics = client.get("/metrics").text
    code, out, _ = cli("datasets", "list", "--json", data_dir=data_dir, REDLINE_STALE_AFTER_HOURS="1")

    assert provenance["stale"] is stale
    assert next(d for d in listed if d["dataset"] == "conservation-area")["stale"] is stale
    assert f'redline_dataset_stale{{dataset="conservation-area"}} {int(stale)}' in metrics
    assert code == 0 and json.loads(out)["conservation-area"]["stale"] is stale


# -- keys that narrow another ---------------------------------------------------------------------


def test_a_grade_is_unknown_when_the_listed_building_met_has_no_grade(tmp_path):
    cache = LayerCache(tmp_path)
    outline = gpd.GeoDataFrame(
        {"entity": [31000001], "name": ["No 1"], "listed-building-grade": [""]}, geometry=[NORWICH.buffer(0.0005)], crs=4326
    )
    cache.write("listed-building-outline", outline, source={"type": "platform", "url": "test"})
    cache.write("listed-building", outline.iloc[:0], source={"type": "platform", "url": "test"})
    found = {c["key"]: c for c in ConstraintIndex.from_cache(cache, load_catalogue()).check(NORWICH)["constraints"]}
    assert found["listed"]["status"] == "intersects"
    for grade in ("listed.gradeOne", "listed.gradeTwoStar", "listed.gradeTwo"):
        assert found[grade]["status"] == "unknown"
        assert "1 listed-building-outline entity the site meets has no listed-building-grade" in found[grade]["reason"]


def test_a_council_file_loaded_before_coverage_was_recorded_covers_nowhere(tmp_path):
    cache = LayerCache(tmp_path)
    layer = gpd.GeoDataFrame({"entity": [1], "name": ["Saltford"]}, geometry=[shapely.box(-2.46, 51.40, -2.44, 51.41)], crs=4326)
    cache.write("conservation-area", layer, source={"type": "local", "path": "/old/ca.gpkg"})  # no coverage, no note
    answer = ConstraintIndex.from_cache(cache, load_catalogue()).check(NORWICH)
    ca = next(c for c in answer["constraints"] if c["key"] == "designated.conservationArea")
    assert ca["status"] == "unknown" and "load it again with --coverage" in ca["reason"]
