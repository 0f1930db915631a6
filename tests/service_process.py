"""The real service as a child process (uvicorn, ``create_app``) on loopback, configured by environment.

Used where a test must kill the service (SIGKILL) or run several replicas on one store. In the child,
``TEST_HANG_BEFORE_SEND=1`` replaces the notification dispatcher's ``send`` with a pause that prints
``SENDING``: the moment between the commit of an event and its delivery.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
from api_fixtures import BATH_SITE, free_port, stop

ROOT = Path(__file__).resolve().parents[1]

SERVICE = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {root!r})
    import uvicorn
    from api import delivery
    from api.app import create_app

    if os.environ.get("TEST_HANG_BEFORE_SEND"):
        def send(self, row):
            print("SENDING", row["id"], row["channel"], flush=True)
            time.sleep(600)  # killed here: committed, leased, not yet sent
        delivery.Dispatcher.send = send
    print("STARTING", flush=True)
    uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


class Service:
    """``wait=False`` returns once the process is spawned: start several, then ``wait_ready()`` each, and
    they start side by side (each start imports the service and indexes the samples: seconds)."""

    def __init__(self, env: dict, hang: bool = False, port: int | None = None, wait: bool = True):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(env)
        if hang:
            env["TEST_HANG_BEFORE_SEND"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVICE.format(root=str(ROOT)), str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=env["REDLINE_DATA_DIR"],
        )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 180  # a loaded CI machine indexes the samples slowly
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the service exited: {self.proc.stderr.read()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the service was not ready within 180 s"
            time.sleep(0.2)

    def wait_for_line(self, word: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith(word):
                return line
            if not line and self.proc.poll() is not None:
                raise AssertionError(f"the service exited before {word}: {self.proc.stderr.read()[-3000:]}")
        raise AssertionError(f"the service did not print {word} within {timeout} s")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.close()

    def stop(self) -> None:
        stop(self.proc)
        self.close()

    def close(self) -> None:
        self.proc.stdout.close()
        self.proc.stderr.close()


def create_boundary(base_url: str, reference: str, local_authority: str) -> str:
    """Create a boundary over ``BATH_SITE`` whose applicant is emailed, over HTTP; returns its id."""
    created = httpx.post(
        f"{base_url}/v1/boundaries",
        json={
            "reference": reference,
            "local_authority": local_authority,
            "site": BATH_SITE,
            "applicant_email": "applicant@example.com",
        },
        timeout=30,
    )
    assert created.status_code == 201, created.text
    return created.json()["id"]
