"""Fixtures for the API tests: the real app over the bundled samples, in-process or on loopback HTTP.

``make_app(data_dir, **settings)`` builds the app over a copy of the session's sample cache (so a
test may write keys or boundaries without touching the shared one); ``LiveServer`` runs it under
uvicorn on 127.0.0.1 for the tests that need real HTTP (body limits, auth headers).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from api.app import create_app
from api.settings import Settings

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
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not become ready within 60 s")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


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
