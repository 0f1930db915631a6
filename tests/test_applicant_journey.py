"""The whole change-request journey in a real browser, officer to applicant and back, on loopback.

The real service runs as a child process with a council's notifications configured: a webhook receiver
that verifies Standard Webhooks signatures and a fake GOV.UK Notify (``notify_fixtures``). The officer
amends the boundary on ``/officer/{id}`` and sends the request; the fake Notify receives the applicant's
email; the applicant opens the link from it, sees both boundaries and the difference, and rejects with a
reason. A second request is approved the same way. The webhook receiver has every event, each signed;
the boundary is at version 2 and the audit trail lists every step. Screenshots go to
``test-artifacts/journey/``. Every page runs under the loopback-only request guard.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from api_fixtures import BATH_SITE, copy_cache
from browser_fixtures import *  # noqa: F403 - pytest fixtures: browser
from browser_fixtures import LOOPBACK, ROOT
from notify_fixtures import FakeNotify, WebhookReceiver
from service_process import Service, create_boundary
from tile_archive import ATTRIBUTION, write_pmtiles

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts" / "journey"
COUNCIL = "Bath and North East Somerset"
OPENED, DECIDED = str(uuid.uuid4()), str(uuid.uuid4())
TEMPLATES = {
    OPENED: "Dear applicant,\n\nThe planning officer proposes a change to the site boundary of ((reference)): "
    "((reason))\n\nSee the change and answer here: ((link))\n\nIf you do not answer by ((deadline)) it is "
    "approved automatically.",
    DECIDED: "The change to the site boundary of ((reference)) is ((state)). ((decision_reason))",
}
WIDGET = "document.querySelector('redline-map')"


@pytest.fixture
def journey_service(sample_cache, tmp_path):
    data_dir = copy_cache(sample_cache, tmp_path / "data")
    tiles = tmp_path / "bath.pmtiles"
    write_pmtiles(tiles, (-2.3680, 51.3780, -2.3540, 51.3850), range(15, 19))
    with WebhookReceiver() as hooks, FakeNotify(TEMPLATES) as notify:
        from api_fixtures import free_port

        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REDLINE_")}
        env.update(
            {
                "REDLINE_DATA_DIR": str(data_dir),
                "REDLINE_CHECK_PROCESS": "false",
                "REDLINE_PUBLIC_URL": f"http://127.0.0.1:{port}",
                "REDLINE_DELIVERY_POLL_S": "0.2",
                "REDLINE_BASEMAP_ARCHIVE": str(tiles),
                "REDLINE_NOTIFICATIONS": json.dumps(
                    {
                        COUNCIL: {
                            "webhook_url": f"{hooks.url}/bops/events",
                            "webhook_secret": hooks.secret,
                            "notify_api_key": notify.api_key,
                            "notify_base_url": notify.url,
                            "notify_templates": {
                                "change_request.opened": OPENED,
                                "change_request.rejected": DECIDED,
                                "change_request.approved": DECIDED,
                            },
                        }
                    }
                ),
            }
        )
        service = Service(env, port=port)
        try:
            yield service.url, hooks, notify, data_dir
        finally:
            service.stop()


class Guard:
    """Every request of a browser context must stay on loopback; script errors fail the test."""

    def __init__(self, context):
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        context.route("**/*", self._route)

    def _route(self, route):
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOOPBACK:
            self.blocked.append(url)
            return route.abort("blockedbyclient")
        self.requests.append(url)
        return route.continue_()

    def watch(self, page):
        page.on("pageerror", lambda err: self.errors.append(str(err)))
        return page


def shoot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def shifted(site: dict, dx: float, dy: float = 0.0) -> str:
    """The site's corners moved, one 'lon, lat' a line, as an officer types them."""
    return "\n".join(f"{x + dx:.7f}, {y + dy:.7f}" for x, y in site["coordinates"][0][:-1])


def officer_sends(page, base: str, boundary_id: str, corners: str, reason: str, shot: str) -> str:
    page.goto(f"{base}/officer/{boundary_id}")
    page.wait_for_function(f"{WIDGET} && {WIDGET}.dataset.state === 'checked'", timeout=30_000)
    page.get_by_label("Boundary coordinates").fill(corners)
    page.get_by_role("button", name="Use these coordinates").click()
    page.wait_for_function(f"{WIDGET}.dataset.diff === 'changed'", timeout=30_000)
    page.wait_for_function(f"{WIDGET}.dataset.state === 'checked'", timeout=30_000)
    page.get_by_label("Reason for the change").fill(reason)
    page.get_by_role("button", name="Send change request").click()
    page.wait_for_function(f"{WIDGET}.dataset.changeRequest !== undefined", timeout=30_000)
    shoot(page, shot)
    return page.evaluate(f"{WIDGET}.dataset.changeRequest")


