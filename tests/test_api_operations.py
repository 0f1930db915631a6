"""GET /metrics: Prometheus text with request counts and latency per route, check latency, and the data's age."""

from __future__ import annotations

import re

import pytest
from api_fixtures import BATH_SITE, BATH_WKT, copy_cache, make_app
from fastapi.testclient import TestClient

SAMPLE = re.compile(r'^[a-z_:][a-z0-9_:]*(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+Inf]+$')


@pytest.fixture(scope="module")
def client(sample_cache, tmp_path_factory):
    with TestClient(make_app(copy_cache(sample_cache, tmp_path_factory.mktemp("metrics")))) as client:
        yield client


def _metrics(client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/plain; version=0.0.4"
    )
    values = {}
    for line in response.text.splitlines():
        if line.startswith("#") or not line:
            continue
        assert SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values


def test_requests_are_counted_and_timed_per_route_template(client):
    before = _metrics(client)
    for _ in range(3):
        assert client.post("/v1/check", json=BATH_SITE).status_code == 200
    client.get("/gis/lambeth", params={"geom": BATH_WKT})
    for entity in (3030404, 5, 6):  # one series for the route, not one per entity
        client.get(f"/entity/{entity}.json")
    client.get("/no/such/page")
    after = _metrics(client)
    key = 'redline_http_requests_total{route="/v1/check",method="POST",status="200"}'
    assert after[key] - before.get(key, 0) == 3
    assert after['redline_http_requests_total{route="/entity/{entity}.json",method="GET",status="404"}'] >= 2
    assert after['redline_http_requests_total{route="unmatched",method="GET",status="404"}'] >= 1
    assert not [k for k in after if "3030404" in k]
    assert (
        after["redline_check_duration_seconds_count"] - before.get("redline_check_duration_seconds_count", 0)
        == 4
    )
    hist = 'redline_http_request_duration_seconds_bucket{route="/v1/check",method="POST",le="+Inf"}'
    assert (
        after[hist]
        == after['redline_http_request_duration_seconds_count{route="/v1/check",method="POST"}']
        >= 3
    )


def test_dataset_counts_and_ages_are_exported(client):
    snapshot = client.app.state.index.snapshot
    values = _metrics(client)
    assert values["redline_index_ready"] == 1 and values["redline_index_features"] == snapshot.features
    for name, layer in snapshot.layers.items():
        assert values[f'redline_dataset_features{{dataset="{name}"}}'] == len(layer)
        assert 0 <= values[f'redline_dataset_age_seconds{{dataset="{name}"}}'] < 3600
        assert values[f'redline_dataset_stale{{dataset="{name}"}}'] == 0
