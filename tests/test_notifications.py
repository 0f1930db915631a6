"""Change-request notifications: written with the state change, delivered after it, never lost, sent once.

Each test runs the real workflow on both stores (SQLite and PostgreSQL) and real HTTP receivers on
loopback: a webhook receiver verifying Standard Webhooks signatures and a fake GOV.UK Notify checking
requests as Notify's API documents them (``notify_fixtures``).
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from boundary_fixtures import *  # noqa: F403 - pytest fixtures: backend_url, checker, saltford
from notify_fixtures import FakeNotify, WebhookReceiver

from api.delivery import Dispatcher, replay, router
from api.settings import LocalAuthorityNotifications, Settings
from boundary import store as store_module
from boundary.store import Store, utcnow
from boundary.workflow import Boundaries, WorkflowSettings

COUNCIL = "Bath and North East Somerset"
OPENED = str(uuid.uuid4())
DECIDED = str(uuid.uuid4())
TEMPLATES = {
    OPENED: "The council proposes a change to the site of ((reference)): ((reason)). "
    "See it and answer here: ((link)). If you do not answer by ((deadline)) it is approved.",
    DECIDED: "The change to the site of ((reference)) is ((state)). ((decision_reason))",
}
ALL_EVENTS = {
    "change_request.opened",
    "change_request.approved",
    "change_request.rejected",
    "change_request.auto_approved",
    "change_request.cancelled",
    "change_request.expired",
}


@pytest.fixture
def receivers():
    with WebhookReceiver() as hooks, FakeNotify(TEMPLATES) as notify:
        yield hooks, notify


def service_settings(hooks, notify, tmp_path, **extra) -> Settings:
    council = LocalAuthorityNotifications(
        webhook_url=f"{hooks.url}/redline-events",
        webhook_secret=hooks.secret,
        notify_api_key=notify.api_key,
        notify_base_url=notify.url,
        notify_templates={
            "change_request.opened": OPENED,
            "change_request.approved": DECIDED,
            "change_request.rejected": DECIDED,
        },
    )
    options = {
        "data_dir": tmp_path,
        "public_url": "https://redline.example.gov.uk",
        "notifications": {COUNCIL: council},
        "delivery_poll_s": 0.1,
        "delivery_backoff_s": 0.1,
        "delivery_lease_s": 5.0,
        "delivery_max_attempts": 4,
    }
    return Settings(**(options | extra))


class Clock:
    def __init__(self):
        self.now = utcnow()

    def __call__(self):
        return self.now


def workflow(url, checker, service: Settings, **kwargs) -> Boundaries:
    return Boundaries(Store(url), checker, router=router(service), **kwargs)


@pytest.fixture
def notified(backend_url, checker, receivers, tmp_path):
    """A workflow whose council's events go to the receivers: (webhook receiver, Notify, settings, workflow)."""
    hooks, notify = receivers
    settings = service_settings(hooks, notify, tmp_path)
    return hooks, notify, settings, workflow(backend_url, checker, settings)


def drain(dispatcher: Dispatcher) -> None:
    while dispatcher.run_once():
        pass


def deliveries(store: Store, **filters) -> list[dict]:
    with store.transaction(write=False) as tx:
        return tx.list_deliveries(**filters)


# --- written with the state change ---------------------------------------------------------------------
def test_an_event_and_its_deliveries_are_written_in_the_transaction_of_the_state_change(saltford, notified):
    hooks, notify, settings, wf = notified
    b = wf.create("PLX-1", COUNCIL, saltford.outside, "planx", applicant_email="applicant@example.com")
    cr = wf.propose(b["id"], saltford.over, "follow the wall", "officer")

    rows = deliveries(wf.store)
    assert {(d["channel"], d["event_type"], d["state"]) for d in rows} == {
        ("webhook", "change_request.opened", "pending"),
        ("email", "change_request.opened", "pending"),
    }
    assert all(d["change_request_id"] == cr["id"] for d in rows)

    # An approval that fails after writing its event leaves neither the approval nor the event.
    original = store_module.Tx.append_audit

    def failing(self, boundary_id, at, actor, event, details):
        original(self, boundary_id, at, actor, event, details)
        if event == "version_added":
            raise RuntimeError("the database went away mid-transaction")

    store_module.Tx.append_audit = failing
    try:
        with pytest.raises(RuntimeError):
            wf.approve(cr["id"], "applicant")
    finally:
        store_module.Tx.append_audit = original
    assert wf.get_change_request(cr["id"])["state"] == "open"
    with wf.store.transaction(write=False) as tx:
        assert [e["type"] for e in tx.list_events(b["id"])] == ["change_request.opened"]
    assert len(deliveries(wf.store)) == 2


