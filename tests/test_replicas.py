"""Two `redline serve` replicas on one PostgreSQL store and one cache folder behave as one service."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import shapely
from api_fixtures import copy_cache, stop, wait_ready
from boundary_fixtures import postgres

from api.keys import KeyStore
from tests.fake_platform import FakePlatform

ROOT = Path(__file__).resolve().parents[1]
# Rosendale Road, Lambeth: the fake platform publishes three real protected trees here; the samples hold none
TREES = json.loads(json.dumps(shapely.geometry.mapping(shapely.box(-0.0955, 51.4390, -0.0945, 51.4396))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    def __init__(self, name: str, env: dict, log_dir: Path):
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(log_dir / f"{name}.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        def exited():
            if self.process.poll() is not None:
                return Path(self.log.name).read_text()[-2000:]

        wait_ready(self.base, timeout, f"replica {self.name}", exited)

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def stop(self) -> None:
        stop(self.process, 20)
        self.log.close()


@pytest.fixture(scope="module")
def replicas(sample_cache, tmp_path_factory):
    """Two replicas, started once for the module: only the sync test adds a layer (the tree layer), and
    nothing else here depends on that layer's absence, so the tests may share them in any order."""
    tmp_path = tmp_path_factory.mktemp("replicas")
    data_dir = copy_cache(sample_cache, tmp_path / "shared-cache")
    keys = KeyStore(data_dir)
    _, planx = keys.create("planx", ["boundary:write", "check"])
    _, officer = keys.create("officer:sam", ["officer"])
    database_url = postgres().new_database("replicas_" + uuid.uuid4().hex[:10])
    with FakePlatform() as platform:
        common = {
            **os.environ,
            "REDLINE_DATA_DIR": str(data_dir),
            "REDLINE_DATABASE_URL": database_url,
            "REDLINE_RELOAD_POLL_S": "0.5",
            "REDLINE_PDP_FILES_URL": platform.url,
            "REDLINE_PDP_API_URL": platform.url,
            "REDLINE_RATE_LIMIT_PER_S": "1000",
        }
        a = Replica("a", common, tmp_path)
        b = Replica("b", common, tmp_path)
        try:
            a.wait_ready()
            b.wait_ready()
            yield a, b, planx, officer, common
        finally:
            a.stop()
            b.stop()


def test_a_change_request_opened_on_one_replica_is_approved_on_the_other(replicas):
    a, b, planx, officer, _ = replicas
    site = {"type": "Feature", "properties": {}, "geometry": TREES}
    created = a.client(planx).post("/v1/boundaries", json={"reference": "BOPS-22/0042", "local_authority": "Lambeth", "site": site})
    assert created.status_code == 201, created.text
    bid = created.json()["id"]

    moved = json.loads(json.dumps(shapely.geometry.mapping(shapely.affinity.translate(shapely.geometry.shape(TREES), 0.0002, 0))))
    opened = a.client(officer).post(f"/v1/boundaries/{bid}/change-requests", json={"site": {"type": "Feature", "properties": {}, "geometry": moved}, "reason": "Include the garage"})
    assert opened.status_code == 201, opened.text
    request = opened.json()

    approved = b.client(request["token"]).post(f"/v1/change-requests/{request['id']}/approve", json={})
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "approved"

    current = a.client(planx).get(f"/v1/boundaries/{bid}").json()
    assert current["version"] == 2
    events = [e["event"] for e in b.client(officer).get(f"/v1/boundaries/{bid}/audit").json()["events"]]
    assert events.index("change_request_opened") < events.index("change_request_approved")


def test_a_sync_run_beside_the_replicas_is_picked_up_by_both_without_a_restart(replicas):
    a, b, planx, _, env = replicas

    def tpo_on(replica):
        response = replica.client(planx).post("/v1/check", json=TREES)
        return next(c for c in response.json()["constraints"] if c["key"] == "tpo"), response.headers["x-redline-data-version"]

    before, version_before = tpo_on(b)
    assert before["status"] == "unknown"  # no tree layer yet, and never "clear"

    # the deployment's one scheduled sync job, on the shared cache folder
    sync = subprocess.run([sys.executable, "-m", "api.cli", "datasets", "sync", "--dataset", "tree"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert sync.returncode == 0, sync.stdout + sync.stderr

    for replica in (b, a):
        deadline = time.monotonic() + 30
        after, version_after = tpo_on(replica)
        while after["status"] != "intersects" and time.monotonic() < deadline:
            time.sleep(0.3)
            after, version_after = tpo_on(replica)
        assert after["status"] == "intersects", replica.name
        assert {e["dataset"] for e in after["entities"]} == {"tree"}
        assert version_after != version_before
