"""Fixtures for the widget's browser tests: the real service on loopback and Debian's headless Chromium.

The service runs in a child process (uvicorn, ``create_app``) on a free 127.0.0.1 port with an empty
temporary ``REDLINE_DATA_DIR``, so it loads the bundled sample layers exactly as ``make run`` does.
Chromium is ``/usr/bin/chromium`` from Debian, driven by Playwright; a missing browser fails the tests
(never a skip): ``make test`` installs it with apt-get.

Every page gets a request guard: any request to a host other than loopback is aborted and fails the test,
because the widget promises that nothing leaves the service's origin unless ``tiles`` is set.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from api_fixtures import stop

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "widget"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVE = (
    "import sys, uvicorn\n"
    "from api.app import create_app\n"
    "uvicorn.run(create_app(), host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')\n"
)


@pytest.fixture(scope="session")
def live_service(tmp_path_factory):
    """Base URL of a real redline service on loopback, ready (layers indexed)."""
    data_dir = tmp_path_factory.mktemp("redline-widget-data")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDLINE_")}
    env.update({"REDLINE_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)})
    log = open(data_dir / "service.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(port)], cwd=data_dir, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the service exited with {proc.returncode}: {(data_dir / 'service.log').read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the service was not ready in 90 s: {(data_dir / 'service.log').read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield base
    finally:
        stop(proc, 10)
        log.close()


_playwright = _chromium = None
_users = 0


@pytest.fixture(scope="module")  # not session: Playwright's loop must end with the module, or asyncio.run fails after it
def browser():
    """Debian's Chromium, headless. Missing: the test fails with what to install (CI and locally)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the widget tests drive Debian's Chromium. Install it with "
            "'apt-get install chromium' (make test does this as root); never 'playwright install'.",
            pytrace=False,
        )
    # Every module that star-imports this fixture gets its own copy of it; Playwright's sync API runs one
    # instance per thread, so the copies share one Chromium, closed when the last of them is torn down.
    global _playwright, _chromium, _users
    if _chromium is None:
        from playwright.sync_api import sync_playwright

        _playwright = sync_playwright().start()
        _chromium = _playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    _users += 1
    try:
        yield _chromium
    finally:
        _users -= 1
        if _users == 0:
            _chromium.close()
            _playwright.stop()
            _playwright = _chromium = None


class GuardedPage:
    """A page plus what the guard saw: requests off loopback, uncaught script errors."""

    def __init__(self, page, base: str):
        self.page = page
        self.base = base
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []

    def shoot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def guarded_page(browser, live_service):
    """A fresh browser context whose every request must stay on loopback."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    guarded = GuardedPage(page, live_service)

    def guard(route):
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOOPBACK:
            guarded.blocked.append(url)
            route.abort("blockedbyclient")
            return
        guarded.requests.append(f"{route.request.method} {parts.path}")
        route.continue_()

    page.route("**/*", guard)
    page.on("pageerror", lambda err: guarded.errors.append(str(err)))
    try:
        yield guarded
    finally:
        context.close()
    assert not guarded.blocked, f"the page sent requests off the service's origin: {guarded.blocked}"
    assert not guarded.errors, f"uncaught script errors in the page: {guarded.errors}"
