"""PlanX's own traffic against redline, exactly as PlanX sends it, with no credentials, to a service that has
API keys; and what PlanX's editor then records in the applicant's passport.

PlanX reaches constraints two ways, and both are driven here over real HTTP on 127.0.0.1:

- its API's GIS code (api.planx.uk ``modules/gis/service``) asks the platform's ``/entity.json`` for every
  active dataset in one query (``entries=current``, ``geometry=<WKT>``, ``geometry_relation=intersects``,
  ``exclude_field=geometry,point``, ``limit=100``, one ``dataset=`` each), then ``/dataset/{name}.json``
  once per dataset; every active key it finds no entity for becomes ``value: false``;
- its editor fetches ``/gis/{team}?geom=<WKT>&vals=...`` and splits the answer into the passport: a key
  whose ``value`` is truthy applies; **any other key present is recorded as "not"**; an absent key is
  neither, and the service goes on to ask the applicant.

The oracle is the platform itself: a fake platform (``tests/fake_platform.py``) holding the very layers
redline has loaded, and PlanX's logic (mirrored below, in our own words) over its answers. On sites inside,
outside and at the edge of loaded layers (and of their coverage), every key redline answers lands where
the platform would put it, and no key whose data is missing or does not cover the site lands in "not".
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from api_fixtures import BATH_WKT, LiveServer, copy_cache
from fake_platform import FakePlatform

from api.app import create_app
from api.keys import KeyStore
from api.settings import Settings
from constraints.formats import planx_derived

SAMPLES = Path(__file__).resolve().parents[1] / "datasets" / "data" / "samples"
PDP = Path(__file__).resolve().parent / "data" / "pdp"


def _square(x: float, y: float, half: float = 0.0004) -> str:
    return shapely.box(x - half, y - half, x + half, y + half).wkt


SITES = {
    # Westgate Street, Bath: in the conservation area, on listed buildings
    "inside": BATH_WKT,
    # farmland south-west of Bath: clear of most loaded layers
    "outside": _square(-2.40, 51.33),
    # across the edge of the Claverton conservation area
    "layer edge": _square(-2.31356816, 51.37760862),
    # across the edge of the area the Bath & North East Somerset extracts are complete for
    "coverage edge": _square(-2.70229506, 51.34378488),
    # Lambeth, where no sample layer is complete
    "beyond coverage": _square(-0.1151, 51.4745),
    # Dulwich, where the platform has tree preservation orders redline has not loaded
    "trees": _square(-0.094959, 51.439306, 0.0002),
}


# -- the platform: the layers redline holds, served as planning.data.gov.uk serves them -------------------


def _platform_file(source: Path, target: Path) -> None:
    """A sample layer as the platform's bulk parquet: strings, WKT ``geometry`` and ``point``."""
    rows = []
    for row in pq.read_table(source).to_pylist():
        geom = shapely.from_wkb(row.pop("geometry"))
        out = {k: "" if v is None else str(v) for k, v in row.items()}
        out["entity"] = int(row["entity"])
        if geom.geom_type == "Point":
            out["geometry"], out["point"] = "", geom.wkt
        else:
            out["geometry"], out["point"] = geom.wkt, shapely.point_on_surface(geom).wkt
        rows.append(out)
    pq.write_table(pa.Table.from_pylist(rows), target)


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    folder = tmp_path_factory.mktemp("platform")
    (folder / "files").mkdir()
    (folder / "metadata").mkdir()
    for source in SAMPLES.glob("*.parquet"):
        if source.stem != "coverage":
            _platform_file(source, folder / "files" / source.name)
    (folder / "files" / "tree.parquet").write_bytes((PDP / "files" / "tree.parquet").read_bytes())
    for source in (PDP / "metadata").glob("*.json"):
        (folder / "metadata" / source.name).write_bytes(source.read_bytes())
    with FakePlatform(folder) as fake:
        yield fake


def _service(data: Path, **settings) -> LiveServer:
    """redline as an operator runs it: default settings but for these, and API keys configured."""
    KeyStore(data).create("bops", ["boundary:write"])
    return LiveServer(create_app(Settings(data_dir=data, load_samples=True, **settings), load_in_background=False))


@pytest.fixture(scope="module")
def redline(sample_cache, tmp_path_factory):
    with _service(copy_cache(sample_cache, tmp_path_factory.mktemp("redline"))) as server:
        yield server


@pytest.fixture(scope="module")
def redline_live(sample_cache, tmp_path_factory, platform):
    data = copy_cache(sample_cache, tmp_path_factory.mktemp("redline-live"))
    with _service(data, live_fallback=True, pdp_api_url=platform.url) as server:
        yield server


# -- PlanX, as its code behaves -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema(redline):
    """PlanX's active base keys and their datasets (its ``baseSchema``), as redline's catalogue maps them."""
    catalogue = redline.server.config.app.state.catalogue
    return {c.key: list(c.datasets) for c in catalogue.constraints if c.datasets and not planx_derived(c.key, catalogue)}