def test_a_council_without_notification_settings_gets_none(backend_url, checker, saltford, tmp_path):
    wf = workflow(backend_url, checker, Settings(data_dir=tmp_path))
    b = wf.create("PLX-2", "Elsewhere", saltford.outside, "planx", applicant_email="a@example.com")
    wf.propose(b["id"], saltford.over, "r", "officer")
    assert deliveries(wf.store) == []


# --- delivered after it --------------------------------------------------------------------------------
def test_every_kind_of_event_reaches_the_webhook_signed_and_once(backend_url, checker, saltford, receivers, tmp_path):
    hooks, notify = receivers
    settings = service_settings(hooks, notify, tmp_path)
    clock = Clock()
    wf = workflow(backend_url, checker, settings, clock=clock)
    b = wf.create("PLX-3", COUNCIL, saltford.outside, "planx", applicant_email="applicant@example.com")
    wf.reject(wf.propose(b["id"], saltford.over, "one", "officer")["id"], "not my land", "applicant")
    wf.cancel(wf.propose(b["id"], saltford.over, "two", "officer")["id"], "officer", "sent in error")
    wf.approve(wf.propose(b["id"], saltford.over, "three", "officer")["id"], "applicant")
    wf.propose(b["id"], saltford.outside, "four", "officer")
    clock.now += timedelta(days=10)  # five working days pass: approved automatically
    assert wf.get(b["id"])["version"] == 3
    # Without auto-approval, a request whose link expires is closed as expired.
    no_auto = workflow(
        backend_url, checker, settings, clock=clock, settings=WorkflowSettings(auto_approve_working_days=None)
    )
    cr = no_auto.propose(b["id"], saltford.over, "five", "officer")
    clock.now += timedelta(days=31)
    assert no_auto.get_change_request(cr["id"])["state"] == "expired"

    drain(Dispatcher(Store(backend_url), settings, clock=clock))
    events = hooks.events()
    assert len(hooks.received) == len(events) == 10  # 5 opened, 5 closed: every one signed
    assert {e["type"] for e in events} == ALL_EVENTS
    assert len(set(hooks.ids())) == len(events), "each event arrives once"
    rejected = next(e for e in events if e["type"] == "change_request.rejected")["data"]
    assert rejected["decision_reason"] == "not my land" and rejected["reference"] == "PLX-3"
    assert rejected["local_authority"] == COUNCIL and rejected["boundary"] == b["id"]
    auto = next(e for e in events if e["type"] == "change_request.auto_approved")["data"]
    assert auto["result_version"] == 3 and auto["actor"] == "system"
    # Emails only for the events with a template: 5 opened, 1 approved, 1 rejected.
    assert len(notify.sent) == 7 and not notify.refused
    assert all(d["state"] == "delivered" for d in deliveries(wf.store))


def test_the_applicant_email_goes_through_notify_with_the_link_that_opens_the_request(
    backend_url, saltford, notified
):
    hooks, notify, settings, wf = notified
    b = wf.create("PLX-4", COUNCIL, saltford.outside, "planx", applicant_email="applicant@example.com")
    cr = wf.propose(b["id"], saltford.over, "the red line must follow the garden wall", "officer")
    drain(Dispatcher(Store(backend_url), settings))

    (email,) = notify.sent
    assert email["user_agent"].startswith("NOTIFY-API-PYTHON-CLIENT/")  # the official client sent it
    assert email["body"]["email_address"] == "applicant@example.com"
    assert email["body"]["template_id"] == OPENED
    link = email["body"]["personalisation"]["link"]
    assert link == f"https://redline.example.gov.uk/respond/{cr['id']}#token={cr['token']}"
    assert link in email["text"] and "the red line must follow the garden wall" in email["text"]
    token = link.split("#token=")[1]
    wf.authorize_applicant(cr["id"], token)  # the emailed link opens the request
    # Once sent, the token is no longer kept with the delivery.
    with wf.store.transaction(write=False) as tx:
        assert all(row["token"] is None for row in tx.all("SELECT token FROM deliveries"))


