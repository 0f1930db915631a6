"""Drop-in endpoints: PlanX's /gis/{team} and the Planning Data Platform's entity and dataset API.

Shapes are checked against the real answers in tests/data/real (PlanX mocks, BOPS fixtures of the
platform's /entity.json, digital-land.info's entity table); behaviour against brute force over the layers.
"""

from __future__ import annotations

import csv
import json
import sys
from urllib.parse import parse_qs, unquote_plus, urlsplit

import numpy as np
import pytest
import shapely
from api_fixtures import BATH_SITE, BATH_WKT, assert_problem, copy_cache, make_app
from fastapi.testclient import TestClient

from api.entity_search import ENTITY_FIELDS, RELATIONS
from constraints.formats import PLANX_DATA_FIELDS

csv.field_size_limit(sys.maxsize)


@pytest.fixture(scope="module")
def client(sample_cache, tmp_path_factory):
    app = make_app(copy_cache(sample_cache, tmp_path_factory.mktemp("platform")))
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def snapshot(client):
    return client.app.state.index.snapshot


def _mock(real_data, name):
    return json.loads((real_data / name).read_text())


def _types(values) -> set[str]:
    return {type(v).__name__ for v in values}


def _lambeth_request(mock) -> dict:
    query = parse_qs(urlsplit(mock["_provenance"]["planxRequest"]).query)
    return {"geom": query["geom"][0], "vals": query["vals"][0]}


# -- PlanX /gis/{team} ------------------------------------------------------------------------------


def test_gis_answer_has_the_keys_and_types_of_planx_real_answer(client, real_data):
    mock = _mock(real_data, "planx-new__digitalLandResponseMock.json")
    response = client.get("/gis/lambeth", params=_lambeth_request(mock))
    assert response.status_code == 200
    body = response.json()
    assert {"sourceRequest", "constraints", "metadata"} <= set(body)
    assert isinstance(body["sourceRequest"], str) and body["sourceRequest"]
    # the samples are complete in Bath and North East Somerset, not in Lambeth: ask there too
    in_bath = client.get("/gis/lambeth", params={**_lambeth_request(mock), "geom": BATH_WKT}).json()
    answered = 0
    for answer in (body, in_bath):
        for key, theirs in mock["constraints"].items():
            ours = answer["constraints"].get(key)
            if ours is None:  # not checked over the samples there: listed apart, with the reason
                assert key in answer["unknown"] or key == "road.classified", key
                continue
            answered += 1
            assert set(ours) <= set(theirs) | {"data"}, (key, ours)  # PlanX's own members, nothing more
            for field, value in theirs.items():
                if field == "data":
                    continue  # entities depend on the data loaded; checked on a Bath site below
                assert field in ours, (key, field)
                assert type(ours[field]) is type(value), (key, field, ours[field], value)
    assert answered >= 5
    for key, ours in body["metadata"].items():
        for field, value in ours.items():
            allowed = _types(m[field] for m in mock["metadata"].values() if field in m)
            assert not allowed or type(value).__name__ in allowed, (key, field, value)


def test_gis_never_answers_not_for_data_that_is_not_loaded(client, snapshot, real_data):
    mock = _mock(real_data, "planx-new__digitalLandResponseMock.json")
    body = client.get("/gis/lambeth", params=_lambeth_request(mock)).json()
    catalogue = client.app.state.catalogue
    checked = 0
    for key in catalogue.keys():
        datasets = catalogue.get(key).datasets
        if key not in body["constraints"] and key not in body["unknown"]:
            continue  # not asked for
        if datasets and not all(d in snapshot.layers for d in datasets):
            assert key not in body["constraints"], key  # absent: PlanX asks the applicant
            assert "not loaded" in body["unknown"][key]["reason"]
            checked += 1
        elif datasets and key in body["unknown"]:
            # loaded, but a regional sample layer that is not complete in Lambeth: it proves nothing there
            assert "does not cover" in body["unknown"][key]["reason"], key
        elif datasets:
            assert isinstance(body["constraints"][key]["value"], bool), key
    assert checked >= 3  # tpo, flood, articleFour.caz... are not among the samples
    # the samples' conservation areas are Bath's and the North East's: in Lambeth they cannot say "not"
    assert "designated.conservationArea" not in body["constraints"]
    assert "does not cover" in body["unknown"]["designated.conservationArea"]["reason"]
    # a value redline has no key for is dropped, as PlanX drops values it has no dataset for
    assert "road.classified" not in body["constraints"] and "road.classified" not in body["unknown"]


