"""Rate limits: one budget per API key or client address however many worker processes serve it, and a
budget of failed authentications per address. Over real HTTP on 127.0.0.1."""

from __future__ import annotations

import multiprocessing
import socket

import httpx
import pytest
from api_fixtures import LiveServer, ServedProcess, assert_problem, copy_cache, make_app
from ratelimit_worker import take_many
from test_serve import wait_for, workers_answering

from api.keys import KeyStore
from api.ratelimit import SharedBuckets


def test_processes_sharing_the_file_share_one_bucket(tmp_path):
    path = str(tmp_path / "ratelimit.bin")
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=take_many, args=(path, 40, results)) for _ in range(3)]
    for w in workers:
        w.start()
    granted = sum(results.get(timeout=60) for _ in workers)
    for w in workers:
        w.join(timeout=10)
    assert granted == 50  # 120 asked for, by three processes, from one bucket of 50


def test_a_full_table_reuses_buckets_that_have_refilled(tmp_path):
    buckets = SharedBuckets(tmp_path / "ratelimit.bin")
    for i in range(20_000):  # more names than slots: refilled buckets are as good as new
        assert buckets.take(f"addr:{i}", rate=1e9, burst=5) == 0
    assert [buckets.take("key:k", rate=0.001, burst=2) == 0 for _ in range(3)] == [True, True, False]
    assert buckets.peek("key:k", rate=0.001, burst=2) > 0


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="workers with their own sockets are Linux's")
def test_two_workers_give_a_key_and_an_address_one_budget_between_them(sample_cache, tmp_path):
    data = copy_cache(sample_cache, tmp_path / "data")
    token = KeyStore(data).create("planx", ["check"])[1]
    limits = {
        "REDLINE_RATE_LIMIT_BURST": "30",
        "REDLINE_RATE_LIMIT_PER_S": "0.01",
        "REDLINE_ANONYMOUS_RATE_LIMIT_BURST": "30",
        "REDLINE_ANONYMOUS_RATE_LIMIT_PER_S": "0.01",
    }
    with ServedProcess(data, tmp_path / "serve.log", env=limits, args=("--workers", "2")) as server:
        wait_for(workers_answering(server.url, 2), 120, "two workers to answer")
        for headers in ({"Authorization": f"Bearer {token}"}, {}):
            statuses = []
            for _ in range(80):  # each on a new connection, so both workers take a share
                statuses.append(httpx.get(f"{server.url}/dataset.json", headers=headers | {"Connection": "close"}, timeout=10).status_code)
            assert set(statuses) == {200, 429}
            assert statuses.count(200) == 30, statuses  # not 60: the budget is not per worker


def test_failed_authentications_are_limited_per_address(sample_cache, tmp_path):
    data = copy_cache(sample_cache, tmp_path / "data")
    token = KeyStore(data).create("planx", ["check"])[1]
    with LiveServer(make_app(data, failed_auth_burst=3, failed_auth_per_s=0.01)) as server:
        guess = {"Authorization": "Bearer rl_guess"}
        for _ in range(3):
            assert_problem(httpx.post(server.url + "/v1/check", headers=guess, json={}), 401)
        locked = httpx.post(server.url + "/v1/check", headers=guess, json={})
        assert "failed authentications" in assert_problem(locked, 429)["detail"]
        assert int(locked.headers["retry-after"]) >= 1
        # while the address is locked out, even a good key from it waits: guessing cannot go on
        assert_problem(httpx.get(server.url + "/v1/datasets", headers={"Authorization": f"Bearer {token}"}), 429)
        # reads that need no key still answer
        assert httpx.get(server.url + "/dataset.json").status_code == 200


def test_anonymous_callers_are_limited_per_address(sample_cache, tmp_path):
    data = copy_cache(sample_cache, tmp_path / "data")
    KeyStore(data).create("planx", ["check"])
    with LiveServer(make_app(data, anonymous_rate_limit_burst=5, anonymous_rate_limit_per_s=0.01)) as server:
        answers = [httpx.get(server.url + "/dataset.json") for _ in range(6)]
        assert [a.status_code for a in answers[:5]] == [200] * 5
        assert answers[5].status_code == 429 and int(answers[5].headers["retry-after"]) >= 1
        # /dataset.json answers errors in the platform's shape
        assert "without an API key from 127.0.0.1" in answers[5].json()["detail"]
        # another address (a trusted proxy's X-Forwarded-For, as uvicorn reads it) has its own budget
        other = httpx.get(server.url + "/dataset.json", headers={"X-Forwarded-For": "192.0.2.7"})
        assert other.status_code == 200


def test_a_data_folder_that_cannot_hold_the_file_keeps_the_limits_per_process(tmp_path):
    (tmp_path / "not-a-folder").write_text("")
    buckets = SharedBuckets(tmp_path / "not-a-folder" / "ratelimit.bin")
    assert [buckets.take("k", rate=0.001, burst=1) == 0 for _ in range(2)] == [True, False]