# --- retries, give-up, replay --------------------------------------------------------------------------
def test_a_failing_receiver_is_retried_with_growing_waits_and_every_attempt_is_logged(
    backend_url, saltford, notified
):
    hooks, notify, settings, wf = notified
    b = wf.create("PLX-5", COUNCIL, saltford.outside, "planx")
    hooks.fail_next = 2
    wf.propose(b["id"], saltford.over, "r", "officer")
    dispatcher = Dispatcher(Store(backend_url), settings).start()
    try:
        hooks.wait_for(lambda h: len(h.events()) == 1, timeout=20)
    finally:
        dispatcher.stop()
    (delivery,) = deliveries(wf.store)
    assert delivery["state"] == "delivered" and delivery["attempts"] == 3
    with wf.store.transaction(write=False) as tx:
        log = tx.list_attempts(delivery["id"])
    assert [a["outcome"] for a in log] == ["failed", "failed", "delivered"]
    assert [a["status"] for a in log] == [503, 503, 204]
    gaps = [
        (store_module.parse_iso(later["at"]) - store_module.parse_iso(earlier["at"])).total_seconds()
        for earlier, later in zip(log, log[1:], strict=False)
    ]
    assert gaps[0] >= 0.08 and gaps[1] >= 0.16, gaps  # 0.1 s then 0.2 s, give or take the jitter


def test_a_receiver_down_for_good_is_given_up_and_can_be_replayed(backend_url, checker, saltford, receivers, tmp_path):
    hooks, notify = receivers
    settings = service_settings(hooks, notify, tmp_path, delivery_backoff_s=0.01, delivery_max_attempts=2)
    wf = workflow(backend_url, checker, settings)
    b = wf.create("PLX-6", COUNCIL, saltford.outside, "planx")
    wf.propose(b["id"], saltford.over, "r", "officer")
    hooks.fail_next = 2
    dispatcher = Dispatcher(Store(backend_url), settings)
    deadline = utcnow() + timedelta(seconds=10)
    while deliveries(wf.store, state="failed") == [] and utcnow() < deadline:
        dispatcher.run_once()
    (failed,) = deliveries(wf.store, state="failed")
    assert failed["attempts"] == 2 and "503" in failed["last_error"]
    assert hooks.events() == []

    again = replay(wf.store, failed["id"])
    drain(dispatcher)
    (event,) = hooks.events()
    assert event["id"] == failed["event_id"]  # the same webhook-id: a receiver can tell it is a replay
    with wf.store.transaction(write=False) as tx:
        assert tx.get_delivery(again)["state"] == "delivered"
        assert tx.get_delivery(again)["replay_of"] == failed["id"]


def test_notify_refusing_a_message_is_not_retried(backend_url, saltford, notified):
    hooks, notify, settings, wf = notified
    notify.templates[OPENED] = "((link)) ((a_placeholder_redline_does_not_send))"
    b = wf.create("PLX-7", COUNCIL, saltford.outside, "planx", applicant_email="applicant@example.com")
    wf.propose(b["id"], saltford.over, "r", "officer")
    drain(Dispatcher(Store(backend_url), settings))
    (email,) = deliveries(wf.store, state="failed")
    assert email["channel"] == "email" and email["attempts"] == 1
    assert "Missing personalisation: a_placeholder_redline_does_not_send" in email["last_error"]
    assert "HTTP 400" in email["last_error"]