def test_gis_without_geom_is_a_400_that_planx_shows(client):
    response = client.get("/gis/lambeth", params={"vals": "listed"})
    body = assert_problem(response, 400)
    assert body["error"].startswith("lambeth is not a supported local authority") and "geom" in body["error"]
    assert_problem(client.get("/gis/lambeth", params={"geom": "  "}), 400)


def test_gis_includes_the_teams_granular_article_4_keys(client, real_data):
    mock = _mock(real_data, "planx-new__digitalLandResponseMock.json")
    body = client.get("/gis/lambeth", params=_lambeth_request(mock)).json()
    granular = {
        k
        for k in mock["constraints"]
        if k.startswith("articleFour.lambeth.") and k != "articleFour.lambeth.caz"
    }
    # the samples' article 4 layer is complete nowhere: the keys are there, unknown, never "not"
    assert granular <= set(body["unknown"])
    assert not granular & set(body["constraints"])
    other = client.get("/gis/bathnes", params=_lambeth_request(mock)).json()
    assert not [k for k in {**other["constraints"], **other["unknown"]} if k.startswith("articleFour.lambeth.")]


def test_gis_data_entries_have_the_types_of_planx_entities(client, real_data):
    mock = _mock(real_data, "planx-new__digitalLandResponseMock.json")
    theirs = [e for c in mock["constraints"].values() for e in c.get("data", [])]
    body = client.get(
        "/gis/bathnes", params={"geom": BATH_WKT, "vals": "listed,designated.conservationArea,designated.WHS"}
    ).json()
    assert body["constraints"]["listed"]["value"] is True
    assert body["constraints"]["designated.conservationArea"]["value"] is True
    assert body["constraints"]["designated"]["value"] is True  # derived from designated.* as PlanX does
    ours = [e for c in body["constraints"].values() for e in c.get("data", [])]
    assert ours
    for field in PLANX_DATA_FIELDS:
        expected = _types(e[field] for e in theirs)
        assert _types(e[field] for e in ours) <= expected, field


def test_gis_refuses_bad_geometry_with_a_problem(client):
    assert_problem(client.get("/gis/lambeth", params={"geom": "POLYGON((1 2, 3"}), 422)
    body = assert_problem(client.get("/gis/lambeth", params={"geom": json.dumps(BATH_SITE)}), 422)
    assert "WKT" in body["detail"]
    assert_problem(client.get("/gis/lambeth", params={"geom": "POINT(2.35 48.85)"}), 422)  # Paris


# -- /entity.json ------------------------------------------------------------------------------------


def test_entity_json_has_the_shape_of_the_platforms_answer(client, real_data):
    theirs = _mock(real_data, "bops__planning_data-LBH.json")
    body = client.get("/entity.json", params={"dataset": "conservation-area", "limit": 2}).json()
    assert set(body) == set(theirs)
    assert type(body["count"]) is int and isinstance(body["links"], dict)
    reference = json.loads((real_data / "bops__1000005.json").read_text())
    # the platform's entity model since: organisation-entity an integer, and a quality field
    reference |= {"organisation-entity": int(reference["organisation-entity"]), "quality": ""}
    for entity in body["entities"]:
        for field in ENTITY_FIELDS:
            assert type(entity[field]) is type(reference[field]) or entity[field] == "", field
        assert None not in entity.values()  # the platform writes nulls as ""


