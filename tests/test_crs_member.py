"""A GeoJSON ``crs`` member naming British National Grid (QGIS and FME still write one) is read the same
way by every entry point: ``redline check``, ``POST /v1/check``, boundaries, their validation (JSON and
uploaded file) and ``redline batch``. The reference is the same site sent in longitude and latitude."""

from __future__ import annotations

import json

import pytest
import shapely
from api_fixtures import BATH_SITE, copy_cache, make_app
from fastapi.testclient import TestClient

from api.cli import main
from api.keys import KeyStore
from api.settings import get_settings
from datasets.crs import to_bng

NAMES = ["EPSG:27700", "urn:ogc:def:crs:EPSG::27700"]


def on_the_grid(name: str) -> dict:
    """BATH_SITE as a Feature in eastings and northings, with a ``crs`` member saying so."""
    grid = to_bng(shapely.geometry.shape(BATH_SITE))
    return {
        "type": "Feature",
        "crs": {"type": "name", "properties": {"name": name}},
        "properties": {"name": "Bath site"},
        "geometry": json.loads(shapely.to_geojson(grid)),
    }


def statuses(answer: dict) -> dict:
    return {c["key"]: (c["status"], sorted(e["entity"] for e in c["entities"])) for c in answer["constraints"]}


@pytest.fixture(scope="module")
def data_dir(sample_cache, tmp_path_factory):
    return copy_cache(sample_cache, tmp_path_factory.mktemp("crs-member"))


@pytest.fixture(scope="module")
def client(data_dir):
    _, token = KeyStore(data_dir).create("council", ["check", "boundary:write", "officer"])
    with TestClient(make_app(data_dir), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


@pytest.fixture(scope="module")
def reference(client) -> dict:
    answer = client.post("/v1/check", json=BATH_SITE)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize("name", NAMES)
def test_post_v1_check_reads_the_grid(client, reference, name):
    answer = client.post("/v1/check", json=on_the_grid(name))
    assert answer.status_code == 200, answer.text
    assert statuses(answer.json()) == statuses(reference)
    assert answer.json()["site"]["area_m2"] == pytest.approx(reference["site"]["area_m2"], abs=0.01)
    assert any(status == "intersects" for status, _ in statuses(reference).values())


@pytest.mark.parametrize("name", NAMES)
def test_redline_check_reads_the_grid(tmp_path, data_dir, reference, monkeypatch, capsys, name):
    site = tmp_path / "site.geojson"
    site.write_text(json.dumps(on_the_grid(name)))
    monkeypatch.setenv("REDLINE_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    try:
        code = main(["check", str(site)])
    finally:
        get_settings.cache_clear()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert statuses(json.loads(captured.out)) == statuses(reference)


@pytest.mark.parametrize("name", NAMES)
def test_boundaries_and_validation_read_the_grid(client, reference, name):
    site = on_the_grid(name)
    created = client.post("/v1/boundaries", json={"reference": "R1", "local_authority": "bath", "site": site})
    assert created.status_code == 201, created.text
    validated = client.post("/v1/validate", json=site)
    assert validated.status_code == 200, validated.text
    uploaded = client.post(
        "/v1/validate", files={"file": ("site.geojson", json.dumps(site).encode(), "application/geo+json")}
    )
    assert uploaded.status_code == 200, uploaded.text
    lonlat = client.post("/v1/validate", json=BATH_SITE).json()
    for body in (created.json(), validated.json(), uploaded.json()):
        assert body["area_m2"] == pytest.approx(reference["site"]["area_m2"], abs=0.01)
        assert body["grid_reference"] == lonlat["grid_reference"]
        drawn = shapely.geometry.shape(body["site"].get("geometry", body["site"]))
        assert shapely.hausdorff_distance(drawn, shapely.geometry.shape(BATH_SITE)) < 1e-9


@pytest.mark.parametrize("name", NAMES)
def test_batch_reads_the_grid(tmp_path, data_dir, reference, name):
    import numpy as np
    import pyarrow as pa

    from constraints.batch import check_sites, read_sites
    from constraints.index import ConstraintIndex
    from datasets.cache import LayerCache
    from datasets.catalogue import load_catalogue

    path = tmp_path / "sites.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": on_the_grid(name)["crs"], "features": [on_the_grid(name)]}))

    table = read_sites(path)
    assert not table.errors
    assert shapely.hausdorff_distance(table.geometry[0], shapely.geometry.shape(BATH_SITE)) < 1e-9
    index = ConstraintIndex.from_cache(LayerCache(data_dir), load_catalogue())
    rows, errors = check_sites(index, table.ids, table.rows, table.geometry, id_field="row", id_type=pa.int64())
    assert not errors
    got = {r["key"]: (r["status"], sorted(r["entities"])) for r in rows.to_pylist()}
    assert got == statuses(reference)
    assert np.allclose(rows.column("site_area_m2").to_numpy(), reference["site"]["area_m2"], atol=0.01)


def test_another_coordinate_system_is_refused_by_name(client):
    site = on_the_grid("EPSG:3857")
    answer = client.post("/v1/check", json=site)
    assert answer.status_code == 422
    assert '"EPSG:3857"' in answer.json()["detail"] and "EPSG:27700" in answer.json()["detail"]