# --- several replicas -----------------------------------------------------------------------------------
def test_several_dispatchers_on_one_store_deliver_each_event_once(backend_url, saltford, notified):
    hooks, notify, settings, wf = notified
    b = wf.create("PLX-8", COUNCIL, saltford.outside, "planx", applicant_email="applicant@example.com")
    for i in range(6):
        wf.cancel(wf.propose(b["id"], saltford.over, f"round {i}", "officer")["id"], "officer")
    dispatchers = [Dispatcher(Store(backend_url), settings, worker=f"replica-{n}") for n in range(3)]
    threads = [threading.Thread(target=drain, args=(d,)) for d in dispatchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(hooks.events()) == 12 and len(set(hooks.ids())) == 12
    assert len(notify.sent) == 6  # the opened emails
    assert all(d["state"] == "delivered" and d["attempts"] == 1 for d in deliveries(wf.store))


# --- what an operator sees: the log over HTTP and on the command line ------------------------------------
def test_the_delivery_log_over_http_needs_an_admin_key_and_replays(saltford, receivers, sample_cache, tmp_path):
    import httpx
    from api_fixtures import LiveServer, assert_problem, copy_cache, make_app

    from api.keys import KeyStore

    hooks, notify = receivers
    data_dir = copy_cache(sample_cache, tmp_path / "data")
    keys = KeyStore(data_dir)
    _, admin = keys.create("operator", ["admin"])
    _, officer = keys.create("officer", ["officer", "boundary:write"])
    settings = service_settings(hooks, notify, data_dir)
    app = make_app(data_dir, **{k: getattr(settings, k) for k in ("public_url", "notifications", "delivery_poll_s")})
    with LiveServer(app) as server:
        as_officer = {"Authorization": f"Bearer {officer}"}
        created = httpx.post(
            f"{server.url}/v1/boundaries",
            json={"reference": "PLX-9", "local_authority": COUNCIL, "site": saltford.outside},
            headers=as_officer,
        )
        assert created.status_code == 201, created.text
        bad = httpx.post(
            f"{server.url}/v1/boundaries",
            json={"reference": "PLX-9", "local_authority": COUNCIL, "site": saltford.outside, "applicant_email": "nobody"},
            headers=as_officer,
        )
        assert "applicant_email" in assert_problem(bad, 422)["detail"]
        opened = httpx.post(
            f"{server.url}/v1/boundaries/{created.json()['id']}/change-requests",
            json={"site": saltford.over, "reason": "r"},
            headers=as_officer,
        )
        assert opened.status_code == 201
        hooks.wait_for(lambda h: len(h.events()) == 1)

        assert_problem(httpx.get(f"{server.url}/v1/deliveries"), 401)
        assert_problem(httpx.get(f"{server.url}/v1/deliveries", headers=as_officer), 403)
        as_admin = {"Authorization": f"Bearer {admin}"}
        (row,) = httpx.get(f"{server.url}/v1/deliveries", headers=as_admin).json()["deliveries"]
        assert (row["channel"], row["state"], row["attempts"]) == ("webhook", "delivered", 1)
        detail = httpx.get(f"{server.url}/v1/deliveries/{row['id']}", headers=as_admin).json()
        assert [a["outcome"] for a in detail["attempt_log"]] == ["delivered"]
        assert_problem(httpx.get(f"{server.url}/v1/deliveries/999999", headers=as_admin), 404)
        assert_problem(httpx.get(f"{server.url}/v1/deliveries/{2**70}", headers=as_admin), 422)

        again = httpx.post(f"{server.url}/v1/deliveries/{row['id']}/replay", headers=as_admin)
        assert again.status_code == 202 and again.json()["replay_of"] == row["id"]
        hooks.wait_for(lambda h: len(h.events()) == 2)
        assert hooks.ids()[0] == hooks.ids()[1]  # the same webhook-id: receivers see a duplicate, by design


def test_the_cli_lists_shows_and_replays_deliveries(
    backend_url, saltford, notified, tmp_path, monkeypatch, capsys
):
    from api import cli
    from api.settings import get_settings

    hooks, notify, settings, wf = notified
    b = wf.create("PLX-10", COUNCIL, saltford.outside, "planx", applicant_email="applicant@example.com")
    wf.propose(b["id"], saltford.over, "r", "officer")
    hooks.fail_next = 1
    Dispatcher(Store(backend_url), settings).run_once()

    monkeypatch.setenv("REDLINE_DATABASE_URL", backend_url)
    monkeypatch.setenv("REDLINE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert cli.main(["deliveries", "list"]) == 0
        listing = capsys.readouterr().out
        assert "pending" in listing and "delivered" in listing and "webhook" in listing and "email" in listing
        assert "HTTP 503" in listing  # the failed webhook says why
        webhook = next(d for d in deliveries(wf.store) if d["channel"] == "webhook")
        assert cli.main(["deliveries", "show", str(webhook["id"])]) == 0
        assert '"outcome": "failed"' in capsys.readouterr().out
        assert cli.main(["deliveries", "replay", str(webhook["id"])]) == 0
        assert "queued again" in capsys.readouterr().out
        assert cli.main(["deliveries", "replay", "987654"]) == 2
    finally:
        get_settings.cache_clear()
    assert len(deliveries(wf.store, state="pending")) == 2  # the retry and the replay


def test_an_expired_link_is_refused_as_expired_not_as_a_wrong_token(backend_url, checker, saltford, tmp_path):
    from boundary.errors import Unauthorized

    clock = Clock()
    wf = Boundaries(Store(backend_url), checker, clock=clock)
    b = wf.create("PLX-11", COUNCIL, saltford.outside, "planx")
    cr = wf.propose(b["id"], saltford.over, "r", "officer")
    clock.now += timedelta(days=31)
    with pytest.raises(Unauthorized) as refused:
        wf.authorize_applicant(cr["id"], cr["token"])
    # The applicant page tells this apart from a wrong link by the problem type, /problems/link-expired.
    assert refused.value.code == "link-expired"



def test_a_dispatcher_stopped_before_it_started_never_starts_and_stopping_it_does_not_fail(backend_url, notified):
    # a replica shut down while its store was still being opened stops the dispatcher first
    _, _, settings, _ = notified
    dispatcher = Dispatcher(Store(backend_url), settings)
    dispatcher.stop(timeout=1)
    assert dispatcher.start()._thread is None
    running = Dispatcher(Store(backend_url), settings).start()
    assert running._thread.is_alive()
    running.stop(timeout=5)
    assert not running._thread.is_alive()
