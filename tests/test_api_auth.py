"""Who may call the service, how often, with how much: API keys and scopes, rate limits, request limits,
and ``redline serve`` refusing to expose an open service. All over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from api_fixtures import BATH_SITE, BATH_WKT, LiveServer, assert_problem, copy_cache, free_port, make_app

from api.errors import PLATFORM_PATHS
from api.keys import KeyStore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _keyed_data(sample_cache, folder):
    """A data folder with API keys: one per scope, one revoked."""
    data = copy_cache(sample_cache, folder)
    store = KeyStore(data)
    keys = {}
    for name, scopes in {
        "planx": ["check"],
        "bops": ["boundary:write"],
        "ops": ["admin"],
        "old": ["check"],
    }.items():
        keys[name] = store.create(name, scopes)[1]
    store.revoke("old")
    return data, keys


@pytest.fixture(scope="module")
def keyed(sample_cache, tmp_path_factory):
    """A server with API keys whose operator turned anonymous platform reads off."""
    data, keys = _keyed_data(sample_cache, tmp_path_factory.mktemp("auth"))
    with LiveServer(make_app(data, public_read=False)) as server:
        yield server, keys


@pytest.fixture(scope="module")
def keyed_public(sample_cache, tmp_path_factory):
    """A server with API keys and the default settings: platform-compatible reads need no key."""
    data, keys = _keyed_data(sample_cache, tmp_path_factory.mktemp("auth-public"))
    with LiveServer(make_app(data)) as server:
        yield server, keys


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _refused(response, status: int) -> dict:
    """A problem, or on the platform's endpoints the platform's {"detail": "..."}."""
    if not PLATFORM_PATHS.fullmatch(response.url.path):
        return assert_problem(response, status)
    assert response.status_code == status and response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body["detail"], str) and len(body["detail"]) > 10
    return body


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("POST", "/v1/check", {}, BATH_SITE),
        ("GET", "/gis/lambeth", {"geom": BATH_WKT}, None),
        ("GET", "/entity.json", {"dataset": "conservation-area"}, None),
        ("GET", "/entity/3030404.json", {}, None),
        ("GET", "/dataset.json", {}, None),
        ("GET", "/v1/datasets", {}, None),
    ],
)
def test_data_endpoints_need_a_valid_key_with_the_check_scope(keyed, method, path, params, body):
    server, keys = keyed
    url = server.url + path
    missing = _refused(httpx.request(method, url, params=params, json=body), 401)
    assert "Bearer" in missing["detail"]
    _refused(httpx.request(method, url, params=params, json=body, headers=_auth("rl_not-a-key")), 401)
    revoked = _refused(
        httpx.request(method, url, params=params, json=body, headers=_auth(keys["old"])), 401
    )
    assert "revoked" in revoked["detail"]
    wrong_scope = _refused(
        httpx.request(method, url, params=params, json=body, headers=_auth(keys["bops"])), 403
    )
    assert "check" in wrong_scope["detail"]
    for who in ("planx", "ops"):  # the scope itself, or admin which holds every scope
        response = httpx.request(method, url, params=params, json=body, headers=_auth(keys[who]))
        assert response.status_code == 200, response.text[:300]


PUBLIC_READS = [
    ("/gis/lambeth", {"geom": BATH_WKT}),
    ("/entity.json", {"dataset": "conservation-area"}),
    ("/entity.geojson", {"dataset": "conservation-area"}),
    ("/entity/3030404.json", {}),
    ("/entity/3030404.geojson", {}),
    ("/dataset.json", {}),
    ("/dataset/conservation-area.json", {}),
]


@pytest.mark.parametrize(("path", "params"), PUBLIC_READS)
def test_platform_compatible_reads_need_no_key_by_default(keyed_public, path, params):
    server, keys = keyed_public
    url = server.url + path
    assert httpx.get(url, params=params).status_code == 200  # as the platform and PlanX answer
    for who in ("planx", "bops", "ops"):  # any valid key will do
        assert httpx.get(url, params=params, headers=_auth(keys[who])).status_code == 200
    # a key that is sent must still be good: a mistake is worth telling
    _refused(httpx.get(url, params=params, headers=_auth("rl_not-a-key")), 401)
    assert "revoked" in _refused(httpx.get(url, params=params, headers=_auth(keys["old"])), 401)["detail"]


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("POST", "/v1/check", {}, BATH_SITE),
        ("GET", "/v1/datasets", {}, None),
        ("POST", "/v1/validate", {}, BATH_SITE),
        ("POST", "/v1/boundaries", {}, {"reference": "R", "local_authority": "LA", "site": BATH_SITE}),
        ("GET", "/v1/boundaries/no-such-id", {}, None),
        ("POST", "/widget/coordinates", {}, {"text": "-2.3614 51.3812"}),
    ],
)
def test_everything_else_still_needs_a_key_when_public_reads_are_on(keyed_public, method, path, params, body):
    server, _ = keyed_public
    answer = httpx.request(method, server.url + path, params=params, json=body)
    assert "Bearer" in assert_problem(answer, 401)["detail"]


def test_health_and_metrics_answer_without_a_key(keyed):
    server, _ = keyed
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(server.url + path).status_code == 200


def test_the_rate_limit_answers_429_with_retry_after(sample_cache, tmp_path):
    data = copy_cache(sample_cache, tmp_path / "data")
    token = KeyStore(data).create("burst", ["check"])[1]
    with LiveServer(make_app(data, rate_limit_per_s=0.5, rate_limit_burst=3)) as server:
        answers = [httpx.get(server.url + "/dataset.json", headers=_auth(token)) for _ in range(5)]
        assert [a.status_code for a in answers[:3]] == [200, 200, 200]
        body = _refused(answers[3], 429)
        assert "retry" in body["detail"] and int(answers[3].headers["retry-after"]) >= 1
        other = KeyStore(data).create("other", ["check"])[1]  # the limit is per key
        assert httpx.get(server.url + "/dataset.json", headers=_auth(other)).status_code == 200


@pytest.fixture(scope="module")
def open_server(sample_cache, tmp_path_factory):
    with LiveServer(make_app(copy_cache(sample_cache, tmp_path_factory.mktemp("limits")))) as server:
        yield server


def test_a_body_over_2_mb_is_refused_with_413(open_server):
    ring = [[-2.3614 + i * 1e-9, 51.3812] for i in range(120_000)]
    body = json.dumps({"type": "Polygon", "coordinates": [ring + [ring[0]]]}).encode()
    assert len(body) > 2_000_000
    problem = assert_problem(
        httpx.post(open_server.url + "/v1/check", content=body, headers={"content-type": "application/json"}),
        413,
    )
    assert "2000000" in problem["detail"]


def test_a_site_over_10000_vertices_is_refused(open_server):
    import shapely

    circle = shapely.Point(-2.3610, 51.3814).buffer(0.001, quad_segs=3000)  # 12,001 vertices, ~0.5 MB
    body = {"type": "Polygon", "coordinates": [[list(c) for c in circle.exterior.coords]]}
    problem = assert_problem(httpx.post(open_server.url + "/v1/check", json=body), 413)
    assert "10000" in problem["detail"] and "vertices" in problem["detail"]
    # the same limit on WKT query geometries (short coordinates keep the URL within what HTTP clients send)
    wkt = "MULTIPOINT(" + ",".join(["1 1"] * 10_001) + ")"
    refused = httpx.get(
        open_server.url + "/entity.json", params={"geometry": wkt, "geometry_relation": "intersects"}
    )
    assert refused.status_code == 413 and "10001 vertices" in refused.json()["detail"]  # the platform's shape


def test_too_many_geometries_in_one_request_are_refused(open_server):
    params = [("geometry", f"POINT(-2.36{i:02d} 51.38)") for i in range(101)]
    refused = httpx.get(open_server.url + "/entity.json", params=params)
    assert refused.status_code == 413 and "at most 100" in refused.json()["detail"]


def _serve(args: list[str], data_dir, timeout: float = 20.0):
    env = os.environ | {"REDLINE_DATA_DIR": str(data_dir), "PYTHONPATH": REPO}
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serve_refuses_a_public_address_without_keys(tmp_path):
    process = _serve(["--host", "0.0.0.0", "--port", str(free_port())], tmp_path)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "refusing" in err and "--insecure" in err and "redline keys create" in err


def test_serve_with_insecure_starts_on_a_public_address_and_says_it_is_open(sample_cache, tmp_path):
    data = copy_cache(sample_cache, tmp_path / "data")
    port = free_port()
    process = _serve(["--host", "0.0.0.0", "--port", str(port), "--insecure"], data)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("redline serve --insecure did not start")
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert "no API keys" in err and "open" in err


def test_serve_on_a_public_address_with_keys_needs_no_flag(tmp_path):
    KeyStore(tmp_path).create("planx", ["check"])
    port = free_port()
    process = _serve(["--host", "0.0.0.0", "--port", str(port)], tmp_path)
    try:
        deadline = time.monotonic() + 60
        started = False
        while time.monotonic() < deadline and process.poll() is None:
            try:
                started = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert started
    finally:
        process.terminate()
        process.communicate(timeout=30)
