"""The Planning Data Platform's own entity-search cases, replayed over real HTTP against redline.

redline holds the platform's test entities (``tests/data/platform/entities.csv``, see its SOURCES.md),
loaded through redline's own file loader, and is asked what digital-land.info's tests ask the platform:
``tests/integration/test_entity_search.py``, the ``/entity*`` and ``/dataset*`` cases of
``tests/integration/test_api.py`` and ``test_search_invalid_entities.py``, and the acceptance cases in
``tests/acceptance/api_contract/test_entity_route.py`` and ``tests/acceptance/parameters/``. The cases
are ported in redline's words: the query geometries are made here from the entities' own shapes.

Where redline deliberately answers otherwise, the test is named ``test_deliberately_...``, checks what
redline does instead, and the README ("The platform's entity search") says why. The tests after those
cover the parameters the platform's tests leave out.

Tally of the platform's cases (a parametrised case counts once per value): 105 ported, 96 pass as the
platform's, 9 are deliberate differences (4 retired entity numbers, 2 invalid geometries, the
organisation curie without geometry, the CURIE page without suffix, GeoJSON's media type). Not ported,
having no HTTP behaviour to replay: the 2 cases asserting the SQL text (``entity_subdivided``) and the
browser's blank search of the HTML site.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import shapely
from api_fixtures import LiveServer, make_app

from datasets.cache import LayerCache
from datasets.loaders import read_layer_file

csv.field_size_limit(sys.maxsize)
ENTITIES = Path(__file__).parent / "data" / "platform" / "entities.csv"

# A bow tie: a real shape of the platform's invalid-geometry cases (its Hadrian's Wall crosses itself).
BOW_TIE = "MULTIPOLYGON(((-2.30 55.00,-2.20 55.05,-2.20 55.00,-2.30 55.05,-2.30 55.00)))"
INVALID = {"entity": "16100009", "name": "Frontiers of the Roman Empire - invalid", "dataset": "world-heritage-site",
           "prefix": "world-heritage-site", "reference": "430", "typology": "geography", "geometry": BOW_TIE}


def _rows() -> list[dict]:
    with open(ENTITIES, encoding="utf-8") as handle:
        rows = [{k.replace("_", "-"): (v or "") for k, v in row.items()} for row in csv.DictReader(handle, delimiter="|")]
    return rows + [{k: INVALID.get(k, "") for k in rows[0]}]


ROWS = _rows()
# what redline holds: a constraint service keeps geographic entities; one with neither geometry nor point is skipped
HELD = [r for r in ROWS if r["geometry"] or r["point"]]


def _shape(entity: int):
    row = next(r for r in HELD if int(r["entity"]) == entity)
    return shapely.from_wkt(row["geometry"] or row["point"])


GREENSPACE, FOREST, BROWNFIELD, MONUMENT = (_shape(n) for n in (1, 2, 3, 4))
ROSENDALE_ROAD = 3030404  # a conservation area in Lambeth holding the three tree points
TREES = {7002001662, 7002001663, 7002001664}


def _load(root: Path, entities: list[dict] = ROWS) -> Path:
    """A redline data folder holding ``entities`` (the platform's test entities), one cached dataset each."""
    cache = LayerCache(root / "data")
    by_dataset: dict[str, list[dict]] = {}
    for row in entities:
        by_dataset.setdefault(row["dataset"], []).append(row)
    for dataset, rows in by_dataset.items():
        if not any(r["geometry"] or r["point"] for r in rows):
            continue  # organisations and timetables: no geometry at all, nothing for a constraint service
        path = root / f"{dataset}.csv"
        columns = [c for c in rows[0] if c != "json"]
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        report = read_layer_file(path, dataset)  # skips a row without geometry, repairs an invalid one
        cache.write(dataset, report.frame, source=report.source)
    return root / "data"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = _load(tmp_path_factory.mktemp("platform-entities"))
    with LiveServer(make_app(data, load_samples=False)) as live:
        yield live


def get(server, path: str, params=None) -> httpx.Response:
    return httpx.get(server.url + path, params=params, timeout=30)


def search(server, **params) -> dict:
    response = get(server, "/entity.json", {"limit": 100} | params)
    assert response.status_code == 200, response.text[:500]
    return response.json()


def refusal(response: httpx.Response, status: int = 422) -> dict:
    """The platform's error shape: {"detail": [{"loc", "msg", "type"}]}; the first item."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, list) and {"loc", "msg", "type"} <= set(detail[0])
    return detail[0]


def datasets_of(body: dict) -> set[str]:
    return {e["dataset"] for e in body["entities"]}


def held(predicate) -> int:
    return sum(1 for r in HELD if predicate(r))


# -- query geometries, made from the entities' own shapes -------------------------------------------


def _overlapping(shape):
    """A box over a corner of ``shape``: partly inside, partly out."""
    x0, y0, x1, y1 = shape.bounds
    box = shapely.box((x0 + x1) / 2, (y0 + y1) / 2, x1 + (x1 - x0) / 2, y1 + (y1 - y0) / 2)
    assert shapely.overlaps(shape, box)
    return box


def _inside(shape):
    box = shape.point_on_surface().buffer(0.00002, quad_segs=1)
    assert shapely.contains(shape, box)
    return box


def _touching(shape):
    """A triangle standing on one edge of ``shape``, outside it."""
    a, b = list(shapely.get_exterior_ring(shapely.get_parts(shape)[0]).coords)[:2]
    mid, normal = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2), (b[1] - a[1], a[0] - b[0])
    for sign in (1, -1):
        triangle = shapely.Polygon([a, b, (mid[0] + sign * normal[0], mid[1] + sign * normal[1])])
        if shapely.touches(shape, triangle):
            return triangle
    raise AssertionError("no triangle touches the shape")


def _crossing(shape):
    x0, y0, x1, y1 = shape.bounds
    centre = shape.point_on_surface()
    line = shapely.LineString([(x0 - 0.01, centre.y), (x1 + 0.01, centre.y)])
    assert shapely.crosses(shape, line)
    return line


NOWHERE = shapely.box(-3.02, 50.08, -2.72, 50.24)  # the sea off Dorset
LAMBETH_EMPTY = shapely.box(-0.1238, 51.4881, -0.1163, 51.4955)  # Vauxhall: none of the entities


def wkt(shape) -> str:
    return shapely.to_wkt(shape, rounding_precision=-1)


# -- tests/integration/test_entity_search.py ---------------------------------------------------------


def test_search_entity_by_dataset_name_not_in_system_returns_error(server):
    error = refusal(get(server, "/entity.json", {"dataset": "not-exists"}))
    assert error["loc"] == ["dataset"] and error["type"] == "value_error.datasetvaluenotfound"
    assert error["msg"].startswith("Requested datasets do not exist: not-exists. Valid dataset names: ")
    assert {"greenspace", "forest", "brownfield-site", "historical-monument"} <= set(error["ctx"]["dataset_names"])


def test_search_entity_by_dataset_names_not_in_system_returns_only_missing(server):
    error = refusal(get(server, "/entity.json", [("dataset", "not-exists"), ("dataset", "greenspace")]))
    assert error["msg"].startswith("Requested datasets do not exist: not-exists. ")


def test_search_entity_by_single_dataset_name(server):
    body = search(server, dataset="greenspace")
    assert body["count"] == 1 and body["entities"][0]["dataset"] == "greenspace"
    assert body["entities"][0]["typology"] == "geography"


def test_search_entity_by_list_of_dataset_names(server):
    body = search(server, dataset=["greenspace", "brownfield-site"])
    assert body["count"] == 2 and datasets_of(body) == {"greenspace", "brownfield-site"}


def _entered(r) -> date | None:
    return date.fromisoformat(r["entry-date"]) if r["entry-date"] else None


def test_search_entity_by_date_since(server):
    for year in (2019, 2020, 2021, 2022, 2023):
        body = search(server, entry_date_year=year, entry_date_month=1, entry_date_day=1, entry_date_match="since")
        assert body["count"] == held(lambda r, year=year: _entered(r) and _entered(r) > date(year, 1, 1)), year
        if year >= 2020:
            assert "greenspace" not in datasets_of(body)


def test_search_entity_by_date_before(server):
    for year in (2019, 2020, 2021, 2030):
        body = search(server, entry_date_year=year, entry_date_month=1, entry_date_day=1, entry_date_match="before")
        assert body["count"] == held(lambda r, year=year: _entered(r) and _entered(r) < date(year, 1, 1)), year
    assert body["count"] == held(lambda r: bool(r["entry-date"]))  # 2030: every dated entity


def test_search_entity_by_date_equal(server):
    assert search(server, entry_date_year=2019, entry_date_month=1, entry_date_day=1)["count"] == 0
    body = search(server, entry_date_year=2019, entry_date_month=1, entry_date_day=7)
    assert body["count"] == 1 and body["entities"][0]["dataset"] == "greenspace"


def test_search_entity_by_point(server):
    assert search(server, longitude=-1.64794921875, latitude=50.51342652633956)["count"] == 0  # the Solent
    inside = MONUMENT.point_on_surface()
    body = search(server, longitude=inside.x, latitude=inside.y)
    assert body["count"] == 1 and body["entities"][0]["dataset"] == "historical-monument"


def test_search_entity_by_single_polygon_intersects(server):
    for shape, dataset in ((BROWNFIELD, "brownfield-site"), (GREENSPACE, "greenspace")):
        body = search(server, geometry=wkt(_overlapping(shape)), geometry_relation="intersects")
        assert body["count"] >= 1 and dataset in datasets_of(body)


def test_search_entity_by_list_of_polygons_that_intersect(server):
    geometries = [wkt(_overlapping(BROWNFIELD)), wkt(_overlapping(GREENSPACE))]
    body = search(server, geometry=geometries, geometry_relation="intersects")
    assert body["count"] >= 2 and {"brownfield-site", "greenspace"} <= datasets_of(body)


def test_search_entity_by_polygon_with_no_intersection(server):
    assert search(server, geometry=wkt(NOWHERE), geometry_relation="intersects")["count"] == 0


def test_search_all_entities(server):
    body = search(server)
    assert body["count"] == len(HELD)
    assert sorted(e["entity"] for e in body["entities"]) == sorted(int(r["entity"]) for r in HELD)


def test_search_current_entries(server):
    today = date.today().isoformat()
    body = search(server, period="current")
    assert body["count"] == held(lambda r: not r["end-date"] or r["end-date"] > today)
    assert "greenspace" not in datasets_of(body) and "forest" in datasets_of(body)  # forest ends in 2045


def test_search_historical_entries(server):
    body = search(server, period="historical")
    assert body["count"] == 1 and body["entities"][0]["dataset"] == "greenspace"


def test_search_includes_only_field_params(server):
    body = search(server, limit=10, field="name")
    assert body["count"] == len(HELD) and set(body["entities"][0]) == {"name", "entity"}


def test_search_includes_multiple_field_params(server):
    body = search(server, limit=10, field=["name", "dataset"])
    assert set(body["entities"][0]) == {"name", "dataset", "entity"}


ENTITY_MODEL_FIELDS = ["entry-date", "start-date", "end-date", "entity", "name", "dataset", "typology",
                       "reference", "prefix", "organisation-entity", "geometry", "point", "quality"]


@pytest.mark.parametrize("field", ENTITY_MODEL_FIELDS)
def test_search_includes_any_field_params(server, field):
    body = search(server, limit=10, field=field)
    assert body["count"] == len(HELD) and set(body["entities"][0]) == {field, "entity"}


def test_search_pagination_does_not_affect_count(server):
    assert search(server, limit=1)["count"] == len(HELD)


def test_search_filtering_does_affect_count(server):
    assert search(server, limit=1, dataset="greenspace")["count"] == 1


def test_search_entity_equal_to_a_polygon(server):
    body = search(server, geometry=wkt(BROWNFIELD), geometry_relation="equals")
    assert body["count"] >= 1 and "brownfield-site" in datasets_of(body)


def test_search_entity_disjoint_from_a_polygon(server):
    probe = wkt(_overlapping(BROWNFIELD))
    touching = {e["entity"] for e in search(server, geometry=probe, geometry_relation="intersects")["entities"]}
    apart = {e["entity"] for e in search(server, geometry=probe, geometry_relation="disjoint")["entities"]}
    assert touching and apart and not touching & apart
    assert touching | apart == {int(r["entity"]) for r in HELD}  # every held entity has a geometry


def test_search_entity_that_polygon_touches(server):
    body = search(server, geometry=wkt(_touching(FOREST)), geometry_relation="touches")
    assert body["count"] == 1 and body["entities"][0]["dataset"] == "forest"


def test_search_entity_that_contains_a_polygon(server):
    body = search(server, geometry=wkt(_inside(GREENSPACE)), geometry_relation="contains")
    assert body["count"] == 1 and body["entities"][0]["dataset"] == "greenspace"


def test_search_entity_that_covers_a_polygon(server):
    body = search(server, geometry=wkt(_inside(GREENSPACE)), geometry_relation="covers")
    assert body["count"] == 1 and body["entities"][0]["dataset"] == "greenspace"


def test_search_entity_covered_by_a_polygon(server):
    around = shapely.box(*MONUMENT.buffer(0.0005).bounds)
    body = search(server, geometry=wkt(around), geometry_relation="coveredby")
    assert body["count"] == 1 and body["entities"][0]["dataset"] == "historical-monument"


def test_search_entity_that_overlaps_a_polygon(server):
    body = search(server, geometry=wkt(_overlapping(BROWNFIELD)), geometry_relation="overlaps")
    assert body["count"] >= 1 and "brownfield-site" in datasets_of(body)


def test_search_entity_that_is_crossed_by_a_line(server):
    body = search(server, geometry=wkt(_crossing(MONUMENT)), geometry_relation="crosses")
    assert body["count"] == 1 and body["entities"][0]["dataset"] == "historical-monument"


def test_search_geometry_entity_returns_entities_that_intersect_with_entity(server):
    body = search(server, geometry_entity=ROSENDALE_ROAD, dataset="tree")
    assert body["count"] == 3 and {e["entity"] for e in body["entities"]} == TREES


def test_search_entity_by_curie(server):
    body = search(server, curie="greenspace:Q1234567")
    assert body["count"] == 1
    assert (body["entities"][0]["prefix"], body["entities"][0]["reference"]) == ("greenspace", "Q1234567")


def test_deliberately_no_entity_without_geometry_is_held(server):
    """The platform's case finds local-authority:DAC, an organisation with no geometry; redline holds
    geographic entities only (its loader skips a row with neither geometry nor point)."""
    assert search(server, curie="local-authority:DAC")["count"] == 0
    assert held(lambda r: r["dataset"] == "local-authority") == 0


def test_search_entity_with_exclude_parameter(server):
    geometries = [wkt(_overlapping(BROWNFIELD)), wkt(_overlapping(GREENSPACE))]
    every = search(server, geometry=geometries, geometry_relation="intersects", exclude_field="")
    assert every["count"] >= 2 and all(e["geometry"] for e in every["entities"])
    slim = search(server, geometry=geometries, geometry_relation="intersects", exclude_field="geometry")
    assert slim["count"] == every["count"] and not any("geometry" in e for e in slim["entities"])


# -- tests/integration/test_api.py: /entity* and /dataset* ------------------------------------------


def test_app_returns_valid_geojson_list(tmp_path):
    with LiveServer(make_app(tmp_path / "empty", load_samples=False)) as empty:
        body = get(empty, "/entity.geojson").json()
    assert body["type"] == "FeatureCollection" and body["features"] == []


def test_app_returns_valid_populated_geojson_list(server):
    body = get(server, "/entity.geojson").json()
    assert body["type"] == "FeatureCollection" and len(body["features"]) == min(10, len(HELD))


def test_lasso_geo_search_finds_results(server):
    response = get(server, "/entity.geojson", {"geometry_relation": "intersects", "geometry": wkt(_overlapping(GREENSPACE))})
    assert response.status_code == 200 and response.json()["features"]
    for feature in response.json()["features"]:
        assert feature["type"] == "Feature" and feature["geometry"] and feature["properties"]["dataset"] == "greenspace"


def test_lasso_geo_search_finds_no_results(server):
    body = get(server, "/entity.geojson", {"geometry_relation": "intersects", "geometry": wkt(LAMBETH_EMPTY)}).json()
    assert body["type"] == "FeatureCollection" and body["features"] == []


@pytest.mark.parametrize("path", ["/entity/999999", "/entity/999999.json", "/entity/999998", "/entity/999998.json"])
def test_deliberately_retired_entity_numbers_are_not_found(server, path):
    """The platform answers 301 (merged into another entity) or 410 (removed) from its old-entity table,
    for the page and the .json alike; its bulk files do not carry that table, so redline answers 404."""
    assert get(server, path).status_code == 404


def test_dataset_json_endpoint_returns_as_expected(server):
    body = get(server, "/dataset.json").json()
    listed = {d["dataset"]: d for d in body["datasets"]}
    assert set(listed) == {r["dataset"] for r in HELD}
    for name, dataset in listed.items():
        assert dataset["entity-count"] == held(lambda r, name=name: r["dataset"] == name)  # an integer
        assert "entities" in dataset and "attribution-text" in dataset and "licence-text" in dataset
    for name in ("conservation-area", "tree", "area-of-outstanding-natural-beauty", "article-4-direction-area"):
        # the datasets the specification describes: redline ships its metadata for those
        assert listed[name]["themes"] and listed[name]["attribution-text"] and listed[name]["licence-text"]
    assert {d["dataset"] for d in body["typologies"]["geography"]["dataset"]} == set(listed)


INVALID_WKT = [
    ("POINT (-0.33753991127014155 53.74458682618967)", 200),
    ("'POINT (-0.33753991127014155 53.74458682618967)'", 422),
    ('"POINT (-0.33753991127014155 53.74458682618967)"', 422),
    ("POINT (-0.33753991127014155)", 422),
    ("POLYGON ((-0.33753991127014155)", 422),
    ("MULTIPOLYGON ((-0.33753991127014155)))", 422),
    ("\t", 422),
]


@pytest.mark.parametrize(("geometry", "status"), INVALID_WKT)
def test_api_handles_invalid_wkt(server, geometry, status):
    response = get(server, "/entity.geojson", {"geometry_relation": "intersects", "geometry": geometry})
    assert response.status_code == status
    if status == 422:
        assert refusal(response)["msg"] == f"Invalid geometry {geometry}"


def test_search_by_entity_and_geometry_entity_require_numeric_id(server):
    for name in ("geometry_entity", "entity"):
        error = refusal(get(server, "/entity.geojson", {name: "not a number"}))
        assert error["msg"] == "value is not a valid integer" and error["loc"][1] == name


DATE_PARAMS = [
    (["entry_date_day"], {"entry_date_year": 2022, "entry_date_month": 11, "entry_date_day": -1}),
    (["entry_date_day"], {"entry_date_year": 2022, "entry_date_month": 11, "entry_date_day": 32}),
    (["entry_date_month"], {"entry_date_year": 2022, "entry_date_month": -1, "entry_date_day": 1}),
    (["entry_date_month"], {"entry_date_year": 2022, "entry_date_month": 13, "entry_date_day": 1}),
    (["query", "entry_date_year"], {"entry_date_year": "twenty_twenty_two", "entry_date_month": 1, "entry_date_day": 1}),
    (["start_date_day"], {"star_date_year": 2022, "start_date_month": 11, "start_date_day": -1}),
    (["start_date_day"], {"start_date_year": 2022, "start_date_month": 11, "start_date_day": 32}),
    (["start_date_month"], {"start_date_year": 2022, "start_date_month": -1, "start_date_day": 1}),
    (["start_date_month"], {"start_date_year": 2022, "start_date_month": 13, "start_date_day": 1}),
    (["query", "start_date_year"], {"start_date_year": "twenty_twenty_two", "start_date_month": 1, "start_date_day": 1}),
    (["end_date_day"], {"end_date_year": 2022, "end_date_month": 11, "end_date_day": -1}),
    (["end_date_day"], {"end_date_year": 2022, "end_date_month": 11, "end_date_day": 32}),
    (["end_date_month"], {"end_date_year": 2022, "end_date_month": -1, "end_date_day": 1}),
    (["end_date_month"], {"end_date_year": 2022, "end_date_month": 13, "end_date_day": 1}),
    (["query", "end_date_year"], {"end_date_year": "twenty_twenty_two", "end_date_month": 1, "end_date_day": 1}),
    (["end_date_month"], {"end_date_year": 2022, "end_date_month": "-1", "end_date_day": 1}),
    (["end_date_day"], {"end_date_year": 2022, "end_date_month": 1, "end_date_day": "33"}),
]


@pytest.mark.parametrize(("loc", "params"), DATE_PARAMS)
def test_api_requires_numeric_date_fields_in_range(server, loc, params):
    assert refusal(get(server, "/entity.geojson", params))["loc"] == loc


@pytest.mark.parametrize("curie", ["", ":", "broken", "bro-ken", "bro;ken", "bro\tken"])
def test_search_entity_rejects_invalid_curie(server, curie):
    error = refusal(get(server, "/entity.json", {"curie": curie}))
    assert error["msg"] == "curie must be in form 'prefix:reference'" and error["loc"][0] == "curie"


def test_get_dataset_unknown_returns_404(server):
    response = get(server, "/dataset/waste-authority.json")
    assert response.status_code == 404 and response.json()["detail"].startswith("dataset not found")


def test_get_dataset_as_json_returns_json(server):
    response = get(server, "/dataset/greenspace.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"


def test_dataset_json_has_licence_and_attribution(server):
    # greenspace is a test dataset the specification does not describe; a described one carries both
    body = get(server, "/dataset/conservation-area.json").json()
    assert body["dataset"] == "conservation-area" and body["attribution"] == "historic-england" and body["licence"] == "ogl3"
    assert body["entity-count"] == 2


def test_get_by_curie_redirects_to_entity(server):
    for path in ("/curie/greenspace:Q1234567.json", "/prefix/greenspace/reference/Q1234567.json"):
        response = httpx.get(server.url + path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == f"{server.url}/entity/1.json"


def test_deliberately_a_curie_without_a_suffix_has_no_page(server):
    """The platform's /curie/{prefix}:{reference} redirects to its HTML entity page; redline serves no
    HTML pages, so only the .json and .geojson forms are answered."""
    assert httpx.get(server.url + "/curie/greenspace:Q1234567").status_code == 404


def test_get_by_curie_404s_for_unknown_reference(server):
    response = httpx.get(server.url + "/curie/not:found.json", follow_redirects=False)
    assert response.status_code == 404 and response.json()["detail"].startswith("entity not found")


def test_entity_extension_json(server):
    response = httpx.get(f"{server.url}/curie/greenspace:Q1234567.json", follow_redirects=True)
    assert response.status_code == 200 and "application/json" in response.headers["content-type"]
    assert response.json()["entity"] == 1


def test_deliberately_geojson_is_served_as_geojson(server):
    """The platform serves .geojson as application/json; redline as application/geo+json (RFC 7946),
    which JSON parsers read alike."""
    response = httpx.get(f"{server.url}/curie/greenspace:Q1234567.geojson", follow_redirects=True)
    assert response.status_code == 200 and response.headers["content-type"] == "application/geo+json"
    assert response.json()["properties"]["entity"] == 1


def test_a_curie_several_entities_share_redirects_to_a_search(server):
    response = httpx.get(server.url + "/curie/tree:1662.json", follow_redirects=False)
    assert response.headers["location"].endswith("/entity/7002001662.json")
    shared = httpx.get(server.url + "/curie/article-4-direction-area:A4D1.json", follow_redirects=True).json()
    assert {e["entity"] for e in shared["entities"]} == {7010004280, 7010005998}


# -- tests/integration/data_access/test_entity_queries.py: each case loads its own few entities -----


def _square(x: float, y: float, size: float) -> str:
    return wkt(shapely.box(x, y, x + size, y + size))


def _entity(entity: int, dataset: str, reference: str, geometry: str) -> dict:
    return {"entity": str(entity), "dataset": dataset, "reference": reference, "prefix": dataset, "name": "",
            "typology": "geography", "geometry": geometry, "point": "", "entry-date": "", "start-date": "", "end-date": ""}


BEDFORDSHIRE = [
    _entity(1, "conservation-area", "CA1", _square(-0.45, 52.30, 0.05)),
    _entity(2, "conservation-area", "CA2", _square(-0.45, 52.30, 0.05)),
    _entity(3, "local-authority-district", "LPLAD1", _square(-0.90, 52.15, 0.70)),
    # a second district under the same reference, apart from the conservation areas
    _entity(4, "local-authority-district", "LPLAD1", _square(-0.10, 52.20, 0.10)),
    _entity(5, "flood-risk-zone", "FRZ1", _square(-5.06, 50.25, 0.02)),  # by Truro
    _entity(6, "local-authority-district", "LPLAD2", _square(-0.80, 52.20, 0.50)),
]


@pytest.fixture(scope="module")
def bedfordshire(tmp_path_factory):
    data = _load(tmp_path_factory.mktemp("entity-queries"), BEDFORDSHIRE)
    with LiveServer(make_app(data, load_samples=False)) as live:
        yield live


@pytest.mark.parametrize("reference", ["LPLAD2", "LPLAD1"])  # one district; two sharing the reference
def test_get_entity_search_geometry_reference_queries_returns_correct_results(bedfordshire, reference):
    body = search(bedfordshire, dataset="conservation-area", geometry_reference=reference)
    assert body["count"] == 2 and {e["entity"] for e in body["entities"]} == {1, 2}  # within any of them


@pytest.mark.parametrize(
    ("datasets", "expected"),
    [(["conservation-area"], {"conservation-area"}), (["flood-risk-zone"], {"flood-risk-zone"}),
     (["flood-risk-zone", "conservation-area"], {"flood-risk-zone", "conservation-area"})],
)
def test_get_entity_search(bedfordshire, datasets, expected):
    body = search(bedfordshire, dataset=datasets)
    assert body["count"] == held_in(BEDFORDSHIRE, datasets) and datasets_of(body) == expected


def held_in(entities: list[dict], datasets: list[str]) -> int:
    return sum(1 for e in entities if e["dataset"] in datasets)


def test_get_entity_search_apply_location_filters_geometry(bedfordshire):
    body = search(bedfordshire, geometry=_square(-0.60, 52.20, 0.40), dataset="conservation-area")
    assert body["count"] == 2 and datasets_of(body) == {"conservation-area"}


def test_get_entity_search_with_point_filter(bedfordshire):
    body = search(bedfordshire, longitude=-5.05, latitude=50.26, dataset="flood-risk-zone")
    assert body["count"] == 1 and datasets_of(body) == {"flood-risk-zone"}


# -- tests/integration/test_search_invalid_entities.py ------------------------------------------------


def test_deliberately_an_invalid_geometry_is_repaired_on_load_rather_than_left_out(server):
    """The platform leaves an entity whose stored geometry is invalid (ST_IsValid false) out of every
    spatial search; redline repairs it when loading (make_valid), so it is found where it lies."""
    body = search(server, dataset="world-heritage-site", geometry=wkt(shapely.box(-2.32, 54.98, -2.18, 55.07)), geometry_relation="intersects")
    assert [e["entity"] for e in body["entities"]] == [16100009]
    assert shapely.from_wkt(body["entities"][0]["geometry"]).is_valid


def test_deliberately_geometry_reference_uses_the_repaired_geometry(server):
    body = search(server, geometry_reference="430", geometry_relation="intersects", dataset="world-heritage-site")
    assert [e["entity"] for e in body["entities"]] == [16100009]


# -- tests/acceptance: the entity route and the quality and exclude_field parameters ---------------


def test_entity_fields_returned(server):
    body = get(server, "/entity/1.json").json()
    assert set(body) == set(ENTITY_MODEL_FIELDS)


@pytest.mark.parametrize(("quality", "expected"), [(["some"], "some"), (["some", "authoritative"], "both")])
def test_quality_filters_rows(server, quality, expected):
    body = search(server, quality=quality)
    assert body["count"] == held(lambda r: r["quality"] in quality) and {e["quality"] for e in body["entities"]} == set(quality)


@pytest.mark.parametrize("excluded", [["geometry"], ["point", "geometry"]])
def test_entity_search_excludes_field_for_json_response(server, excluded):
    body = search(server, exclude_field=",".join(excluded))
    kept = set(ENTITY_MODEL_FIELDS) - set(excluded)
    for entity in body["entities"]:
        assert kept <= set(entity) and not set(excluded) & set(entity)


def test_get_entity_json_no_exclude_field(server):
    for entity in search(server)["entities"]:
        assert set(ENTITY_MODEL_FIELDS) <= set(entity)


# -- the platform's parameters its tests leave out -------------------------------------------------


def test_typology_prefix_reference_and_organisation_entity_filter_as_on_the_platform(server):
    assert search(server, typology="geography")["count"] == len(HELD)
    error = refusal(get(server, "/entity.json", {"typology": "not-a-typology"}))
    assert error["loc"] == ["typology"] and error["type"] == "value_error.typologyvaluenotfound"
    assert {e["entity"] for e in search(server, prefix="brownfield-land")["entities"]} == {3}  # its prefix, not its dataset
    assert {e["entity"] for e in search(server, reference="A4D1")["entities"]} == {7010004280, 7010005998}
    body = search(server, organisation_entity=600002)
    assert body["count"] == 3 and {e["organisation-entity"] for e in body["entities"]} == {600002}  # an integer
    assert search(server, organisation_entity=[600002, 501910])["count"] == 5


def test_a_non_integer_organisation_entity_is_refused_as_on_the_platform(server):
    error = refusal(get(server, "/entity.json", {"organisation_entity": "local-authority:CRY"}))
    assert error["loc"][:2] == ["query", "organisation_entity"] and error["msg"] == "value is not a valid integer"
    assert refusal(get(server, "/entity.json", {"entity": 0}))["msg"] == "ensure this value is greater than or equal to 1"


def test_curies_each_must_hold_and_organisation_is_matched_as_a_curie(server):
    assert search(server, curie=["greenspace:Q1234567", "forest:Q7654321"])["count"] == 0  # every curie, as the platform
    assert search(server, organisation="tree:1662")["count"] == 1


def test_geometry_curie_and_reference_take_the_geometry_of_held_entities(server):
    body = search(server, geometry_curie="conservation-area:CA47", dataset="tree")
    assert {e["entity"] for e in body["entities"]} == TREES
    both = search(server, geometry_reference="CA47", geometry_entity=ROSENDALE_ROAD, dataset="tree")
    assert both["count"] == 3
    error = refusal(get(server, "/entity.json", {"geometry_entity": 44000001}))
    assert error["loc"] == ["geometry_entity"] and "load its dataset" in error["msg"]  # not held: never "nothing there"


def test_start_and_end_date_filters_use_their_own_match(server):
    assert search(server, start_date_year=1972, start_date_month=12, start_date_day=1)["count"] == 1
    before = search(server, start_date_year=1980, start_date_match="before")
    assert {e["entity"] for e in before["entities"]} == {1000001, 7010004280}
    assert search(server, end_date_year=2030, end_date_match="since")["count"] == 1  # the forest
    assert search(server, end_date_match="empty")["count"] == held(lambda r: not r["end-date"])
    assert search(server, entry_date="2019-01-07")["count"] == 1
    assert search(server, start_date="1972-12-01")["count"] == 1
    # an empty value is "not given", as the platform's search form sends it
    assert search(server, entry_date_year="", entry_date_month="", entry_date_day="")["count"] == len(HELD)
    # a part without its year, or a day that does not exist, is refused rather than ignored
    assert refusal(get(server, "/entity.json", {"entry_date_month": 3}))["loc"] == ["entry_date_year"]
    assert refusal(get(server, "/entity.json", {"entry_date_match": "since"}))["loc"] == ["entry_date_year"]
    assert refusal(get(server, "/entity.json", {"entry_date_year": 2022, "entry_date_month": 2, "entry_date_day": 31}))["loc"] == ["entry_date_day"]
    assert refusal(get(server, "/entity.json", {"entry_date": "2022-13-01"}))["loc"] == ["query", "entry_date"]


def test_entries_is_the_older_name_of_period(server):
    assert search(server, entries="current")["count"] == search(server, period="current")["count"]


def test_a_self_intersecting_or_blank_query_geometry_is_refused(server):
    error = refusal(get(server, "/entity.json", {"geometry": BOW_TIE}))
    assert error["msg"] == f"Invalid geometry {BOW_TIE}" and "Self-intersection" in error["ctx"]["reason"]
    assert refusal(get(server, "/entity.json", {"geometry": "   "}))["loc"] == ["geometry"]
    assert refusal(get(server, "/entity.json", {"geometry": ""}))["loc"] == ["geometry"]


def test_parameters_the_platform_accepts_and_ignores_are_refused(server):
    assert refusal(get(server, "/entity.json", {"theme": "environment"}))["loc"] == ["theme"]
    assert refusal(get(server, "/entity.json", {"q": "SE24 9JS"}))["loc"] == ["q"]
    assert search(server, q="", theme="")["count"] == len(HELD)  # the search form's empty values
    assert refusal(get(server, "/entity.json", {"longitude": -0.09}))["loc"] == ["latitude"]


def test_a_point_search_finds_areas_only_as_on_the_platform(server):
    tree = _shape(7002001662)
    found = {e["entity"] for e in search(server, longitude=tree.x, latitude=tree.y)["entities"]}
    assert ROSENDALE_ROAD in found and not found & TREES  # the area holding the tree, never the tree itself


def test_geojson_takes_exclude_field_but_not_field_as_on_the_platform(server):
    body = get(server, "/entity.geojson", {"dataset": "greenspace", "field": "name", "exclude_field": "quality"}).json()
    properties = body["features"][0]["properties"]
    assert "dataset" in properties and "quality" not in properties and "geometry" not in properties


def _offset(link: str) -> int:
    return int(parse_qs(urlsplit(link).query).get("offset", ["0"])[0])


@pytest.mark.parametrize(
    ("dataset", "limit", "offset", "expected"),
    [
        # 20 entities: last = 20 // limit * limit, a page past the end when limit divides 20; next no further
        (None, 5, 0, {"first": 0, "last": 20, "next": 5}),
        (None, 5, 15, {"first": 0, "last": 20, "prev": 10}),
        (None, 5, 3, {"first": 0, "last": 20, "next": 8}),  # no prev: a whole page does not fit before 3
        (None, 10, 10, {"first": 0, "last": 20, "prev": 0}),
        (None, 20, 0, {}),  # one page holds everything
        (None, 19, 0, {"first": 0, "last": 19, "next": 19}),
        (None, 6, 12, {"first": 0, "last": 18, "next": 18, "prev": 6}),
        # 3 trees a page each: last is offset 3, a page past the end, as the platform makes it
        ("tree", 1, 0, {"first": 0, "last": 3, "next": 1}),
        ("tree", 1, 2, {"first": 0, "last": 3, "prev": 1}),
    ],
)
def test_pagination_links_at_page_edges_as_the_platform_makes_them(server, dataset, limit, offset, expected):
    assert len(HELD) == 20
    params = {"limit": limit, "offset": offset} | ({"dataset": dataset} if dataset else {})
    links = get(server, "/entity.json", params).json()["links"]
    assert {k: _offset(v) for k, v in links.items()} == expected
    for link in links.values():
        query = parse_qs(urlsplit(link).query)
        assert query["limit"] == [str(limit)] and query.get("dataset") == ([dataset] if dataset else None)


def test_dataset_list_takes_the_platforms_parameters(server):
    body = get(server, "/dataset.json", {"dataset": ["tree", "forest"], "field": "dataset,entity-count", "include_typologies": "false"}).json()
    assert body == {"datasets": [{"dataset": "forest", "entity-count": 1}, {"dataset": "tree", "entity-count": 3}]}
    slim = get(server, "/dataset.json", {"exclude_field": "text,description"}).json()
    assert not any("text" in d or "description" in d for d in slim["datasets"]) and "typologies" in slim


def test_errors_of_the_platform_endpoints_parse_as_the_platforms(server):
    for path in ("/entity/12.json", "/entity/12.geojson", "/dataset/nothing.json"):
        response = get(server, path)
        assert response.status_code == 404 and isinstance(response.json()["detail"], str)
    assert json.loads(get(server, "/entity/x.geojson").text)["detail"][0]["loc"] == ["path", "entity"]
    problem = httpx.get(server.url + "/v1/check", timeout=10)  # redline's own endpoints stay problem+json
    assert problem.headers["content-type"].startswith("application/problem+json")