def planx_requests(base_url: str, wkt: str, schema: dict) -> tuple[str, list[str]]:
    """The URLs PlanX's API fetches for one check: the entity search, then each dataset's metadata."""
    datasets = [d for names in schema.values() for d in names]
    options = {"entries": "current", "geometry": wkt, "geometry_relation": "intersects", "exclude_field": "geometry,point", "limit": "100"}
    search = f"{base_url}/entity.json?{urlencode(options)}&dataset=" + "&dataset=".join(dict.fromkeys(datasets))
    return search, [f"{base_url}/dataset/{name}.json" for name in datasets]


def planx_gis(search_answer: dict, schema: dict) -> dict:
    """What PlanX's API makes of an ``/entity.json`` answer: its ``constraints``."""
    result: dict[str, dict] = {}
    for entity in search_answer.get("entities", []):
        key = next((k for k, names in schema.items() if entity["dataset"] in names), None)
        if key in result:
            result[key]["data"].append(entity)
        elif key:
            result[key] = {"fn": key, "value": True, "data": [entity]}
    for key in schema:  # every active key it found nothing for is a "not"
        result.setdefault(key, {"fn": key, "value": False})
    designated = [k for k in result if k.startswith("designated.")]
    if len(designated) >= 4:
        result["designated"] = {"value": any(result[k]["value"] for k in designated)}
    if result.get("flood", {}).get("value"):
        for level, key in (("2", "flood.zoneTwo"), ("3", "flood.zoneThree")):
            result[key] = {"fn": key, "value": any(e.get("flood-risk-level") == level for e in result["flood"]["data"])}
    if result.get("listed", {}).get("value"):
        for grade, key in (("I", "listed.gradeOne"), ("II", "listed.gradeTwo"), ("II*", "listed.gradeTwoStar")):
            result[key] = {"fn": key, "value": any(e.get("listed-building-grade") == grade for e in result["listed"]["data"])}
    return result


def passport(constraints: dict) -> tuple[set[str], set[str]]:
    """PlanX's editor: (keys that apply, keys recorded as "not"); an absent key is in neither."""
    applies = {key for key, answer in constraints.items() if answer.get("value")}
    return applies, set(constraints) - applies


def place(key: str, split: tuple[set[str], set[str]]) -> str:
    return "applies" if key in split[0] else "not" if key in split[1] else "absent"


def planx_check(client: httpx.Client, base_url: str, wkt: str, schema: dict) -> tuple[dict, httpx.Response, list[httpx.Response]]:
    search_url, metadata_urls = planx_requests(base_url, wkt, schema)
    search = client.get(search_url)
    return planx_gis(search.json(), schema), search, [client.get(url) for url in metadata_urls]


def side_by_side(platform_url: str, redline_url: str, wkt: str, schema: dict) -> tuple[dict, tuple]:
    """PlanX's answer from the platform, and its whole exchange with redline (answer, search, metadata)."""
    with httpx.Client(timeout=60) as client:
        theirs, _, _ = planx_check(client, platform_url, wkt, schema)
        return theirs, planx_check(client, redline_url, wkt, schema)


# -- the tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("site", SITES)
def test_the_editor_records_every_gis_key_where_the_platform_would_and_nothing_unknown_as_not(redline, platform, schema, site):
    wkt = SITES[site]
    with httpx.Client(timeout=60) as client:
        truth = passport(planx_check(client, platform.url, wkt, schema)[0])
        answer = client.get(f"{redline.url}/gis/lambeth", params={"geom": wkt, "vals": ",".join(schema), "analytics": "false"})
    assert answer.status_code == 200, answer.text[:300]
    body = answer.json()
    ours = passport(body["constraints"])
    catalogue = redline.server.config.app.state.catalogue
    loaded = redline.server.config.app.state.index.snapshot.layers

    assert body["unknown"], "these sites all have keys redline cannot answer"
    for key, why in body["unknown"].items():
        assert place(key, ours) == "absent", (site, key, why)  # so PlanX asks the applicant
    for key in schema:
        if not any(d in loaded for d in schema[key]):
            assert place(key, ours) == "absent", (site, key)  # nothing loaded behind it: never "not"
    answered = 0
    for key in set(body["constraints"]):
        if place(key, truth) != "absent":
            assert place(key, ours) == place(key, truth), (site, key, body["constraints"][key])
            answered += 1
        else:  # a grade or zone PlanX only adds when its parent applies: redline says "not" only when true
            assert planx_derived(key, catalogue) and not body["constraints"][key]["value"], (site, key)
            parent = key.rsplit(".", 1)[0]
            assert place(parent, ours) == "not", (site, key)
    if site not in ("beyond coverage", "trees"):  # in Bath the samples answer several keys either way
        assert answered >= 3, (site, answered)


