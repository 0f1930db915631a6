"""The check process: checks answered by a child forked from the worker, in order, and replaced when it dies.

Real processes and a real socket pair; the app-level tests go through the HTTP API on the sample layers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time

import pytest
from api_fixtures import BATH_SITE, copy_cache, make_app
from fastapi.testclient import TestClient

from api.check_process import CheckProcess, CheckProcessLost, CheckProcessRunner, fork_available
from api.check_thread import CheckOverdue, CheckThread
from constraints.site import SiteError

pytestmark = pytest.mark.skipif(not fork_available(), reason="the check process needs fork (POSIX)")


def whoami(delay: float = 0.0, value=None):
    time.sleep(delay)
    return os.getpid(), value


def refuse(code: str):
    raise SiteError("the ring is not closed", code=code, pointer="/coordinates/0", limit={"name": "max_parts", "value": 1})


class Unpicklable(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.lock = threading.Lock()  # a lock cannot be pickled, so this error cannot travel as itself


def unpicklable():
    raise Unpicklable("1/2")


def run(coroutine):
    return asyncio.run(coroutine)


def test_work_runs_in_another_process_and_answers_come_back_in_order():
    async def scenario():
        process = CheckProcess(whoami)
        try:
            answers = await asyncio.gather(*(process.run(0.001 * (i % 3), i) for i in range(40)))
        finally:
            process.close()
        return process, answers

    process, answers = run(scenario())
    assert {pid for pid, _ in answers} == {process.pid} != {os.getpid()}
    assert [value for _, value in answers] == list(range(40))
    assert process.exited.wait(10), "the child ends once its socket is closed"


def test_an_error_in_the_child_reaches_the_caller_whole():
    async def scenario(work, *args):
        process = CheckProcess(work)
        try:
            return await process.run(*args)
        finally:
            process.close()

    with pytest.raises(SiteError) as refused:
        run(scenario(refuse, "ring-not-closed"))
    assert (refused.value.code, refused.value.pointer, refused.value.limit) == ("ring-not-closed", "/coordinates/0", {"name": "max_parts", "value": 1})
    with pytest.raises(RuntimeError, match=r"^Unpicklable: 1/2$"):  # described, since it cannot travel
        run(scenario(unpicklable))


def test_a_child_that_dies_fails_what_it_was_answering_and_the_runner_forks_another():
    runner = CheckProcessRunner(lambda tag: whoami)

    async def scenario():
        first_pid, _ = await runner.run("data-1", 0, None)
        in_flight = asyncio.ensure_future(runner.run("data-1", 5.0, None))
        await asyncio.sleep(0.3)
        os.kill(first_pid, signal.SIGKILL)
        with pytest.raises(CheckProcessLost):
            await in_flight
        second_pid, _ = await runner.run("data-1", 0, None)
        return first_pid, second_pid

    try:
        first_pid, second_pid = run(scenario())
    finally:
        runner.close()
    assert second_pid != first_pid
    assert runner.restarts == 1


def test_new_data_gets_a_new_child_and_the_old_one_ends():
    runner = CheckProcessRunner(lambda tag: whoami)

    async def scenario():
        old_pid, _ = await runner.run("data-1", 0, None)
        [old] = runner.processes()
        new_pid, _ = await runner.run("data-2", 0, None)
        return old, old_pid, new_pid

    try:
        old, old_pid, new_pid = run(scenario())
    finally:
        runner.close()
    assert new_pid != old_pid
    assert old.exited.wait(10)
    assert runner.restarts == 0  # replaced for new data, not because it died


def test_a_pool_sends_each_check_to_the_process_with_the_fewest_waiting():
    runner = CheckProcessRunner(lambda tag: whoami, size=2)

    async def scenario():
        slow = asyncio.ensure_future(runner.run("data-1", 1.0, "slow"))
        await asyncio.sleep(0.05)
        quick = [await runner.run("data-1", 0, i) for i in range(5)]  # one at a time, while the slow one runs
        return await slow, quick, runner.pids

    try:
        (slow_pid, _), quick, pids = run(scenario())
    finally:
        runner.close()
    quick_pids = {pid for pid, _ in quick}
    assert len(pids) == 2 and len(quick_pids) == 1
    assert slow_pid not in quick_pids  # none of them waited behind the slow check


def test_a_check_past_its_deadline_is_abandoned_and_its_process_killed_and_replaced_at_once():
    runner = CheckProcessRunner(lambda tag: whoami, deadline_s=0.5)

    async def scenario():
        first_pid, _ = await runner.run("data-1", 0, None)
        [first] = runner.processes()
        started = time.monotonic()
        overrunning = asyncio.ensure_future(runner.run("data-1", 30.0, "stuck"))
        await asyncio.sleep(0.05)
        behind = asyncio.ensure_future(runner.run("data-1", 0, "behind"))  # waits behind the stuck one
        for waiting in (overrunning, behind):
            with pytest.raises(CheckOverdue) as overdue:
                await waiting
            assert "0.5 s deadline" in str(overdue.value)
        took = time.monotonic() - started
        replacements = runner.pids  # forked as soon as the stuck one was killed, before any new check
        answer = await runner.run("data-1", 0, None)
        return first, first_pid, took, replacements, answer

    try:
        first, first_pid, took, replacements, (next_pid, _) = run(scenario())
    finally:
        runner.close()
    assert 0.5 <= took < 3
    assert first.exited.wait(10), "the stuck process was killed"
    assert replacements == [next_pid] and next_pid != first_pid
    assert runner.restarts == 1 and runner.last_failure["pid"] == first_pid and "deadline" in runner.last_failure["reason"]


def test_a_stopped_check_process_is_killed_at_the_deadline():
    runner = CheckProcessRunner(lambda tag: whoami, deadline_s=0.5)

    async def scenario():
        pid, _ = await runner.run("data-1", 0, None)
        os.kill(pid, signal.SIGSTOP)
        with pytest.raises(CheckOverdue):
            await runner.run("data-1", 0, None)
        return pid, await runner.run("data-1", 0, None)

    try:
        stopped, (pid, _) = run(scenario())
    finally:
        runner.close()
    assert pid != stopped
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left stopped
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(stopped, 0)
            time.sleep(0.05)


def test_the_check_thread_abandons_a_check_past_its_deadline_and_says_how_long_it_has_been_busy():
    thread = CheckThread(deadline_s=0.3)
    started = time.monotonic()
    with pytest.raises(CheckOverdue):
        run(thread.run(time.sleep, 1.5))
    assert time.monotonic() - started < 1.0
    assert thread.busy_for > 0.2  # still on it: a thread cannot be stopped, only abandoned
    thread.stop()
    assert thread.busy_for == 0


def test_a_pool_needs_at_least_one_process():
    with pytest.raises(ValueError):
        CheckProcessRunner(lambda tag: whoami, size=0)


# -- through the API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_client(sample_cache, tmp_path_factory):
    app = make_app(copy_cache(sample_cache, tmp_path_factory.mktemp("check-process")))
    with TestClient(app) as client:
        yield client


def test_the_api_answers_checks_from_the_check_process_as_the_thread_would(app_client, sample_cache, tmp_path):
    answer = app_client.post("/v1/check", json=BATH_SITE)
    assert answer.status_code == 200
    ready = app_client.get("/readyz").json()
    assert len(ready["check_processes"]) == 1 and ready["process"] not in ready["check_processes"]

    threaded = make_app(copy_cache(sample_cache, tmp_path / "threaded"), check_process=False)
    with TestClient(threaded) as other:
        assert other.app.state.check_process is None
        reference = other.post("/v1/check", json=BATH_SITE)
    mine, theirs = answer.json(), reference.json()
    for body in (mine, theirs):
        body["provenance"].pop("checked_at")
        for dataset in body["provenance"]["datasets"].values():
            dataset.pop("loaded_at", None), dataset.pop("checked_at", None)
    assert mine == theirs


def test_a_refused_site_is_the_same_problem_answer_from_the_check_process(app_client):
    open_ring = {"type": "Polygon", "coordinates": [[[-2.36, 51.38], [-2.35, 51.38], [-2.35, 51.39]]]}
    answer = app_client.post("/v1/check", json=open_ring)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "/problems/ring-not-closed"


def test_a_dead_check_process_is_replaced_and_checks_go_on(app_client):
    assert app_client.post("/v1/check", json=BATH_SITE).status_code == 200
    runner = app_client.app.state.check_process
    [victim] = runner.processes()
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.exited.wait(10)
    answer = app_client.post("/v1/check", json=BATH_SITE)
    assert answer.status_code == 200
    assert len(runner.pids) == 1 and victim.pid not in runner.pids


def test_a_stuck_check_thread_answers_503_and_readyz_reports_it(sample_cache, tmp_path):
    app = make_app(copy_cache(sample_cache, tmp_path / "threaded"), check_process=False, check_deadline_s=0.5)
    with TestClient(app) as client:
        hog = threading.Thread(target=lambda: asyncio.run(_occupy(app.state.check_thread, 2.0)))
        hog.start()
        time.sleep(0.7)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "check thread" in ready.json()["detail"]
        started = time.monotonic()
        answer = client.post("/v1/check", json=BATH_SITE)
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert answer.json()["type"] == "/problems/check-deadline"
        assert time.monotonic() - started < 2
        hog.join()
        deadline = time.monotonic() + 5
        while app.state.check_thread.busy_for and time.monotonic() < deadline:  # the abandoned sleep ends
            time.sleep(0.05)
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/check", json=BATH_SITE).status_code == 200


async def _occupy(thread: CheckThread, seconds: float) -> None:
    with contextlib.suppress(CheckOverdue):
        await thread.run(time.sleep, seconds)


def test_a_rebuilt_index_is_answered_by_a_new_check_process(app_client):
    assert app_client.post("/v1/check", json=BATH_SITE).status_code == 200
    runner = app_client.app.state.check_process
    before = runner.pids
    app_client.app.state.index.reload(force=True)
    answer = app_client.post("/v1/check", json=BATH_SITE)
    assert answer.status_code == 200
    assert runner.pids and not set(runner.pids) & set(before)
    assert answer.headers["x-redline-data-version"] == app_client.app.state.index.data_version
