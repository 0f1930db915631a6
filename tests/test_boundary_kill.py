"""A process killed while writing leaves the boundary store consistent, on SQLite and on PostgreSQL.

A child process runs the real workflow against the store. In the first test it is killed (SIGKILL)
inside the approval transaction, after it has written the new version, its check, the version pointer,
the request's new state and the audit event, but before the commit: none of it may be visible
afterwards, and the approval must then succeed. In the second it is killed at a random moment of a
busy propose/approve loop, and the store's invariants must hold.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from boundary_fixtures import *  # noqa: F403 - pytest fixtures: backend_url, checker, saltford, sample_cache_copy

from boundary.store import Store
from boundary.workflow import Boundaries

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path[:0] = [{root!r}, {tests!r}]
    from boundary_fixtures import SaltfordSites, sample_index
    from boundary import store as store_module
    from boundary.store import Store
    from boundary.workflow import Boundaries

    mode, url = sys.argv[1], sys.argv[2]
    sites = SaltfordSites()
    index = sample_index({cache!r})
    wf = Boundaries(Store(url), lambda g: index.check(g))

    if mode == "hang-in-approval":
        original = store_module.Tx.append_audit
        def append_audit(self, boundary_id, at, actor, event, details):
            original(self, boundary_id, at, actor, event, details)
            if event == "change_request_approved":
                print("IN_TX", flush=True)
                time.sleep(120)  # killed here, inside the transaction
        store_module.Tx.append_audit = append_audit
        boundary_id, request_id = sys.argv[3], sys.argv[4]
        wf.approve(request_id, "applicant")
        print("COMMITTED", flush=True)
    else:
        b = wf.create("KILL", "LA", sites.outside, "applicant")
        print("READY", flush=True)
        shapes = [sites.over, sites.outside, sites.over_more, sites.square(5.0)]
        i = 0
        while True:
            cr = wf.propose(b["id"], shapes[i % len(shapes)], f"round {{i}}", "officer")
            if i % 3 == 2:
                wf.cancel(cr["id"], "officer")
            else:
                wf.approve(cr["id"], "applicant")
            print("ROUND", i, flush=True)
            i += 1
    """
)


def spawn(cache: Path, *args: str) -> subprocess.Popen:
    """The child, its index built over ``cache`` (a copy of the samples)."""
    code = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), cache=str(cache))
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def wait_for(proc: subprocess.Popen, word: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(word):
            return
        if not line and proc.poll() is not None:
            raise AssertionError(
                f"child exited ({proc.returncode}) before {word}: {proc.stderr.read()[-3000:]}"
            )
    raise AssertionError(f"child did not print {word} within {timeout} s")


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    proc.stderr.close()


def assert_consistent(store: Store) -> None:
    """Invariants that any committed history satisfies and a torn write would break."""
    with store.transaction(write=False) as tx:
        for b in tx.all("SELECT * FROM boundaries"):
            versions = [v["n"] for v in tx.list_versions(b["id"])]
            assert versions == list(range(1, b["current_version"] + 1)), (b, versions)
            for n in versions:
                assert tx.count_checks(b["id"], n) >= 1
            requests = tx.list_change_requests(b["id"])
            assert sum(r["state"] == "open" for r in requests) <= 1
            approved = {
                r["result_version"]: r for r in requests if r["state"] in ("approved", "auto_approved")
            }
            assert sorted(approved) == versions[1:]
            for n, r in approved.items():
                assert tx.get_version(b["id"], n)["change_request_id"] == r["id"]
            trail = tx.list_audit(b["id"])
            opened = [e["details"]["change_request"] for e in trail if e["event"] == "change_request_opened"]
            assert opened == [r["id"] for r in sorted(requests, key=lambda r: r["created_at"])]
            for r in requests:
                closing = [
                    e
                    for e in trail
                    if e["details"].get("change_request") == r["id"]
                    and e["event"]
                    in (
                        "change_request_approved",
                        "change_request_rejected",
                        "change_request_cancelled",
                        "change_request_auto_approved",
                    )
                ]
                assert len(closing) == (0 if r["state"] == "open" else 1), (r, closing)
            added = [e["details"]["version"] for e in trail if e["event"] == "version_added"]
            assert added == versions


def test_kill_inside_the_approval_transaction_leaves_nothing_half_written(backend_url, checker, saltford, sample_cache_copy):
    store = Store(backend_url)
    wf = Boundaries(store, checker)
    b = wf.create("R", "LA", saltford.outside, "applicant")
    cr = wf.propose(b["id"], saltford.over, "r", "officer")
    before = len(wf.audit(b["id"]))
    store.close()

    child = spawn(sample_cache_copy, "hang-in-approval", backend_url, b["id"], cr["id"])
    wait_for(child, "IN_TX")
    kill(child)

    store = Store(backend_url)
    wf = Boundaries(store, checker)
    assert_consistent(store)
    assert wf.get(b["id"])["version"] == 1
    assert wf.get_change_request(cr["id"])["state"] == "open"
    assert len(wf.audit(b["id"])) == before
    # The lock died with the child: the approval now goes through.
    assert wf.approve(cr["id"], "applicant")["result_version"] == 2
    assert_consistent(store)
    store.close()


def test_kill_at_a_random_moment_of_busy_writing_keeps_the_store_consistent(backend_url, checker, saltford, sample_cache_copy):
    rng = random.Random(20261127)
    child = spawn(sample_cache_copy, "loop", backend_url)
    wait_for(child, "READY")
    wait_for(child, "ROUND")
    time.sleep(rng.uniform(0.0, 0.4))
    kill(child)
    store = Store(backend_url)
    assert_consistent(store)
    wf = Boundaries(store, checker)
    with store.transaction(write=False) as tx:
        boundary_id = tx.one("SELECT id FROM boundaries")["id"]
    # Whatever was in flight, the store takes the next change.
    open_request = wf.get(boundary_id)["open_change_request"]
    if open_request:
        wf.cancel(open_request, "officer")
    cr = wf.propose(boundary_id, saltford.over, "after the crash", "officer")
    wf.approve(cr["id"], "applicant")
    assert_consistent(store)
    store.close()
