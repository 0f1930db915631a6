"""Change-request events and the outbox they are written to.

Each change of a request's state (opened, approved, rejected, auto-approved, cancelled, expired) becomes
one event, written **in the transaction of the state change** with one delivery row per channel it must
reach: a webhook to the council's back-office system, an email to the applicant. If the transaction
rolls back, no event exists; once it commits, the deliveries wait in the store until a dispatcher (in
any replica, after any restart) sends them. Sending is the API's business (``api/delivery.py``); this
module only decides what is owed to whom.

Which channels a council uses is injected as a :data:`Router`: ``router(local_authority) -> Channels``.
Secrets (webhook signing keys, Notify API keys) are not needed here and never stored with a delivery.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from boundary.store import Tx

# Audit event -> the event type a webhook receiver sees (Standard Webhooks' ``type``: dotted, stable).
EVENT_TYPES = {
    "change_request_opened": "change_request.opened",
    "change_request_approved": "change_request.approved",
    "change_request_rejected": "change_request.rejected",
    "change_request_auto_approved": "change_request.auto_approved",
    "change_request_cancelled": "change_request.cancelled",
    "change_request_expired": "change_request.expired",
}
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
WEBHOOK, EMAIL = "webhook", "email"


@dataclass(frozen=True)
class Channels:
    """Where one local authority's events go.

    Attributes
    ----------
    webhook_url : str or None
        The back-office system's endpoint; every event type is sent to it.
    email_events : frozenset of str
        Event types emailed to the applicant (those with a Notify template configured).
    """

    webhook_url: str | None = None
    email_events: frozenset[str] = field(default_factory=frozenset)


Router = Callable[[str], Channels]


def no_channels(_local_authority: str) -> Channels:
    return Channels()


def new_event_id() -> str:
    """A Standard Webhooks message id: stable across retries, so receivers can drop duplicates."""
    return "msg_" + uuid.uuid4().hex


def emit(
    tx: Tx,
    router: Router,
    *,
    audit_event: str,
    boundary: dict,
    request: dict,
    at: str,
    data: dict,
    token: str | None = None,
) -> str:
    """Write one change-request event and its deliveries inside ``tx``; returns the event id.

    ``token`` (the applicant's, known only when the request is opened) rides with the email delivery
    alone, so the email can carry the link; the dispatcher erases it once the email is sent or given up.
    """
    event_type = EVENT_TYPES[audit_event]
    event_id = new_event_id()
    tx.insert_event(
        {
            "id": event_id,
            "type": event_type,
            "boundary_id": boundary["id"],
            "change_request_id": request["id"],
            "local_authority": boundary["local_authority"],
            "at": at,
            "data": data,
        }
    )
    channels = router(boundary["local_authority"])
    base = {"event_id": event_id, "state": PENDING, "attempts": 0, "next_attempt_at": at, "created_at": at}
    if channels.webhook_url:
        tx.insert_delivery(base | {"channel": WEBHOOK, "target": channels.webhook_url})
    email = boundary.get("applicant_email")
    if email and event_type in channels.email_events:
        tx.insert_delivery(base | {"channel": EMAIL, "target": email, "token": token})
    return event_id


def event_data(boundary: dict, request: dict, **extra) -> dict:
    """What every event says: which request, which boundary, its state and the officer's reason."""
    diff = request.get("diff") or {}
    return {
        "change_request": request["id"],
        "boundary": boundary["id"],
        "reference": boundary["reference"],
        "local_authority": boundary["local_authority"],
        "base_version": request["base_version"],
        "reason": request["reason"],
        "area_added_m2": diff.get("area_added_m2"),
        "area_removed_m2": diff.get("area_removed_m2"),
        "constraints_gained": [g["key"] for g in diff.get("constraints_gained", [])],
        "constraints_lost": [g["key"] for g in diff.get("constraints_lost", [])],
        "auto_approval_due_at": request.get("due_at"),
        "token_expires_at": request.get("token_expires_at"),
        **extra,
    }
