"""Fixtures for the API tests: the real app over the bundled samples, in-process or on loopback HTTP.

``make_app(data_dir, **settings)`` builds the app over a copy of the session's sample cache (so a
test may write keys or boundaries without touching the shared one); ``LiveServer`` runs it under
uvicorn on 127.0.0.1 for the tests that need real HTTP (body limits, auth headers).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from api.app import create_app
from api.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

# A real site in central Bath: in the Bath conservation area and World Heritage Site, on listed buildings.
BATH_WKT = "POLYGON((-2.3614 51.3812, -2.3606 51.3812, -2.3606 51.3817, -2.3614 51.3817, -2.3614 51.3812))"
BATH_SITE = {
    "type": "Polygon",
    "coordinates": [
        [[-2.3614, 51.3812], [-2.3606, 51.3812], [-2.3606, 51.3817], [-2.3614, 51.3817], [-2.3614, 51.3812]]
    ],
}


def copy_cache(sample_cache, target: Path) -> Path:
    """A private copy of the session's sample cache (layers, manifest and derived index files)."""
    shutil.copytree(sample_cache.root, target, dirs_exist_ok=True)
    return target


def make_app(data_dir: Path, **settings):
    options = {
        "data_dir": data_dir,
        "load_samples": True,
        "rate_limit_per_s": 1e6,
        "rate_limit_burst": 1_000_000,
        "anonymous_rate_limit_per_s": 1e6,
        "anonymous_rate_limit_burst": 1_000_000,
        "failed_auth_burst": 1_000_000,
    } | settings
    return create_app(Settings(**options), load_in_background=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float, what: str = "the server", exited=lambda: None) -> None:
    """Wait until ``url``/readyz answers 200; raise if ``exited()`` says why the server is gone, or at ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gone = exited()
        if gone:
            raise RuntimeError(f"{what} exited: {gone}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready within {timeout:g} s")


def stop(process: subprocess.Popen, wait_s: float = 15) -> None:
    """SIGTERM ``process`` and wait; SIGKILL it if it has not exited within ``wait_s``."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(wait_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LiveServer:
    """The app under uvicorn on 127.0.0.1, in a thread, for real HTTP."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_ready(self.url, 60)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class ServedProcess:
    """``redline serve`` as its own process on 127.0.0.1, over ``data_dir``, as a deployment runs it.

    ``env`` adds ``REDLINE_*`` settings. Its output goes to ``log``; the whole process group (the
    worker and its check processes) is killed on exit, whatever state it is in.
    """

    def __init__(self, data_dir: Path, log: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._command = [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port), "--log-level", "warning", *args]
        # rate limits out of the way, as in make_app: the tests that use this are not about them
        unlimited = {"REDLINE_RATE_LIMIT_PER_S": "1e6", "REDLINE_RATE_LIMIT_BURST": "1000000", "REDLINE_ANONYMOUS_RATE_LIMIT_PER_S": "1e6", "REDLINE_ANONYMOUS_RATE_LIMIT_BURST": "1000000"}
        self._env = os.environ | {"REDLINE_DATA_DIR": str(data_dir), "REDLINE_LOAD_SAMPLES": "false"} | unlimited | (env or {})
        self._log_path = log
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServedProcess:
        self._log = open(self._log_path, "wb")
        self.process = subprocess.Popen(self._command, cwd=ROOT, env=self._env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        def exited():
            if self.process.poll() is not None:
                return f"status {self.process.returncode}: {self._log_path.read_text()[-2000:]}"

        try:
            wait_ready(self.url, 120, "redline serve", exited)
        except RuntimeError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._log.close()


def assert_problem(response, status: int) -> dict:
    """The answer is an RFC 9457 problem with this status and an actionable detail."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers[
        "content-type"
    ]
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and len(body["detail"]) > 10
    assert "type" in body
    return body