@pytest.mark.parametrize("site", SITES)
def test_planx_unmodified_gis_code_pointed_at_redline_places_every_loaded_key_as_the_platform(redline, platform, schema, site):
    theirs, (ours, search, metadata) = side_by_side(platform.url, redline.url, SITES[site], schema)
    assert search.status_code == 200, search.text[:300]  # never refused for the datasets it lacks
    loaded = redline.server.config.app.state.index.snapshot.layers
    asked = list(dict.fromkeys(d for names in schema.values() for d in names))
    missing = [d for d in asked if d not in loaded]
    assert search.headers["x-redline-datasets-not-loaded"].split(",") == missing
    assert [m.status_code for m in metadata if m.url.path.rsplit("/", 1)[-1][:-5] in loaded] == [200] * sum(d in loaded for names in schema.values() for d in names)
    for key, names in schema.items():
        if all(d in loaded for d in names):
            assert place(key, passport(ours)) == place(key, passport(theirs)), (site, key)


@pytest.mark.parametrize("site", SITES)
def test_with_the_live_fallback_planx_gets_the_platforms_answer_for_every_key(redline_live, platform, schema, site):
    theirs, (ours, search, _) = side_by_side(platform.url, redline_live.url, SITES[site], schema)
    assert search.status_code == 200, search.text[:300]
    assert "x-redline-datasets-not-loaded" not in search.headers
    assert "tree" in search.headers["x-redline-datasets-live"].split(",")
    assert passport(ours) == passport(theirs)
    if site == "trees":
        assert "tpo" in passport(ours)[0]  # found on the platform, not in the cache


def test_a_missing_dataset_is_named_in_the_header_the_log_and_the_metrics(redline, caplog):
    caplog.set_level("WARNING", logger="redline.api")
    answer = httpx.get(f"{redline.url}/entity.json", params=[("dataset", "tree"), ("dataset", "conservation-area"), ("dataset", "flood-risk-zone")])
    assert answer.status_code == 200
    assert answer.headers["x-redline-datasets-not-loaded"] == "tree,flood-risk-zone"
    assert {e["dataset"] for e in answer.json()["entities"]} == {"conservation-area"}
    assert any("not loaded here" in r.message and "flood-risk-zone" in r.message for r in caplog.records)
    metrics = httpx.get(f"{redline.url}/metrics").text
    assert 'redline_entity_search_unloaded_datasets_total{dataset="tree",answered="not-loaded"}' in metrics
    assert 'redline_entity_search_unloaded_datasets_total{dataset="flood-risk-zone",answered="not-loaded"}' in metrics
    only_missing = httpx.get(f"{redline.url}/entity.json", params={"dataset": "tree"}).json()
    assert only_missing["count"] == 0 and only_missing["entities"] == []  # not every loaded dataset instead


def test_twenty_planx_checks_back_to_back_without_credentials_get_no_401_and_no_429(redline, schema):
    loaded = redline.server.config.app.state.index.snapshot.layers
    statuses: Counter[int] = Counter()
    not_found = set()
    with httpx.Client(timeout=60) as client:
        for i in range(20):
            wkt = list(SITES.values())[i % len(SITES)]
            editor = client.get(f"{redline.url}/gis/lambeth", params={"geom": wkt, "vals": ",".join(schema)})
            _, search, metadata = planx_check(client, redline.url, wkt, schema)
            for response in (editor, search, *metadata):
                statuses[response.status_code] += 1
                if response.status_code == 404:
                    not_found.add(response.url.path)
    assert sum(statuses.values()) >= 20 * 29  # PlanX's fan-out, and the editor's own request
    assert statuses[401] == 0 and statuses[429] == 0, statuses
    assert set(statuses) <= {200, 404}, statuses
    # the only 404s: metadata of datasets this service has not loaded, which PlanX skips
    assert {p.removeprefix("/dataset/").removesuffix(".json") for p in not_found}.isdisjoint(loaded)


def test_the_live_fallback_merges_the_platforms_entities_into_the_page_by_entity_number(redline_live, platform):
    site = SITES["trees"]
    both = [("dataset", "tree"), ("dataset", "listed-building-outline"), ("geometry", _square(-0.094959, 51.439306, 0.01)), ("geometry_relation", "intersects")]
    whole = httpx.get(f"{redline_live.url}/entity.json", params=both + [("limit", "500")]).json()
    truth = httpx.get(f"{platform.url}/entity.json", params=both + [("limit", "500")]).json()
    assert whole["count"] == truth["count"] > 3
    assert [e["entity"] for e in whole["entities"]] == [e["entity"] for e in truth["entities"]]
    pages = [httpx.get(f"{redline_live.url}/entity.json", params=both + [("limit", "2"), ("offset", str(o))]).json() for o in range(0, whole["count"], 2)]
    assert [e["entity"] for p in pages for e in p["entities"]] == [e["entity"] for e in whole["entities"]]
    assert all(p["count"] == whole["count"] for p in pages)
    features = httpx.get(f"{redline_live.url}/entity.geojson", params=[("dataset", "tree"), ("geometry", site), ("geometry_relation", "intersects")])
    assert features.headers["x-redline-datasets-live"] == "tree"
    found = features.json()["features"]
    assert found and all(f["geometry"]["type"] == "Point" and f["properties"]["dataset"] == "tree" for f in found)