def test_links_are_empty_when_one_page_holds_everything_and_page_through_otherwise(client):
    small = client.get("/entity.json", params={"dataset": "world-heritage-site"}).json()
    assert small["links"] == {} and small["count"] == len(small["entities"])
    everything = client.get(
        "/entity.json", params={"dataset": "listed-building-outline", "limit": 500}
    ).json()
    first = client.get("/entity.json", params={"dataset": "listed-building-outline", "limit": 100}).json()
    assert first["count"] == everything["count"] > 100
    assert set(first["links"]) == {"first", "next", "last"}
    seen, url = [], "/entity.json?dataset=listed-building-outline&limit=100"
    while url:
        page = client.get(url).json()
        seen += [e["entity"] for e in page["entities"]]
        url = page["links"].get("next")
    assert seen == sorted(seen) and seen[:500] == [e["entity"] for e in everything["entities"]]
    assert len(seen) == everything["count"]
    assert "prev" in client.get(first["links"]["next"]).json()["links"]


def test_an_entity_matches_the_real_platform_row(client, real_data):
    with open(real_data / "digital-land.info__entities.csv", encoding="utf-8") as handle:
        row = next(r for r in csv.DictReader(handle, delimiter="|") if r["name"] == "Rosendale Road")
    body = client.get(f"/entity/{row['entity']}.json").json()
    assert (
        body["entity"] == int(row["entity"])
        and body["dataset"] == row["dataset"]
        and body["reference"] == row["reference"]
    )
    assert (
        shapely.from_wkt(body["geometry"]).equals_exact(shapely.from_wkt(row["geometry"]).normalize(), 1e-6)
        or shapely.from_wkt(body["geometry"]).symmetric_difference(shapely.from_wkt(row["geometry"])).area
        < 1e-10
    )
    feature = client.get(f"/entity/{row['entity']}.geojson").json()
    reference = json.loads((real_data / "bops__1000005.geojson").read_text())
    assert list(feature) == list(reference)
    assert {k: type(v) for k, v in feature["properties"].items() if k in reference["properties"]} == {
        k: type(reference["properties"][k]) for k in feature["properties"] if k in reference["properties"]
    }
    missing = client.get("/entity/99.json")  # the platform's shape: {"detail": "..."}
    assert missing.status_code == 404 and "entity not found" in missing.json()["detail"]
    assert client.get("/entity/not-a-number.json").json()["detail"][0]["loc"] == ["path", "entity"]


@pytest.mark.parametrize("relation", RELATIONS)
def test_geometry_relations_agree_with_brute_force_over_every_feature(client, snapshot, relation):
    """relation(entity, query) as PostGIS ST_<relation>(entity.geometry, query) on the platform."""
    bath_conservation_area = next(
        layer.geometry[i]
        for layer in [snapshot.layers["conservation-area"]]
        for i in range(len(layer))
        if layer.columns["name"][i] == "Bath"
    )
    # the site, a box over the city, and the conservation area itself (simplified to fit in a URL)
    simplified = shapely.from_wkt(
        shapely.to_wkt(bath_conservation_area.simplify(0.0003), rounding_precision=6)
    )
    queries = [shapely.from_wkt(BATH_WKT), shapely.box(-2.40, 51.36, -2.33, 51.40), simplified]
    predicate = {"coveredby": shapely.covered_by}.get(relation) or getattr(shapely, relation)
    for query in queries:
        expected = sorted(
            int(layer.entity[i])
            for name in (
                "conservation-area",
                "listed-building",
                "listed-building-outline",
                "world-heritage-site",
            )
            for layer in [snapshot.layers[name]]
            for i in np.flatnonzero(predicate(layer.geometry, query))
        )
        params = {
            "geometry": shapely.to_wkt(query, rounding_precision=-1),
            "geometry_relation": relation,
            "dataset": [
                "conservation-area",
                "listed-building",
                "listed-building-outline",
                "world-heritage-site",
            ],
            "field": "entity",
            "limit": 500,
        }
        body = client.get("/entity.json", params=params).json()
        assert body["count"] == len(expected), (relation, body["count"], len(expected))
        assert [e["entity"] for e in body["entities"]] == expected[:500]