def emailed_link(notify: FakeNotify, count: int) -> str:
    """The link in the ``count``-th 'change request opened' email."""

    def opened(n):
        return [m for m in n.sent if m["body"]["template_id"] == OPENED]

    notify.wait_for(lambda n: len(opened(n)) >= count, timeout=30)
    email = opened(notify)[count - 1]
    assert email["body"]["email_address"] == "applicant@example.com"
    link = email["body"]["personalisation"]["link"]
    assert link in email["text"]
    return link


def open_link(page, link: str) -> None:
    page.goto("about:blank")  # a link differing only in its fragment would not load the page again
    page.goto(link)
    page.wait_for_function("document.getElementById('page').dataset.state !== 'loading'", timeout=30_000)


def test_officer_amends_applicant_rejects_then_approves_and_everything_is_notified_and_audited(
    browser, journey_service
):
    base, hooks, notify, data_dir = journey_service
    boundary_id = create_boundary(base, "PLX-JOURNEY", COUNCIL)

    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    guard = Guard(context)
    try:
        officer = guard.watch(context.new_page())
        # 1. The officer moves the boundary 14 m east and sends the request.
        first_id = officer_sends(
            officer, base, boundary_id, shifted(BATH_SITE, 0.0002), "The red line must follow the garden wall",
            "01-officer-sends-first-request",
        )
        link = emailed_link(notify, 1)
        parts = urlsplit(link)
        assert parts.path == f"/respond/{first_id}" and parts.fragment.startswith("token=")

        # 2. The applicant opens the emailed link in their own browser.
        applicant_context = browser.new_context(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
        applicant_guard = Guard(applicant_context)
        applicant = applicant_guard.watch(applicant_context.new_page())
        open_link(applicant, link)
        assert applicant.evaluate("document.getElementById('page').dataset.state") == "open"
        assert "#token" not in applicant.url, "the token leaves the address bar at once"
        assert applicant.locator("path.rl-current").count() == 1
        assert applicant.locator("path.rl-proposed").count() == 1
        assert applicant.locator("path.rl-added").count() == 1 and applicant.locator("path.rl-removed").count() == 1
        stored = httpx.get(
            f"{base}/v1/change-requests/{first_id}",
            headers={"Authorization": f"Bearer {parts.fragment[len('token='):]}"},
            timeout=30,
        ).json()
        facts = applicant.locator("#facts").inner_text()
        assert f"{round(stored['area_added_m2']):,} m²" in facts
        assert f"{round(stored['area_removed_m2']):,} m²" in facts
        assert "The red line must follow the garden wall" in applicant.locator("#reason").inner_text()
        assert "Please answer by" in applicant.locator("#deadline").inner_text()
        assert applicant.locator("#gained li").count() >= 1 and applicant.locator("#lost li").count() >= 1
        summary = applicant.locator("#map-summary").inner_text()  # the map in words, read with the map
        assert "current boundary" in summary and "proposed boundary" in summary and "added" in summary
        assert "map-summary" in applicant.locator("#map").get_attribute("aria-describedby")
        # The background map is there, from the service itself, with its attribution.
        applicant.wait_for_function("document.querySelectorAll('#map img.leaflet-tile-loaded').length >= 2", timeout=30_000)
        assert ATTRIBUTION in applicant.locator("#map .leaflet-control-attribution").inner_text()
        assert any("/basemap/" in url for url in applicant_guard.requests)
        # No request the applicant's page made carried the token in its address.
        assert not any("token" in url for url in applicant_guard.requests)
        shoot(applicant, "02-applicant-sees-the-change")

        # 3. ...and rejects it with a reason, by keyboard.
        applicant.get_by_label("Why do you reject it?").fill("The strip by the gate belongs to my neighbour")
        applicant.get_by_role("button", name="Reject the change").focus()
        applicant.keyboard.press("Enter")
        applicant.wait_for_function("document.getElementById('page').dataset.state === 'done'", timeout=30_000)
        assert "You rejected this change" in applicant.locator("#status").inner_text()
        assert applicant.locator("#deadline").inner_text() == "", "an answered request has no deadline"
        assert applicant.evaluate("document.activeElement.id") == "status-heading", "focus moves to the outcome"
        shoot(applicant, "03-applicant-rejected")
        # The link, used, says so (the token is kept for the session, so a reload works).
        applicant.reload()
        applicant.wait_for_function("document.getElementById('page').dataset.state === 'done'", timeout=30_000)
        assert "The strip by the gate belongs to my neighbour" in applicant.locator("#status").inner_text()

        # 4. A second request, approved.
        second_id = officer_sends(
            officer, base, boundary_id, shifted(BATH_SITE, 0.0001, 0.00005), "Include the side passage",
            "04-officer-sends-second-request",
        )
        second_link = emailed_link(notify, 2)
        open_link(applicant, second_link)
        assert applicant.evaluate("document.getElementById('page').dataset.state") == "open"
        shoot(applicant, "05-applicant-sees-the-second-change")
        applicant.get_by_role("button", name="Approve the new boundary").click()
        applicant.wait_for_function("document.getElementById('page').dataset.state === 'done'", timeout=30_000)
        assert "You approved this change" in applicant.locator("#status").inner_text()
        assert "version 2" in applicant.locator("#status").inner_text()
        shoot(applicant, "06-applicant-approved")

        # 5. A request the officer withdraws: its link says so.
        third = httpx.post(
            f"{base}/v1/boundaries/{boundary_id}/change-requests",
            json={"site": BATH_SITE, "reason": "Back to the original line"},
            timeout=30,
        ).json()
        assert httpx.post(f"{base}/v1/change-requests/{third['id']}/cancel", timeout=30).status_code == 200
        open_link(applicant, f"{base}/respond/{third['id']}#token={third['token']}")
        assert applicant.evaluate("document.getElementById('page').dataset.state") == "cancelled"
        assert "withdrew" in applicant.locator("#status").inner_text()
        shoot(applicant, "07-applicant-link-to-a-withdrawn-request")
        # Without the token from the email, the page opens nothing and says where to find it.
        stranger = guard.watch(context.new_page())
        open_link(stranger, f"{base}/respond/{third['id']}")
        assert stranger.evaluate("document.getElementById('page').dataset.state") == "denied"
        assert "link in your email" in stranger.locator("#status").inner_text()
        applicant_context.close()
        assert not applicant_guard.blocked and not applicant_guard.errors, (applicant_guard.blocked, applicant_guard.errors)
    finally:
        context.close()
    assert not guard.blocked and not guard.errors, (guard.blocked, guard.errors)

    # 6. The back office heard every step, each message signed.
    hooks.wait_for(lambda h: len(h.received) >= 6, timeout=30)
    assert all(m["valid"] for m in hooks.received)
    assert [(m["type"], m["data"]["change_request"]) for m in hooks.received] == [
        ("change_request.opened", first_id),
        ("change_request.rejected", first_id),
        ("change_request.opened", second_id),
        ("change_request.approved", second_id),
        ("change_request.opened", third["id"]),
        ("change_request.cancelled", third["id"]),
    ]
    assert hooks.received[1]["data"]["decision_reason"] == "The strip by the gate belongs to my neighbour"
    # Emails: two requests opened, one rejected, one approved, the third opened (cancelled has no template).
    notify.wait_for(lambda n: len(n.sent) >= 5, timeout=30)
    assert not notify.refused

    # 7. Version 2, and the audit trail lists every step.
    boundary = httpx.get(f"{base}/v1/boundaries/{boundary_id}", timeout=30).json()
    assert boundary["version"] == 2 and boundary["change_request_id"] == second_id
    trail = httpx.get(f"{base}/v1/boundaries/{boundary_id}/audit", timeout=30).json()["events"]
    steps = [(e["event"], e["details"].get("change_request")) for e in trail]
    for step in [
        ("created", None),
        ("change_request_opened", first_id),
        ("change_request_sent", first_id),
        ("change_request_rejected", first_id),
        ("change_request_opened", second_id),
        ("change_request_approved", second_id),
        ("version_added", second_id),
        ("recheck_done", None),
        ("change_request_cancelled", third["id"]),
    ]:
        assert step in steps, (step, steps)
    rejected = next(e for e in trail if e["event"] == "change_request_rejected")
    assert rejected["actor"] == "applicant"
    assert rejected["details"]["reason"] == "The strip by the gate belongs to my neighbour"
    deliveries = httpx.get(f"{base}/v1/deliveries", params={"boundary_id": boundary_id}, timeout=30).json()
    assert len(deliveries["deliveries"]) == 11 and all(d["state"] == "delivered" for d in deliveries["deliveries"])

    # 8. A link past its expiry says so (not "wrong link"): the store is set back 31 days for this one.
    fourth = httpx.post(
        f"{base}/v1/boundaries/{boundary_id}/change-requests",
        json={"site": BATH_SITE, "reason": "One more try"},
        timeout=30,
    ).json()
    db = sqlite3.connect(data_dir / "boundaries.sqlite3", timeout=30)
    with db:
        db.execute(
            "UPDATE change_requests SET token_expires_at = ? WHERE id = ?",
            ("2026-01-01T00:00:00.000000Z", fourth["id"]),
        )
    db.close()
    context = browser.new_context(viewport={"width": 1280, "height": 700}, device_scale_factor=1)
    guard = Guard(context)
    try:
        late = guard.watch(context.new_page())
        open_link(late, f"{base}/respond/{fourth['id']}#token={fourth['token']}")
        assert late.evaluate("document.getElementById('page').dataset.state") == "expired"
        assert "This link has expired" in late.locator("#status").inner_text()
        shoot(late, "08-applicant-link-expired")
    finally:
        context.close()
    assert not guard.blocked and not guard.errors, (guard.blocked, guard.errors)
