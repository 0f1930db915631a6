"""No site can hang or stall the check: over real HTTP, against ``redline serve`` with check processes on
(the default), as issue 12 found them.

A site that reaches repair (a repeated vertex, a bow-tie) used to hang its check process for good; a
check process that stops answering is now killed at the check deadline and replaced; and geometry work
is bounded before it starts, so the star sites that held a core for minutes are refused at once.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import signal
import time

import httpx
import pytest
from api_fixtures import BATH_SITE, ServedProcess, assert_problem, copy_cache

from api.check_process import fork_available

pytestmark = pytest.mark.skipif(not fork_available(), reason="check processes need fork (POSIX)")

DEADLINE_S = 2.0
REPEATED_VERTEX = {"type": "Polygon", "coordinates": [[[-2.3614, 51.3812], [-2.3606, 51.3812], [-2.3606, 51.3812], [-2.3606, 51.3817], [-2.3614, 51.3817], [-2.3614, 51.3812]]]}
# the Bath site drawn with its last corner overshot, so the closing edge crosses the first: a small
# bow-tie that repair removes (changing the area by well under 1 %)
BOW_TIE = {"type": "Polygon", "coordinates": [[[-2.3614, 51.3812], [-2.3606, 51.3812], [-2.3606, 51.3817], [-2.3614, 51.3817], [-2.3614, 51.38122], [-2.36138, 51.38118], [-2.3614, 51.3812]]]}


def star(points: int, lon: float = -2.3610, lat: float = 51.3815, radius: float = 0.002) -> dict:
    """A star polygon {points / (points / 2 - 1)}: every edge crosses most of the others."""
    step = points // 2 - 1
    ring = [[lon + radius * math.cos(2 * math.pi * (i * step % points) / points), lat + radius * 0.6 * math.sin(2 * math.pi * (i * step % points) / points)] for i in range(points)]
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


@pytest.fixture(scope="module")
def served(sample_cache, tmp_path_factory):
    folder = tmp_path_factory.mktemp("check-safety")
    with ServedProcess(copy_cache(sample_cache, folder / "cache"), folder / "serve.log", env={"REDLINE_CHECK_DEADLINE_S": str(DEADLINE_S)}) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/v1/check", json=BATH_SITE).status_code == 200  # the check process is forked
            yield server, client


def timed_check(client: httpx.Client, site: dict) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post("/v1/check", json=site)
    return response, time.monotonic() - started


@pytest.mark.parametrize("site", [REPEATED_VERTEX, BOW_TIE], ids=["repeated-vertex", "repairable-bow-tie"])
def test_a_site_that_needs_repair_is_answered_within_a_second_and_so_is_the_next_check(served, site):
    _, client = served
    answer, took = timed_check(client, site)
    assert answer.status_code == 200, answer.text[:500]
    assert took < 1.0
    warnings = answer.json()["site"]["warnings"]
    assert any("repeated points were removed" in w or "the boundary was repaired" in w for w in warnings), warnings
    following, took = timed_check(client, BATH_SITE)
    assert following.status_code == 200 and took < 1.0


def test_a_stopped_check_process_is_killed_at_the_deadline_its_checks_get_503_and_a_new_one_answers(served):
    server, client = served
    [stopped] = client.get("/readyz").json()["check_processes"]
    replaced_before = client.get("/readyz").json()["check_processes_replaced"]
    os.kill(stopped, signal.SIGSTOP)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # one being worked on, two waiting behind it
        answers = list(pool.map(lambda _: httpx.post(f"{server.url}/v1/check", json=BATH_SITE, timeout=30), range(3)))
    took = time.monotonic() - started
    for answer in answers:
        problem = assert_problem(answer, 503)
        assert int(answer.headers["retry-after"]) >= 1
        assert problem["type"] == "/problems/check-deadline" and f"{DEADLINE_S:g} s deadline" in problem["detail"]
    assert DEADLINE_S - 0.2 <= took < DEADLINE_S + 3
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["check_processes"] and stopped not in body["check_processes"]
    assert body["check_processes_replaced"] == replaced_before + 1
    assert body["last_check_process_failure"]["pid"] == stopped and "deadline" in body["last_check_process_failure"]["reason"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # killed and reaped by its worker, not left stopped
        try:
            os.kill(stopped, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the stopped check process {stopped} is still there")
    after, took = timed_check(client, BATH_SITE)
    assert after.status_code == 200 and took < 1.0


@pytest.mark.parametrize("points", [200, 300])
def test_a_star_site_is_refused_at_once_with_a_422_naming_the_limit(served, points):
    _, client = served
    answer, took = timed_check(client, star(points))
    problem = assert_problem(answer, 422)
    assert took < 1.0
    assert problem["type"] == "/problems/too-many-self-intersections"
    assert problem["limit"] == {"name": "max_self_intersections", "value": 50}
    assert "limit max_self_intersections" in problem["detail"] and "redraw the boundary so no edges cross" in problem["detail"]
    following, took = timed_check(client, BATH_SITE)
    assert following.status_code == 200 and took < 1.0


def gear(teeth: int, lon: float = -2.3610, lat: float = 51.3815, radius: float = 0.002, depth: float = 0.0) -> dict:
    """A valid polygon of 2 x ``teeth`` vertices whose radius alternates by ``depth`` (a circle when 0)."""
    ring = []
    for i in range(2 * teeth):
        r = radius * (1 + (depth if i % 2 else -depth))
        a = math.pi * i / teeth
        ring.append([lon + r * math.cos(a), lat + r * 0.6 * math.sin(a)])
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


def test_every_endpoint_that_reads_a_site_refuses_the_star_at_once(served, tmp_path):
    _, client = served
    site = star(200)
    feature_file = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": site}]}
    overlapping_file = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": gear(100)}, {"type": "Feature", "properties": {}, "geometry": gear(100, depth=0.02)}]}
    requests = {
        "validate": lambda: client.post("/v1/validate", json={"site": site}),
        "boundaries": lambda: client.post("/v1/boundaries", json={"reference": "24/00001/FUL", "local_authority": "bath", "site": site}),
        "validate upload": lambda: client.post("/v1/validate", files={"file": ("site.geojson", json.dumps(feature_file), "application/geo+json")}),
        "widget overlays": lambda: client.post("/widget/overlays", json={"site": site}),
        # two valid boundaries whose edges cross 200 times: comparing them is bounded like a repair
        "widget diff": lambda: client.post("/widget/diff", json={"current": gear(100), "proposed": gear(100, depth=0.02)}),
        # an upload of features that overlap, joined into one site: bounded before the join
        "overlapping upload": lambda: client.post("/v1/validate", files={"file": ("site.geojson", json.dumps(overlapping_file), "application/geo+json")}),
    }
    for name, send in requests.items():
        started = time.monotonic()
        answer = send()
        took = time.monotonic() - started
        problem = assert_problem(answer, 422)
        assert took < 1.0, name
        assert "limit max_self_intersections" in problem["detail"], (name, problem)


def test_stopping_the_service_ends_a_stopped_check_process_too(served):
    # last in this module: it stops the module's server
    server, client = served
    [stopped] = client.get("/readyz").json()["check_processes"]
    os.kill(stopped, signal.SIGSTOP)
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(DEADLINE_S + 30)
    try:  # killed and reaped by the worker before it exited, not left to whoever inherits it
        os.kill(stopped, 0)
    except ProcessLookupError:
        return
    os.kill(stopped, signal.SIGKILL)
    pytest.fail(f"the check process {stopped} outlived its service")
