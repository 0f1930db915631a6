"""A service protected by API keys stays closed when its keys go: the last key revoked, ``keys.json``
removed or corrupted. Protected endpoints answer 503 problem+json saying why; health stays open.
All over real HTTP on 127.0.0.1, with the store changed from outside as ``redline keys`` would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from api_fixtures import BATH_SITE, LiveServer, assert_problem, copy_cache, make_app

from api.keys import KeyStore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTECTED = [
    ("POST", "/v1/check", BATH_SITE),
    ("GET", "/v1/datasets", None),
    ("POST", "/v1/validate", BATH_SITE),
    ("GET", "/v1/boundaries/nothing-here", None),
]


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _closed(server, token: str | None = None) -> list[dict]:
    headers = _auth(token) if token else {}
    problems = []
    for method, path, body in PROTECTED:
        problem = assert_problem(httpx.request(method, server.url + path, json=body, headers=headers), 503)
        assert problem["type"] == "/problems/no-usable-keys"
        assert "redline keys create" in problem["detail"]
        problems.append(problem)
    assert httpx.get(server.url + "/healthz").status_code == 200
    return problems


@pytest.fixture
def keyed_server(sample_cache, tmp_path):
    data = copy_cache(sample_cache, tmp_path / "data")
    store = KeyStore(data)
    token = store.create("ops", ["admin"])[1]
    with LiveServer(make_app(data)) as server:
        assert httpx.post(server.url + "/v1/check", json=BATH_SITE, headers=_auth(token)).status_code == 200
        yield server, store, token


def test_revoking_the_last_key_closes_the_service(keyed_server):
    server, store, token = keyed_server
    assert store.revoke("ops") == 1
    problems = _closed(server)
    assert "no active API key" in problems[0]["detail"]
    _closed(server, token)
    fresh = store.create("ops2", ["admin"])[1]  # a new key opens it again, to that key only
    assert httpx.post(server.url + "/v1/check", json=BATH_SITE, headers=_auth(fresh)).status_code == 200
    assert_problem(httpx.post(server.url + "/v1/check", json=BATH_SITE), 401)


def test_removing_keys_json_closes_the_service(keyed_server):
    server, store, token = keyed_server
    store.path.unlink()
    problems = _closed(server)
    assert "missing" in problems[0]["detail"]
    _closed(server, token)


@pytest.mark.parametrize("content", [b'{"keys": {"ab12": {"name": "ops", "sco', b"", b"[]", b'{"keys": {"x": 1}}', b"\xff\xfe"])
def test_a_corrupt_keys_json_is_a_clear_503_never_a_500(keyed_server, content):
    server, store, token = keyed_server
    store.path.write_bytes(content)
    problems = _closed(server, token)
    assert "unreadable" in problems[0]["detail"] and "keys.json" in problems[0]["detail"]


def test_a_service_told_to_require_keys_is_closed_without_any(sample_cache, tmp_path):
    data = copy_cache(sample_cache, tmp_path / "data")
    with LiveServer(make_app(data, require_keys=True)) as server:
        _closed(server)


def test_a_service_never_given_keys_stays_open_for_development(sample_cache, tmp_path):
    data = copy_cache(sample_cache, tmp_path / "data")
    with LiveServer(make_app(data)) as server:
        assert httpx.post(server.url + "/v1/check", json=BATH_SITE).status_code == 200


def test_the_keys_command_reports_a_corrupt_store_clearly(tmp_path):
    (tmp_path / "keys.json").write_text('{"keys": {')
    env = os.environ | {"REDLINE_DATA_DIR": str(tmp_path)}
    for args in (["keys", "list"], ["keys", "create", "--name", "x", "--scope", "check"], ["serve", "--port", "1"]):
        done = subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert "unreadable" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_an_officer_key_opens_every_endpoint_the_officer_page_uses(sample_cache, tmp_path):
    """The officer page (api/static/officer.html with <redline-map mode="amend">) loads the boundary,
    validates, checks, shows overlays, diffs, reads typed coordinates and uploads: all with one officer key."""
    data = copy_cache(sample_cache, tmp_path / "data")
    store = KeyStore(data)
    officer = _auth(store.create("officer", ["officer"])[1])
    bops = _auth(store.create("bops", ["boundary:write"])[1])
    with LiveServer(make_app(data)) as server:
        created = httpx.post(server.url + "/v1/boundaries", json={"reference": "OFF-1", "local_authority": "Bath and North East Somerset", "site": BATH_SITE}, headers=bops)
        assert created.status_code == 201, created.text
        feature = {"type": "Feature", "properties": {}, "geometry": BATH_SITE}
        calls = [
            ("GET", f"/v1/boundaries/{created.json()['id']}", {}),
            ("POST", "/v1/validate", {"json": feature}),
            ("POST", "/v1/check", {"json": feature}),
            ("POST", "/widget/overlays", {"json": {"site": feature}}),
            ("POST", "/widget/diff", {"json": {"current": feature, "proposed": feature}}),
            ("POST", "/widget/coordinates", {"json": {"text": "-2.3614 51.3812\n-2.3606 51.3812\n-2.3606 51.3817"}}),
            ("GET", "/widget/features?bbox=-2.365,51.378,-2.355,51.384", {}),
            ("POST", "/widget/upload", {"files": {"file": ("site.geojson", json.dumps(BATH_SITE).encode())}}),
        ]
        for method, path, options in calls:
            answer = httpx.request(method, server.url + path, headers=officer, **options)
            assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
