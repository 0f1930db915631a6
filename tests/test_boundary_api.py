"""The red-line story over real HTTP (uvicorn on loopback), on SQLite and on PostgreSQL.

Applicant creates, officer proposes an amendment, applicant rejects with a reason, officer proposes
again, applicant approves with the token, the constraints are re-checked, the officer's manual
override survives the re-check, and the audit trail shows every step in order. Then the edges: every
error is problem+json, tokens open only their own request, the ODP export validates against the real
Open Digital Planning schema.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import zipfile
from pathlib import Path

import geopandas as gpd
import httpx
import jsonschema
import pytest
import shapely
import uvicorn
from api_fixtures import copy_cache
from boundary_fixtures import *  # noqa: F403 - pytest fixtures: backend_url, saltford
from boundary_fixtures import status
from conftest import REAL_DATA
from shapely.geometry import shape

from api.app import create_app
from api.keys import KeyStore
from api.settings import Settings
from datasets import crs

CA = "designated.conservationArea"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """redline served by uvicorn in a thread on a free loopback port."""

    def __init__(self, data_dir: Path, database_url: str):
        data_dir.mkdir(parents=True, exist_ok=True)
        keys = KeyStore(data_dir)
        _, self.applicant_key = keys.create("planx-service", ["boundary:write"])
        _, self.officer_key = keys.create("officer:jo", ["officer"])
        _, self.checker_key = keys.create("widget", ["check"])
        settings = Settings(
            data_dir=data_dir,
            database_url=database_url,
            load_samples=True,
            rate_limit_per_s=1000,
            rate_limit_burst=1000,
        )
        self.port = _free_port()
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("redline did not become ready within 60 s")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)


@pytest.fixture
def service(backend_url, sample_cache, tmp_path):
    with Service(copy_cache(sample_cache, tmp_path / "data"), backend_url) as svc:
        yield svc


@pytest.fixture(scope="module")
def shared_service(sample_cache, tmp_path_factory):
    """One SQLite-backed service for the tests that do not depend on the store's engine."""
    root = tmp_path_factory.mktemp("shared")
    with Service(copy_cache(sample_cache, root / "data"), f"sqlite:///{root / 'boundaries.sqlite3'}") as svc:
        yield svc


def problem(response: httpx.Response, status_code: int) -> dict:
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status_code and body["title"] and body["detail"]
    return body


def feature(geometry: dict) -> dict:
    return {"type": "Feature", "properties": {}, "geometry": geometry}