def test_within_is_the_default_relation_as_on_the_platform(client):
    default = client.get("/entity.json", params={"geometry": BATH_WKT, "dataset": "conservation-area"}).json()
    intersects = client.get(
        "/entity.json",
        params={"geometry": BATH_WKT, "dataset": "conservation-area", "geometry_relation": "intersects"},
    ).json()
    assert default["count"] == 0  # the conservation area is not within the small site
    assert [e["name"] for e in intersects["entities"]] == ["Bath"]


def test_point_search_filters_and_field_selection(client):
    at = client.get(
        "/entity.json", params={"longitude": -2.3610, "latitude": 51.3814, "dataset": "conservation-area"}
    ).json()
    assert [e["name"] for e in at["entities"]] == ["Bath"]
    entity = at["entities"][0]["entity"]
    assert client.get("/entity.json", params={"entity": entity}).json()["count"] == 1
    assert (
        client.get("/entity.json", params={"reference": "1395637", "dataset": "listed-building"}).json()[
            "entities"
        ][0]["reference"]
        == "1395637"
    )
    only = client.get("/entity.json", params={"entity": entity, "field": ["name", "reference"]}).json()[
        "entities"
    ][0]
    assert set(only) == {"entity", "name", "reference"}
    without = client.get("/entity.json", params={"entity": entity, "exclude_field": "geometry,point"}).json()[
        "entities"
    ][0]
    assert "geometry" not in without and "point" not in without and "name" in without
    current = client.get(
        "/entity.json", params={"dataset": "scheduled-monument", "period": "current"}
    ).json()["count"]
    historical = client.get(
        "/entity.json", params={"dataset": "scheduled-monument", "period": "historical"}
    ).json()["count"]
    assert (
        current + historical
        == client.get("/entity.json", params={"dataset": "scheduled-monument"}).json()["count"]
    )


def test_entity_geojson_is_a_feature_collection_like_the_platforms(client, real_data):
    theirs = _mock(real_data, "planx-new__planningDataResponse.json")
    response = client.get("/entity.geojson", params={"dataset": "world-heritage-site"})
    assert response.headers["content-type"].startswith("application/geo+json")
    body = response.json()
    assert set(body) == set(theirs) and body["type"] == "FeatureCollection"
    feature = body["features"][0]
    assert list(feature) == list(theirs["features"][0])
    assert shapely.geometry.shape(feature["geometry"]).is_valid
    assert set(theirs["features"][0]["properties"]) <= set(feature["properties"])


def test_search_parameters_are_refused_as_on_the_platform(client):
    """Errors of the platform's endpoints take its shape: {"detail": [{"loc", "msg", "type"}]}."""

    def refused(params) -> dict:
        response = client.get("/entity.json", params=params)
        assert response.status_code == 422 and response.headers["content-type"] == "application/json"
        return response.json()["detail"][0]

    geojson = refused({"geometry": json.dumps(BATH_SITE)})
    assert geojson["loc"] == ["geometry"] and "WKT" in geojson["ctx"]["reason"]
    assert refused({"limit": 501})["msg"] == "ensure this value is less than or equal to 500"
    assert refused({"limit": 0})["loc"] == ["query", "limit"]
    assert refused({"geometry_relation": "near"})["type"] == "type_error.enum"
    assert refused({"longitude": -2.36})["loc"] == ["latitude"]
    unknown = refused({"dataset": "no-such-dataset"})
    assert unknown["type"] == "value_error.datasetvaluenotfound" and "conservation-area" in unknown["ctx"]["dataset_names"]
    # a dataset the platform has but this service has not loaded is answered without, and named in a
    # header: see test_planx_traffic.py


# -- /dataset.json and /v1/datasets -----------------------------------------------------------------


def test_dataset_json_counts_what_is_loaded_with_the_platforms_fields(client, snapshot, real_data):
    mock = _mock(real_data, "planx-new__digitalLandResponseMock.json")["metadata"][
        "designated.conservationArea"
    ]
    one = client.get("/dataset/conservation-area.json").json()
    assert one["entity-count"] == len(snapshot.layers["conservation-area"])
    assert set(mock) <= set(one)
    assert one["attribution"] == "historic-england" and one["licence"] == "ogl3"
    listing = client.get("/dataset.json").json()["datasets"]
    assert {d["dataset"]: d["entity-count"] for d in listing} == {
        n: len(layer) for n, layer in snapshot.layers.items()
    }
    assert client.get("/dataset/tree.json").json()["detail"].startswith("dataset not found")


