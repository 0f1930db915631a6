"""No site can hang or stall the check: over real HTTP, against ``redline serve`` with check processes on
(the default), as issue 12 found them.

A site that reaches repair (a repeated vertex, a bow-tie) used to hang its check process for good; a
check process that stops answering is now killed at the check deadline and replaced; and geometry work
is bounded before it starts, so the star sites that held a core for minutes are refused at once.
"""

from __future__ import annotations

import concurrent.futures
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
