"""POST /v1/check takes a shorter way through the app than other routes; callers must not see a difference.

It skips FastAPI's outer layers and the router, so these pin what those layers gave every route:
CORS, problem+json for the unexpected, 405 for another method, 503 while loading, and the metrics.
"""

from __future__ import annotations

import pytest
from api_fixtures import BATH_SITE, copy_cache, make_app
from fastapi.testclient import TestClient

PLANX = "https://editor.planx.uk"


def refork_checks(app) -> None:
    """The next check forks a new check process, which carries whatever the test changed in the worker."""
    if app.state.check_process is not None:
        app.state.check_process.close()


@pytest.fixture(scope="module")
def client(sample_cache, tmp_path_factory):
    app = make_app(copy_cache(sample_cache, tmp_path_factory.mktemp("check-path")), cors_origins=[PLANX])
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_a_browser_on_an_allowed_origin_may_call_the_check(client):
    preflight = client.options(
        "/v1/check", headers={"Origin": PLANX, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == PLANX
    answer = client.post("/v1/check", json=BATH_SITE, headers={"Origin": PLANX})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == PLANX
    other = client.post("/v1/check", json=BATH_SITE, headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers


def test_an_unexpected_failure_is_a_problem_answer_not_a_traceback(client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a secret internal detail")

    monkeypatch.setattr(client.app.state.index, "check", broken)
    refork_checks(client.app)  # a check process forked before the patch would not have it
    try:
        answer = client.post("/v1/check", json=BATH_SITE)
    finally:
        monkeypatch.undo()
        refork_checks(client.app)
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["title"] == "Internal error"
    assert "secret" not in answer.text
    metrics = client.get("/metrics").text
    assert 'redline_http_requests_total{route="/v1/check",method="POST",status="500"} 1' in metrics


def test_another_method_is_refused_as_on_every_route(client):
    answer = client.get("/v1/check")
    assert answer.status_code == 405
    assert answer.headers["content-type"] == "application/problem+json"


def test_while_the_layers_load_the_check_says_so_with_retry_after(client):
    state = client.app.state
    index, state.index = state.index, None  # as before the loader thread has finished
    try:
        answer = client.post("/v1/check", json=BATH_SITE)
    finally:
        state.index = index
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == "5"
    assert "loading" in answer.json()["detail"]


def test_the_answer_names_the_data_version_it_used(client):
    answer = client.post("/v1/check", json=BATH_SITE)
    assert answer.headers["x-redline-data-version"] == client.app.state.index.data_version
    assert answer.json()["provenance"]["data_version"] == answer.headers["x-redline-data-version"]


def test_the_query_is_one_model_that_parses_it_and_documents_it(client):
    from api.routes.check import CheckQuery

    documented = {p["name"]: p for p in client.get("/openapi.json").json()["paths"]["/v1/check"]["post"]["parameters"]}
    assert set(documented) == set(CheckQuery.model_fields)
    assert documented["tolerance_pct"]["schema"] == {"type": "number", "minimum": 0, "maximum": 100}
    assert documented["format"]["schema"]["enum"] == ["native", "planx", "odp", "geojson"]
    assert documented["datasets"]["explode"] is True

    refused = client.post("/v1/check", params={"format": "pdf", "tolerance_pct": "101", "tolerance_m2": "nan"}, json=BATH_SITE)
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    assert [e["pointer"] for e in refused.json()["errors"]] == ["/format", "/tolerance_m2", "/tolerance_pct"]
    assert "'geojson'" in refused.json()["detail"] and "100" in refused.json()["detail"]
    blank = client.post("/v1/check", params={"format": "", "tolerance_pct": "", "council": ""}, json=BATH_SITE)
    assert blank.status_code == 200, blank.text
