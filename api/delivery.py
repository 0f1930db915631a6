"""Sending the notification outbox: signed webhooks and GOV.UK Notify emails, after the commit.

The workflow writes each change-request event and its deliveries in the transaction of the state change
(:mod:`boundary.notifications`). A :class:`Dispatcher` in every replica leases due deliveries (a lease
row in the store, ``SKIP LOCKED`` on PostgreSQL), sends them, and records every attempt; a failure is
retried with exponential backoff and jitter until ``delivery_max_attempts``. A process killed after the
commit leaves its deliveries pending (or leased until the lease ends): the next dispatcher, in this
replica after a restart or in another, sends them. A delivery is sent by one dispatcher at a time; a
process killed after the receiver accepted but before the store recorded it would send it again, with
the same ``webhook-id``, which is what Standard Webhooks receivers de-duplicate on.

Webhooks follow the Standard Webhooks specification (``standardwebhooks``): the body is
``{"type", "timestamp", "data"}`` and the ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``
headers sign it with the council's ``whsec_`` secret. Emails go through the official GOV.UK Notify
client with the council's API key and the template configured for the event; the personalisation is
documented in :func:`email_personalisation`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from datetime import timedelta

import httpx

from boundary.notifications import DELIVERED, EMAIL, FAILED, PENDING, WEBHOOK, Channels
from boundary.store import Store, iso, utcnow

from .settings import LocalAuthorityNotifications, Settings

log = logging.getLogger("redline.delivery")
MAX_BACKOFF_S = 3600.0
SEND_TIMEOUT_S = 10.0


class PermanentFailure(Exception):
    """The receiver refused the message for good (e.g. Notify's 400): retrying cannot help."""


def notifications_for(settings: Settings, local_authority: str) -> LocalAuthorityNotifications | None:
    """A council's notification settings: its own entry, else the ``"*"`` default, else none."""
    table = settings.notifications
    return table.get(local_authority) or table.get("*")


def router(settings: Settings):
    """The workflow's router: which channels each council's events go to (from the settings)."""

    def route(local_authority: str) -> Channels:
        config = notifications_for(settings, local_authority)
        if config is None:
            return Channels()
        email_events = frozenset(config.notify_templates) if config.notify_api_key else frozenset()
        return Channels(webhook_url=config.webhook_url, email_events=email_events)

    return route


def applicant_link(settings: Settings, request_id: str, token: str | None) -> str:
    """The applicant page for a request; the token rides in the fragment, which no server or Referer sees."""
    base = (settings.public_url or "").rstrip("/")
    link = f"{base}/respond/{request_id}"
    return f"{link}#token={token}" if token else link


def webhook_body(delivery: dict) -> bytes:
    return json.dumps(
        {"type": delivery["event_type"], "timestamp": delivery["event_at"], "data": delivery["data"]},
        separators=(",", ":"),
    ).encode()


def email_personalisation(settings: Settings, delivery: dict) -> dict:
    """The placeholders every redline Notify template may use.

    ``link`` (the applicant page; with the token for ``change_request.opened``), ``reference``,
    ``local_authority``, ``reason`` (the officer's), ``state``, ``decision_reason``, ``deadline`` (when
    the request is approved automatically, or blank), ``link_expires``, ``area_added_m2``,
    ``area_removed_m2``. Every key is always sent, blank when it does not apply, because Notify refuses
    a message whose template names a placeholder the request lacks.
    """
    data = delivery["data"]

    def text(value) -> str:
        return "" if value is None else str(value)

    return {
        "link": applicant_link(settings, delivery["change_request_id"], delivery.get("token")),
        "reference": text(data.get("reference")),
        "local_authority": text(data.get("local_authority")),
        "reason": text(data.get("reason")),
        "state": text(data.get("state")).replace("_", " "),
        "decision_reason": text(data.get("decision_reason")),
        "deadline": text(data.get("auto_approval_due_at")),
        "link_expires": text(data.get("token_expires_at")),
        "area_added_m2": text(data.get("area_added_m2")),
        "area_removed_m2": text(data.get("area_removed_m2")),
    }


class Dispatcher:
    """Sends due deliveries from the store; one per process, any number of replicas.

    Parameters
    ----------
    store : Store
    settings : Settings
        Channel secrets and templates (read at send time, so a rotated key applies to pending ones),
        ``delivery_*`` timings.
    worker : str, optional
        This dispatcher's name in the lease and the delivery log.
    clock : callable, optional
        The current aware ``datetime`` (the workflow's clock, which stamps when a delivery is due).
    """

    def __init__(self, store: Store, settings: Settings, worker: str | None = None, clock=utcnow):
        self.clock = clock
        self.store = store
        self.settings = settings
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # start and stop may run at once on two threads: a replica shut down while its store was
        # still being opened stops the dispatcher before (or while) the opening thread starts it
        self._lifecycle = threading.Lock()
        self._http = httpx.Client(timeout=SEND_TIMEOUT_S, follow_redirects=False)

    # -- the loop ----------------------------------------------------------------------------------------
    def start(self) -> Dispatcher:
        """Run the loop on its own thread; does nothing once :meth:`stop` has been called."""
        with self._lifecycle:
            if not self._stop.is_set() and self._thread is None:
                thread = threading.Thread(target=self._loop, name="redline-delivery", daemon=True)
                thread.start()
                self._thread = thread
        return self

    def wake(self) -> None:
        """Look for due deliveries now (called after a commit that wrote events)."""
        self._wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        with self._lifecycle:
            self._stop.set()
            self._wake.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._http.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                while self.run_once() and not self._stop.is_set():
                    pass
            except Exception:  # a store outage must not end the loop: logged, retried next round
                log.exception("delivering notifications failed; retrying in %s s", self.settings.delivery_poll_s)
            self._wake.wait(self.settings.delivery_poll_s)
            self._wake.clear()

    def run_once(self, limit: int = 20) -> int:
        """Lease and send up to ``limit`` due deliveries; returns how many were attempted."""
        now = self.clock()
        lease = now + timedelta(seconds=self.settings.delivery_lease_s)
        # A read first: an idle replica must not take SQLite's write lock every poll.
        with self.store.transaction(write=False) as tx:
            if not tx.any_due_delivery(iso(now)):
                return 0
        with self.store.transaction() as tx:
            claimed = tx.claim_deliveries(iso(now), iso(lease), self.worker, limit)
        for delivery in claimed:
            self._attempt(delivery)
        return len(claimed)

    # -- one attempt ------------------------------------------------------------------------------------
    def _attempt(self, delivery: dict) -> None:
        started = time.monotonic()
        status, error, permanent = None, None, False
        try:
            status = self.send(delivery)
        except PermanentFailure as exc:
            permanent, error = True, str(exc)
            status = getattr(exc, "status", None)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            status = getattr(exc, "status", None)
        at = self.clock()
        attempts = delivery["attempts"] + 1
        attempt = {
            "at": iso(at),
            "outcome": "delivered" if error is None else ("refused" if permanent else "failed"),
            "status": status,
            "error": error,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
        }
        if error is None:
            fields = {"state": DELIVERED, "delivered_at": iso(at), "last_error": None, "token": None}
        elif permanent or attempts >= self.settings.delivery_max_attempts:
            fields = {"state": FAILED, "last_error": error, "token": None}
            log.error("giving up delivery %s after %d attempts: %s", delivery["id"], attempts, error)
        else:
            wait = min(MAX_BACKOFF_S, self.settings.delivery_backoff_s * 2 ** (attempts - 1))
            wait *= random.uniform(0.8, 1.2)  # jitter: replicas and receivers do not retry in lockstep
            fields = {"state": PENDING, "last_error": error, "next_attempt_at": iso(at + timedelta(seconds=wait))}
            log.warning("delivery %s attempt %d failed (%s); retrying in %.1f s", delivery["id"], attempts, error, wait)
        with self.store.transaction() as tx:
            tx.finish_attempt(delivery["id"], self.worker, attempt, **fields)

    def send(self, delivery: dict) -> int | None:
        """Send one delivery; returns the receiver's HTTP status, raises on failure."""
        config = notifications_for(self.settings, delivery["local_authority"])
        if config is None:
            raise PermanentFailure(f"no notification settings for {delivery['local_authority']!r} any more")
        if delivery["channel"] == WEBHOOK:
            return self._send_webhook(delivery, config)
        if delivery["channel"] == EMAIL:
            return self._send_email(delivery, config)
        raise PermanentFailure(f"unknown channel {delivery['channel']!r}")

    def _send_webhook(self, delivery: dict, config: LocalAuthorityNotifications) -> int:
        from standardwebhooks.webhooks import Webhook

        if not config.webhook_secret:
            raise PermanentFailure("webhook_secret is not set: webhooks are only sent signed")
        body = webhook_body(delivery)
        sent_at = utcnow()
        try:
            signer = Webhook(config.webhook_secret)
        except (ValueError, TypeError) as exc:  # not base64: fixing the setting, not retrying, helps
            raise PermanentFailure(f"webhook_secret is not a Standard Webhooks secret (whsec_ + base64): {exc}") from None
        signature = signer.sign(delivery["event_id"], sent_at, body.decode())
        response = self._http.post(
            delivery["target"],
            content=body,
            headers={
                "content-type": "application/json",
                "user-agent": "redline-webhooks",
                "webhook-id": delivery["event_id"],
                "webhook-timestamp": str(int(sent_at.timestamp())),
                "webhook-signature": signature,
            },
        )
        if not 200 <= response.status_code < 300:
            exc = RuntimeError(f"the receiver answered HTTP {response.status_code}: {response.text[:200]}")
            exc.status = response.status_code
            raise exc
        return response.status_code

    def _send_email(self, delivery: dict, config: LocalAuthorityNotifications) -> int:
        from notifications_python_client.errors import HTTPError
        from notifications_python_client.notifications import NotificationsAPIClient

        template = config.notify_templates.get(delivery["event_type"])
        if not (config.notify_api_key and template):
            raise PermanentFailure(f"no Notify API key or template for {delivery['event_type']}")
        client = NotificationsAPIClient(config.notify_api_key, base_url=config.notify_base_url, timeout=SEND_TIMEOUT_S)
        try:
            client.send_email_notification(
                email_address=delivery["target"],
                template_id=template,
                personalisation=email_personalisation(self.settings, delivery),
                reference=f"{delivery['event_id']}:{delivery['id']}",
                email_reply_to_id=config.notify_reply_to_id,
            )
        except HTTPError as exc:
            # Notify's 4xx (bad template, bad address, bad key) will not change on retry; 429 and 5xx may.
            status = exc.status_code
            error = PermanentFailure if 400 <= status < 500 and status != 429 else RuntimeError
            failure = error(f"Notify answered HTTP {status}: {exc.message}")
            failure.status = status
            raise failure from None
        return 201


def replay(store: Store, delivery_id: int) -> int:
    """Queue a delivery again (a new delivery row, same event and message id); returns the new id."""
    now = iso(utcnow())
    with store.transaction() as tx:
        original = tx.get_delivery(delivery_id)
        if original is None:
            raise LookupError(f"no delivery {delivery_id}")
        return tx.insert_delivery(
            {
                "event_id": original["event_id"],
                "channel": original["channel"],
                "target": original["target"],
                "state": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "replay_of": original["id"],
            }
        )


def delivery_view(delivery: dict, attempts: list[dict] | None = None) -> dict:
    """A delivery as the log shows it: never the token it may still carry."""
    view = {
        "id": delivery["id"],
        "event_id": delivery["event_id"],
        "event_type": delivery["event_type"],
        "event_at": delivery["event_at"],
        "boundary_id": delivery["boundary_id"],
        "change_request_id": delivery["change_request_id"],
        "local_authority": delivery["local_authority"],
        "channel": delivery["channel"],
        "target": delivery["target"],
        "state": delivery["state"],
        "attempts": delivery["attempts"],
        "next_attempt_at": delivery["next_attempt_at"] if delivery["state"] == PENDING else None,
        "delivered_at": delivery["delivered_at"],
        "last_error": delivery["last_error"],
        "replay_of": delivery["replay_of"],
    }
    if attempts is not None:
        view["attempt_log"] = attempts
    return view

