"""`redline serve --workers N`: every worker takes connections, a dead worker is replaced, SIGTERM stops all.

Real processes on loopback: the supervisor, its workers, and clients opening fresh connections.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from api_fixtures import BATH_SITE

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="SO_REUSEPORT is Linux's (other systems use uvicorn's own workers)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answering_processes(url: str, tries: int = 40) -> set[int]:
    """The worker pids that answer /readyz, each probe on a new connection."""
    pids = set()
    for _ in range(tries):
        response = httpx.get(f"{url}/readyz", timeout=5, headers={"Connection": "close"})
        if response.status_code == 200:
            pids.add(response.json()["process"])
    return pids


def workers_answering(url: str, count: int, without: int | None = None):
    """A condition for ``wait_for``: exactly ``count`` workers answer (none of them ``without``)."""

    def condition():
        pids = answering_processes(url)
        return pids if len(pids) == count and without not in pids else None

    return condition


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


class TwoWorkers:
    """``redline serve --workers 2`` over a private copy of the samples, started when first asked for.

    Starting one costs two spawned workers, each importing the service and indexing the samples, so the
    tests share it; a test that stops the supervisor (SIGTERM) leaves the next test a newly started one.
    """

    def __init__(self, sample_cache, folder: Path):
        self.sample_cache = sample_cache
        self.folder = folder
        self.process: subprocess.Popen | None = None
        self.started = 0

    def running(self) -> tuple[subprocess.Popen, str, int]:
        if self.process is None or self.process.poll() is not None:
            self.close()
            self.started += 1
            data_dir = self.folder / f"cache-{self.started}"
            shutil.copytree(self.sample_cache.root, data_dir)
            self.port = free_port()
            self.log = open(self.folder / f"serve-{self.started}.log", "wb")
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port), "--workers", "2", "--log-level", "warning"],
                cwd=ROOT,
                env=os.environ | {"REDLINE_DATA_DIR": str(data_dir), "REDLINE_LOAD_SAMPLES": "false"},
                stdout=self.log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.process, f"http://127.0.0.1:{self.port}", self.port

    def close(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
            self.log.close()
            self.process = None


@pytest.fixture(scope="module")
def two_workers_service(sample_cache, tmp_path_factory):
    service = TwoWorkers(sample_cache, tmp_path_factory.mktemp("two-workers"))
    try:
        yield service
    finally:
        service.close()


@pytest.fixture
def two_workers(two_workers_service):
    return two_workers_service.running()


def test_both_workers_take_connections_and_a_dead_one_is_replaced(two_workers):
    supervisor, url, _ = two_workers
    first = wait_for(workers_answering(url, 2), 120, "two workers to answer")
    victim = sorted(first)[0]
    os.kill(victim, signal.SIGKILL)
    after = wait_for(workers_answering(url, 2, without=victim), 120, "a replacement worker")
    assert len(after - first) == 1  # one new worker beside the survivor
    assert supervisor.poll() is None


def check_processes(url: str, tries: int = 40) -> set[int]:
    """The check processes (see api/check_process.py) behind the workers, after a check on each connection."""
    pids = set()
    for _ in range(tries):
        with httpx.Client(headers={"Connection": "close"}) as client:
            client.post(f"{url}/v1/check", json=BATH_SITE, timeout=10).raise_for_status()
            pids.update(client.get(f"{url}/readyz", timeout=5).json()["check_processes"])
    return pids


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_sigterm_stops_every_worker_and_its_check_process_and_frees_the_port(two_workers):
    supervisor, url, port = two_workers
    workers = wait_for(workers_answering(url, 2), 120, "two workers to answer")
    checkers = wait_for(lambda: found if len(found := check_processes(url)) == 2 else None, 60, "a check process in each worker")
    assert not checkers & workers
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(60) == 0
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for pid in checkers:
        assert gone(pid)
    with socket.socket() as probe:  # nothing listens there any more
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_port_held_by_another_program_is_refused_at_once(sample_cache, tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "2"],
            cwd=ROOT,
            env=os.environ | {"REDLINE_DATA_DIR": str(tmp_path / "cache")},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_one_worker_can_answer_checks_from_several_check_processes(sample_cache, tmp_path):
    data_dir = tmp_path / "cache"
    shutil.copytree(sample_cache.root, data_dir)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--check-processes", "2", "--log-level", "warning"],
        cwd=ROOT,
        env=os.environ | {"REDLINE_DATA_DIR": str(data_dir), "REDLINE_LOAD_SAMPLES": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        [worker] = wait_for(workers_answering(url, 1), 120, "the worker to answer")
        with httpx.Client() as client:
            assert client.post(f"{url}/v1/check", json=BATH_SITE, timeout=10).status_code == 200
            checkers = client.get(f"{url}/readyz", timeout=5).json()["check_processes"]
        assert len(checkers) == 2 and worker not in checkers
    finally:
        process.send_signal(signal.SIGTERM)  # uvicorn shuts down, then exits by the signal it caught
        process.wait(60)
    assert all(gone(pid) for pid in checkers)


def test_a_connection_the_worker_closes_ends_though_a_check_process_was_forked_while_it_was_open(sample_cache, tmp_path):
    data_dir = tmp_path / "cache"
    shutil.copytree(sample_cache.root, data_dir)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=os.environ | {"REDLINE_DATA_DIR": str(data_dir), "REDLINE_LOAD_SAMPLES": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(workers_answering(f"http://127.0.0.1:{port}", 1), 120, "the worker to answer")
        body = json.dumps(BATH_SITE).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=15) as client:
            # the first check forks the check process while this connection is open
            client.sendall(
                b"POST /v1/check HTTP/1.1\r\nHost: redline\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            received = b""
            while chunk := client.recv(65536):  # ends only when every process has let go of it
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
