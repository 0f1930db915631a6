"""The service killed between the commit of a change and the delivery of its notifications loses nothing.

The real service runs as a child process (uvicorn) on loopback, on SQLite and on PostgreSQL. An officer
opens a change request over HTTP; the commit writes the event and its deliveries. The service's
dispatcher leases them and, at the moment it would send (patched in the child only), the service is
killed with SIGKILL: nothing has reached the receivers. Two replicas are then started on the same
store: once the dead one's lease runs out, the webhook and the applicant's email each arrive exactly
once, with a valid signature and a link that opens the request.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import httpx
from api_fixtures import BATH_SITE, copy_cache
from boundary_fixtures import *  # noqa: F403 - pytest fixtures: backend_url, checker, saltford
from notify_fixtures import FakeNotify, WebhookReceiver
from service_process import Service, create_boundary

COUNCIL = "Bath and North East Somerset"
OPENED = str(uuid.uuid4())
TEMPLATES = {OPENED: "A change to the site of ((reference)) is proposed: ((reason)). Answer at ((link))"}
LEASE_S = 2.0

def service_env(data_dir: Path, store_url: str, hooks: WebhookReceiver, notify: FakeNotify) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDLINE_")}
    council = {
        "webhook_url": f"{hooks.url}/events",
        "webhook_secret": hooks.secret,
        "notify_api_key": notify.api_key,
        "notify_base_url": notify.url,
        "notify_templates": {"change_request.opened": OPENED},
    }
    env.update(
        {
            "REDLINE_DATA_DIR": str(data_dir),
            "REDLINE_DATABASE_URL": store_url,
            "REDLINE_LOAD_SAMPLES": "true",
            "REDLINE_CHECK_PROCESS": "false",
            "REDLINE_PUBLIC_URL": "http://127.0.0.1:8000",
            "REDLINE_NOTIFICATIONS": json.dumps({COUNCIL: council}),
            "REDLINE_DELIVERY_LEASE_S": str(LEASE_S),
            "REDLINE_DELIVERY_POLL_S": "0.2",
            "REDLINE_DELIVERY_BACKOFF_S": "0.2",
        }
    )
    return env


def test_killed_between_commit_and_delivery_the_event_still_arrives_exactly_once(
    backend_url, sample_cache, tmp_path
):
    data_dir = copy_cache(sample_cache, tmp_path / "data")
    with WebhookReceiver() as hooks, FakeNotify(TEMPLATES) as notify:
        env = service_env(data_dir, backend_url, hooks, notify)
        first = Service(env, hang=True)
        try:
            boundary_id = create_boundary(first.url, "PLX-KILL", COUNCIL)
            shifted = {
                "type": "Polygon",
                "coordinates": [[[x + 0.0002, y] for x, y in BATH_SITE["coordinates"][0]]],
            }
            opened = httpx.post(
                f"{first.url}/v1/boundaries/{boundary_id}/change-requests",
                json={"site": shifted, "reason": "the red line must follow the wall"},
                timeout=30,
            )
            assert opened.status_code == 201, opened.text  # committed
            request_id = opened.json()["id"]
            first.wait_for_line("SENDING")  # leased by the dispatcher, about to send
        finally:
            first.kill()
        time.sleep(0.5)
        assert hooks.received == [] and notify.sent == [], "nothing was sent before the kill"

        # Restart: two replicas on the same store.
        replicas = [Service(env, wait=False), Service(env, wait=False)]
        try:
            for replica in replicas:
                replica.wait_ready()
            hooks.wait_for(lambda h: len(h.received) >= 1, timeout=LEASE_S + 30)
            notify.wait_for(lambda n: len(n.sent) >= 1, timeout=LEASE_S + 30)
            time.sleep(3 * LEASE_S)  # time for a duplicate to show up, if one were coming

            assert len(hooks.received) == 1 and hooks.received[0]["valid"]
            (event,) = hooks.events()
            assert event["type"] == "change_request.opened"
            assert event["data"]["change_request"] == request_id
            assert len(notify.sent) == 1
            link = notify.sent[0]["body"]["personalisation"]["link"]
            assert link.startswith(f"http://127.0.0.1:8000/respond/{request_id}#token=")
            token = link.split("#token=", 1)[1]
            seen = httpx.get(
                f"{replicas[1].url}/v1/change-requests/{request_id}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert seen.status_code == 200 and seen.json()["state"] == "open"

            log = httpx.get(f"{replicas[0].url}/v1/deliveries", params={"boundary_id": boundary_id}, timeout=30)
            assert log.status_code == 200, log.text
            rows = log.json()["deliveries"]
            assert sorted(d["channel"] for d in rows) == ["email", "webhook"]
            # The killed service recorded no attempt; the replica that took over sent each once.
            assert all(d["state"] == "delivered" and d["attempts"] == 1 for d in rows), rows
        finally:
            for replica in replicas:
                replica.stop()