def test_v1_datasets_reports_each_cached_dataset(client, snapshot):
    body = client.get("/v1/datasets").json()
    rows = {d["dataset"]: d for d in body["datasets"]}
    assert set(rows) == set(snapshot.layers)
    for name, row in rows.items():
        entry = snapshot.layers[name].entry
        assert row["count"] == len(snapshot.layers[name]) == entry["features"]
        assert row["loaded_at"] == entry["loaded_at"] and row["source"] == entry["source"] and "etag" in row
        assert row["stale"] is False  # loaded moments ago
        assert row["attribution"] and row["licence"] == "ogl3"
    assert "tree-preservation-zone" in body["missing"] and body["data_version"] == snapshot.data_version


def test_every_answer_carries_the_data_version(client, snapshot):
    for path in ("/healthz", "/entity.json", "/dataset.json", "/v1/datasets", "/entity/1.json", "/nowhere"):
        assert client.get(path).headers["x-redline-data-version"] == snapshot.data_version, path


# -- OpenAPI examples ----------------------------------------------------------------------------------


def test_every_operation_of_the_check_platform_and_boundary_api_has_an_example_from_a_real_answer(client):
    from api.examples import examples

    spec = client.get("/openapi.json").json()
    for operation, captured in examples().items():
        method, path = operation.split(" ", 1)
        op = spec["paths"][path][method.lower()]
        content = op["responses"][str(captured.get("status", 200))]["content"]
        assert "example" in content[captured["media_type"]], operation
        if captured["request"]["body"] is not None:
            assert op["requestBody"]["content"]["application/json"]["example"] == captured["request"]["body"]
        stored = path.startswith(("/v1/boundaries", "/v1/change-requests"))  # not in this test's store
        if method == "GET" and not stored and captured["media_type"].endswith("json"):  # today's shape still
            fresh = client.get(captured["request"]["path"], params=captured["request"]["query"]).json()
            assert set(fresh) == set(captured["response"]), operation
    ours = {
        "/v1/check",
        "/gis/{team}",
        "/entity.json",
        "/entity.geojson",
        "/entity/{entity}.json",
        "/entity/{entity}.geojson",
        "/dataset.json",
        "/dataset/{name}.json",
        "/v1/datasets",
        "/metrics",
        "/healthz",
        "/readyz",
        "/v1/validate",
        "/v1/boundaries",
        "/v1/boundaries/{boundary_id}",
        "/v1/boundaries/{boundary_id}/versions",
        "/v1/boundaries/{boundary_id}/versions/{n}/odp",
        "/v1/boundaries/{boundary_id}/audit",
        "/v1/boundaries/{boundary_id}/change-requests",
        "/v1/change-requests/{request_id}",
        "/v1/change-requests/{request_id}/approve",
        "/v1/change-requests/{request_id}/reject",
    }
    assert ours <= {op.split(" ", 1)[1] for op in examples()}
    parameters = {p["name"]: p for p in spec["paths"]["/entity.json"]["get"]["parameters"]}
    assert unquote_plus(parameters["geometry"]["example"]).startswith("POLYGON")


def test_the_openapi_declares_how_each_operation_is_authorised(client):
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["apiKey"] == {"type": "http", "scheme": "bearer", "description": schemes["apiKey"]["description"]}
    assert schemes["changeRequestToken"]["scheme"] == "bearer"
    assert "Authorization: Bearer TOKEN" in schemes["changeRequestToken"]["description"]
    paths = spec["paths"]
    for path, method in [("/v1/check", "post"), ("/v1/boundaries", "post"), ("/entity.json", "get")]:
        assert {"apiKey": []} in paths[path][method]["security"], path
    for action in ("approve", "reject"):
        assert paths[f"/v1/change-requests/{{request_id}}/{action}"]["post"]["security"] == [{"changeRequestToken": []}]
    assert "security" not in paths["/healthz"]["get"]