def test_the_whole_red_line_story_over_http(service, saltford):
    planx = service.client(service.applicant_key)
    officer = service.client(service.officer_key)

    # 1. The applicant (through the submission service) creates the boundary.
    r = planx.post(
        "/v1/boundaries",
        json={
            "reference": "PLX-2026-0042",
            "local_authority": "Bath and North East Somerset",
            "site": feature(saltford.outside),
        },
    )
    assert r.status_code == 201, r.text
    created = r.json()
    bid = created["id"]
    assert (
        created["version"] == 1
        and 890 < created["area_m2"] < 910
        and created["area_ha"] == pytest.approx(0.09, abs=0.001)
    )
    assert created["warnings"] == []
    assert status(created["constraints"], CA) == ("clear", [])
    assert r.headers["location"] == f"/v1/boundaries/{bid}"

    # 2. The officer proposes an amendment.
    r = officer.post(
        f"/v1/boundaries/{bid}/change-requests",
        json={"site": feature(saltford.over), "reason": "The red line must take in the coach house"},
    )
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["state"] == "open" and len(first["token"]) >= 43
    assert first["area_added_m2"] == pytest.approx(created["area_m2"], rel=0.001)
    assert first["area_removed_m2"] == pytest.approx(created["area_m2"], rel=0.001)
    assert CA in [g["key"] for g in first["constraints_gained"]]
    assert "designated.AONB" in [g["key"] for g in first["constraints_lost"]]
    applicant = service.client(first["token"])

    # The token is shown once; the applicant reads the request with it.
    r = applicant.get(f"/v1/change-requests/{first['id']}")
    assert r.status_code == 200 and "token" not in r.json() and r.json()["state"] == "open"
    assert "token" not in officer.get(f"/v1/change-requests/{first['id']}").json()

    # 3. The applicant rejects: a reason is required.
    problem(applicant.post(f"/v1/change-requests/{first['id']}/reject", json={}), 422)
    r = applicant.post(
        f"/v1/change-requests/{first['id']}/reject", json={"reason": "The coach house belongs to number 12"}
    )
    assert r.status_code == 200 and r.json()["state"] == "rejected"

    # 4. The officer proposes again, and records a constraint the layers do not hold.
    r = officer.post(
        f"/v1/boundaries/{bid}/change-requests",
        json={"site": feature(saltford.over), "reason": "Follow the wall on the 1904 map", "base_version": 1},
    )
    assert r.status_code == 201, r.text
    second = r.json()
    r = officer.post(
        f"/v1/boundaries/{bid}/overrides",
        json={
            "key": "tpo",
            "action": "added",
            "text": "TPO 12/1998: oak by the gate",
            "reason": "council TPO register",
        },
    )
    assert r.status_code == 201, r.text
    override = r.json()

    # The first link's token opens nothing else.
    problem(applicant.post(f"/v1/change-requests/{second['id']}/approve"), 403)

    # 5. The applicant approves with the new token.
    applicant = service.client(second["token"])
    r = applicant.post(f"/v1/change-requests/{second['id']}/approve")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "approved" and r.json()["result_version"] == 2

    # 6. The constraints were re-checked for version 2; a re-check keeps the officer's override.
    current = planx.get(f"/v1/boundaries/{bid}").json()
    assert current["version"] == 2 and current["change_request_id"] == second["id"]
    assert status(current["constraints"], CA) == ("intersects", [saltford.entity])
    r = officer.post(f"/v1/boundaries/{bid}/recheck")
    assert r.status_code == 200, r.text
    rechecked = r.json()
    assert [o["id"] for o in rechecked["overrides"]] == [override["id"]]
    assert rechecked["overrides"][0]["text"] == "TPO 12/1998: oak by the gate"
    assert (
        status(rechecked["constraints"], "tpo")[0] == "unknown"
    )  # the machine answer is still the machine's

    versions = planx.get(f"/v1/boundaries/{bid}/versions").json()["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    v1 = planx.get(f"/v1/boundaries/{bid}/versions/1").json()
    assert v1["site"]["geometry"] == created["site"]["geometry"]

    # 7. The audit trail shows every step, in order, with who did it.
    trail = officer.get(f"/v1/boundaries/{bid}/audit").json()["events"]
    assert [(e["event"], e["actor"]) for e in trail] == [
        ("created", "planx-service"),
        ("version_added", "planx-service"),
        ("change_request_opened", "officer:jo"),
        ("change_request_sent", "officer:jo"),
        ("change_request_rejected", "applicant"),
        ("change_request_opened", "officer:jo"),
        ("change_request_sent", "officer:jo"),
        ("override_added", "officer:jo"),
        ("change_request_approved", "applicant"),
        ("version_added", "applicant"),
        ("recheck_done", "applicant"),
        ("recheck_done", "officer:jo"),
    ]
    assert set(trail[0]) == {"at", "actor", "event", "details"}
    assert trail[4]["details"]["reason"] == "The coach house belongs to number 12"
    text = officer.get(f"/v1/boundaries/{bid}/audit", params={"format": "text"})
    assert text.headers["content-type"].startswith("text/plain")
    assert [line.split()[2] for line in text.text.splitlines()] == [e["event"] for e in trail]


def new_boundary(service, site, reference: str = "R") -> str:
    """A boundary created by the applicant's service; its id."""
    created = service.client(service.applicant_key).post(
        "/v1/boundaries", json={"reference": reference, "local_authority": "LA", "site": site}
    )
    return created.json()["id"]


def test_odp_export_validates_against_the_real_schema(shared_service, saltford):
    officer = shared_service.client(shared_service.officer_key)
    bid = new_boundary(shared_service, saltford.over)
    officer.post(
        f"/v1/boundaries/{bid}/overrides",
        json={
            "key": "greenBelt",
            "action": "dismissed",
            "reason": "inset from the green belt in the 2023 local plan",
        },
    )
    export = officer.get(f"/v1/boundaries/{bid}/versions/1/odp").json()
    schema = json.loads((REAL_DATA / "digital-planning-data-schemas__schema-application.json").read_text())
    definitions = {"$schema": schema["$schema"], "definitions": schema["definitions"]}
    jsonschema.validate(export["proposal"]["boundary"], {"$ref": "#/definitions/GeoBoundary", **definitions})
    for designation in export["designations"]:
        jsonschema.validate(designation, {"$ref": "#/definitions/PlanningDesignation", **definitions})
    by_value = {d["value"]: d for d in export["designations"]}
    assert by_value[CA]["intersects"] is True
    # Saltford comes from the council's own layer (no platform entity), so it links to the dataset.
    assert by_value[CA]["entities"] == [
        {
            "name": "Saltford",
            "description": "conservation-area (local layer)",
            "source": {
                "text": "Planning Data",
                "url": "https://www.planning.data.gov.uk/dataset/conservation-area",
            },
        }
    ]
    assert by_value["greenBelt"]["intersects"] is False  # the officer's dismissal is applied
    assert export["proposal"]["boundary"]["area"]["squareMetres"] == pytest.approx(900.67, abs=0.5)


def test_errors_are_problem_json_with_actionable_messages(shared_service, saltford):
    planx = shared_service.client(shared_service.applicant_key)
    officer = shared_service.client(shared_service.officer_key)
    anonymous = shared_service.client(None)
    widget = shared_service.client(shared_service.checker_key)

    def refusal(site) -> str:
        """Why a boundary over ``site`` is not created (a 422 problem's detail)."""
        body = {"reference": "R", "local_authority": "LA", "site": site}
        return problem(planx.post("/v1/boundaries", json=body), 422)["detail"]

    swapped = {"type": "Polygon", "coordinates": [[[y, x] for x, y in saltford.outside["coordinates"][0]]]}
    assert "swapped" in refusal(swapped)
    body = problem(planx.post("/v1/boundaries", json={"reference": "R", "local_authority": "LA"}), 422)
    assert body["errors"][0]["pointer"] == "/site"
    problem(
        planx.post("/v1/boundaries", content=b"{not json", headers={"content-type": "application/json"}), 422
    )
    problem(anonymous.post("/v1/boundaries", json={}), 401)
    problem(widget.post("/v1/boundaries", json={}), 403)
    problem(planx.get("/v1/boundaries/no-such-id"), 404)
    big = shapely.box(*crs.to_bng(shape(saltford.outside)).bounds).buffer(700)  # about 150 ha
    big_site = json.loads(json.dumps(shapely.geometry.mapping(crs.to_wgs84(big))))
    assert "ha" in refusal(big_site)

    bid = planx.post(
        "/v1/boundaries", json={"reference": "R", "local_authority": "LA", "site": saltford.outside}
    ).json()["id"]
    problem(
        planx.post(f"/v1/boundaries/{bid}/change-requests", json={"site": saltford.over, "reason": "r"}), 403
    )
    cr = officer.post(
        f"/v1/boundaries/{bid}/change-requests", json={"site": saltford.over, "reason": "r"}
    ).json()
    assert (
        "already open"
        in problem(
            officer.post(
                f"/v1/boundaries/{bid}/change-requests", json={"site": saltford.over_more, "reason": "again"}
            ),
            409,
        )["detail"]
    )
    problem(anonymous.get(f"/v1/change-requests/{cr['id']}"), 401)
    problem(shared_service.client("not-the-token").get(f"/v1/change-requests/{cr['id']}"), 401)
    assert (
        officer.post(
            f"/v1/change-requests/{cr['id']}/cancel", json={"reason": "drawn on the wrong plot"}
        ).json()["state"]
        == "cancelled"
    )
    assert (
        "cancelled"
        in problem(shared_service.client(cr["token"]).post(f"/v1/change-requests/{cr['id']}/approve"), 409)[
            "detail"
        ]
    )
    assert (
        "unknown constraint key"
        in problem(
            officer.post(f"/v1/boundaries/{bid}/overrides", json={"key": "nope", "action": "confirmed"}), 422
        )["detail"]
    )


def test_validate_measures_and_stores_nothing(shared_service, saltford):
    widget = shared_service.client(shared_service.checker_key)
    r = widget.post("/v1/validate", json=saltford.outside)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["valid"] is True and 890 < body["area_m2"] < 910 and body["grid_reference"].startswith("ST ")
    bowtie = {
        "type": "Polygon",
        "coordinates": [[[-2.45, 51.40], [-2.44, 51.41], [-2.44, 51.40], [-2.45, 51.41], [-2.45, 51.40]]],
    }
    assert "crosses itself at [" in problem(widget.post("/v1/validate", json=bowtie), 422)["detail"]
    officer = shared_service.client(shared_service.officer_key)
    assert officer.get("/v1/boundaries/anything").status_code == 404


def test_create_from_an_uploaded_shapefile_in_british_national_grid(shared_service, saltford, tmp_path):
    grid = crs.to_bng(shape(saltford.outside))
    folder = tmp_path / "shp"
    folder.mkdir()
    gpd.GeoDataFrame({"name": ["site"]}, geometry=[grid], crs="EPSG:27700").to_file(folder / "site.shp")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for part in folder.iterdir():
            zf.write(part, part.name)
    planx = shared_service.client(shared_service.applicant_key)
    r = planx.post(
        "/v1/boundaries",
        data={"reference": "UPLOAD-1", "local_authority": "LA"},
        files={"file": ("site.zip", buffer.getvalue(), "application/zip")},
    )
    assert r.status_code == 201, r.text
    uploaded = shape(r.json()["site"]["geometry"])
    # Through OSTN15 and back: the same square to well under a centimetre.
    assert uploaded.symmetric_difference(shape(saltford.outside)).area < 1e-12
    assert status(r.json()["constraints"], CA) == ("clear", [])


def test_a_dismissed_conservation_area_no_longer_makes_the_site_designated_in_any_format(shared_service, saltford):
    officer = shared_service.client(shared_service.officer_key)
    bid = new_boundary(shared_service, saltford.over, "R-designated")
    machine = officer.get(f"/v1/boundaries/{bid}").json()["constraints"]
    assert status(machine, CA)[0] == "intersects" and status(machine, "designated")[0] == "intersects"
    r = officer.post(
        f"/v1/boundaries/{bid}/overrides",
        json={"key": CA, "action": "dismissed", "reason": "the boundary was moved out of the conservation area"},
    )
    assert r.status_code == 201, r.text

    native = officer.get(f"/v1/boundaries/{bid}/constraints").json()
    assert status(native, CA)[0] == "clear"
    # nothing else designates Saltford as far as the layers can tell: not true, and never true by derivation
    assert status(native, "designated")[0] != "intersects"
    planx = officer.get(f"/v1/boundaries/{bid}/constraints", params={"format": "planx"}).json()["constraints"]
    assert planx[CA]["value"] is False and planx.get("designated", {}).get("value") is not True
    odp = {d["value"]: d for d in officer.get(f"/v1/boundaries/{bid}/constraints", params={"format": "odp"}).json()["designations"]}
    assert odp[CA]["intersects"] is False and odp.get("designated", {"intersects": False})["intersects"] is False
    export = {d["value"]: d for d in officer.get(f"/v1/boundaries/{bid}/versions/1/odp").json()["designations"]}
    assert export[CA]["intersects"] is False and export.get("designated", {"intersects": False})["intersects"] is False
    features = officer.get(f"/v1/boundaries/{bid}/constraints", params={"format": "geojson"}).json()["features"]
    assert not [f for f in features if CA in f["properties"]["keys"] or "designated" in f["properties"]["keys"]]
    # the machine answer itself is kept as it was
    assert status(officer.get(f"/v1/boundaries/{bid}").json()["constraints"], "designated")[0] == "intersects"


def test_each_request_body_is_one_model_that_parses_it_and_documents_it(shared_service, saltford):
    from api.routes.boundary_bodies import AddOverride, CreateBoundary, ProposeChange, inline_schema

    planx = shared_service.client(shared_service.applicant_key)
    officer = shared_service.client(shared_service.officer_key)
    spec = planx.get("/openapi.json").json()["paths"]
    create = spec["/v1/boundaries"]["post"]["requestBody"]["content"]
    assert create["application/json"]["schema"] == inline_schema(CreateBoundary)
    assert create["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    overrides = spec["/v1/boundaries/{boundary_id}/overrides"]["post"]["requestBody"]["content"]["application/json"]
    assert overrides["schema"] == inline_schema(AddOverride)
    assert overrides["schema"]["properties"]["action"]["enum"] == ["confirmed", "added", "dismissed"]
    proposal = spec["/v1/boundaries/{boundary_id}/change-requests"]["post"]["requestBody"]["content"]
    assert "$ref" not in str(proposal) and proposal["application/json"]["schema"] == inline_schema(ProposeChange)

    # A bad field answers 422 with a pointer to it and what to send instead, whichever the field.
    bad = problem(planx.post("/v1/boundaries", json={"reference": " ", "local_authority": 7, "site": saltford.outside, "applicant_email": "nobody"}), 422)
    assert {e["pointer"]: e["detail"] for e in bad["errors"]} == {
        "/reference": "is required",
        "/local_authority": "must be a string",
        "/applicant_email": "'nobody' is not an email address",
    }
    form = problem(planx.post("/v1/boundaries", data={"local_authority": "LA"}, files={"file": ("site.geojson", b"{}")}), 422)
    assert form["errors"][0]["pointer"] == "/reference"

    bid = planx.post("/v1/boundaries", json={"reference": "R-models", "local_authority": "LA", "site": saltford.outside}).json()["id"]
    body = problem(officer.post(f"/v1/boundaries/{bid}/overrides", json={"key": "tpo", "action": "maybe", "version": "2", "reason": "a\x00b"}), 422)
    assert [e["pointer"] for e in body["errors"]] == ["/action", "/reason", "/version"]
    assert "'dismissed'" in body["detail"] and "NUL" in body["detail"] and "integer" in body["detail"]
    body = problem(officer.post(f"/v1/boundaries/{bid}/change-requests", json={"site": saltford.over, "reason": "r", "base_version": True}), 422)
    assert body["errors"] == [{"pointer": "/base_version", "in": "body", "detail": "must be an integer"}]
    assert officer.post(f"/v1/boundaries/{bid}/change-requests", json={"site": saltford.over, "reason": " wall ", "base_version": 1}).json()["reason"] == "wall"


def test_a_boundary_body_over_the_limit_is_refused_while_it_streams(shared_service):
    officer = shared_service.client(shared_service.officer_key)

    def chunks():
        for _ in range(2_100):  # past the 2 MB default, without a Content-Length
            yield b" " * 1_000

    problem(officer.post("/v1/boundaries/any/change-requests", content=chunks(), headers={"content-type": "application/json"}), 413)
