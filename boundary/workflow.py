"""Boundaries, immutable versions, officer change requests, overrides and the audit trail.

The story this module enforces:

- An applicant creates a boundary for an application reference and a local authority: version 1,
  validated, measured, with the constraints answer computed for it.
- An officer proposes a new geometry with a reason: a change request ``open``, with the area added and
  removed and the constraints gained and lost. Its applicant token (256 random bits) is returned once;
  only its SHA-256 is stored. At most one request is open per boundary (the database enforces it too).
- The applicant approves (the proposal becomes the next version, re-checked) or rejects with a reason;
  the officer can cancel while open. After N working days (England, bank holidays excluded) an open
  request is approved automatically and the record says so.
- Officers' overrides (confirmed, added by hand, dismissed) are kept apart from the machine answers,
  carried forward to later versions and flagged for review when a change touches their constraint.
  A re-check appends a new answer and never deletes an override.
- Every state change appends an audit event in the same transaction.

The constraints check is injected: ``check(geometry_4326) -> dict`` returns the native answer
(``{"constraints": [{"key", "status", "entities": [...]}, ...], "provenance": {...}}``).

State machine of a change request::

    open --approve--> approved        open --reject(reason)--> rejected
    open --cancel---> cancelled       open --N working days--> auto_approved
    open --token expired (no auto-approval first)--> expired

Each transition also writes a change-request event to the notification outbox in the same transaction
(:mod:`boundary.notifications`), so a committed change is always notified and a rolled-back one never.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
from shapely.geometry import shape

from boundary.errors import Conflict, Forbidden, InvalidRequest, InvalidState, NotFound, Unauthorized
from boundary.geometry import BoundaryLimits, ValidBoundary, amendment, validate_boundary
from boundary.notifications import Router, emit, event_data, no_channels
from boundary.store import Store, Tx, iso, parse_iso, utcnow
from datasets import crs

LONDON = ZoneInfo("Europe/London")
OPEN, APPROVED, REJECTED, CANCELLED, AUTO_APPROVED, EXPIRED = (
    "open",
    "approved",
    "rejected",
    "cancelled",
    "auto_approved",
    "expired",
)
OVERRIDE_ACTIONS = ("confirmed", "added", "dismissed")
SYSTEM = "system"

Checker = Callable[[object], dict]


@dataclass(frozen=True)
class WorkflowSettings:
    """Tunables, all exposed as ``REDLINE_BOUNDARY_*`` settings by the API."""

    auto_approve_working_days: int | None = 5  # None or 0 turns auto-approval off
    token_ttl_days: int = 30
    limits: BoundaryLimits = BoundaryLimits()


#: The columns that hold a validated boundary: a version and a change request store it alike.
BOUNDARY_COLUMNS = ("geometry", "min_lon", "min_lat", "max_lon", "max_lat", "area_m2", "perimeter_m", "warnings")


def _boundary_columns(valid: ValidBoundary) -> dict:
    minx, miny, maxx, maxy = valid.bounds
    columns = (valid.geojson(), minx, miny, maxx, maxy, valid.area_m2, valid.perimeter_m, valid.warnings)
    return dict(zip(BOUNDARY_COLUMNS, columns, strict=True))


def _is_id(value: str) -> bool:
    """Ids are UUIDs; anything else cannot name a record (and never reaches the database)."""
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_working_days(start: date, days: int) -> date:
    """The date ``days`` working days after ``start`` (weekends and England bank holidays skipped).

    >>> add_working_days(date(2026, 12, 23), 2)   # 25, 26 (Sat), 27 (Sun), 28 (substitute) are off
    datetime.date(2026, 12, 29)
    """
    calendar = holidays.country_holidays("GB", subdiv="ENG", years=range(start.year, start.year + 2))
    current, counted = start, 0
    while counted < days:
        current += timedelta(days=1)
        if current.weekday() < 5 and current not in calendar:
            counted += 1
    return current


def auto_approval_due(opened: datetime, days: int) -> datetime:
    """When a request opened at ``opened`` is approved automatically: same local time, N working days on."""
    local = opened.astimezone(LONDON)
    due_day = add_working_days(local.date(), days)
    return datetime.combine(due_day, local.timetz().replace(tzinfo=None), tzinfo=LONDON)


def _key_index(answer: dict) -> dict[str, dict]:
    """``{key: {"status", "entities": {(dataset, entity): entity_dict}}}`` from a native answer."""
    out = {}
    for item in answer.get("constraints", []) if answer else []:
        entities = {(str(e.get("dataset")), str(e.get("entity"))): e for e in item.get("entities", []) or []}
        out[item["key"]] = {"status": item.get("status"), "entities": entities}
    return out


def _brief(entity: dict) -> dict:
    return {k: entity.get(k) for k in ("entity", "dataset", "name", "reference") if entity.get(k) is not None}


def constraint_diff(before: dict, after: dict) -> tuple[list[dict], list[dict]]:
    """Constraints gained and lost between two native answers (keys and entities)."""
    old, new = _key_index(before), _key_index(after)
    gained, lost = [], []
    for key in sorted(old.keys() | new.keys()):
        o = old.get(key, {"status": None, "entities": {}})
        n = new.get(key, {"status": None, "entities": {}})
        plus = [_brief(n["entities"][k]) for k in sorted(n["entities"].keys() - o["entities"].keys())]
        minus = [_brief(o["entities"][k]) for k in sorted(o["entities"].keys() - n["entities"].keys())]
        became = n["status"] == "intersects" and o["status"] != "intersects"
        ceased = o["status"] == "intersects" and n["status"] != "intersects"
        if became or (plus and n["status"] == "intersects"):
            gained.append(
                {"key": key, "status_before": o["status"], "status_after": n["status"], "entities": plus}
            )
        if ceased or (minus and o["status"] == "intersects"):
            lost.append(
                {"key": key, "status_before": o["status"], "status_after": n["status"], "entities": minus}
            )
    return gained, lost


def _changed_keys(before: dict, after: dict) -> dict[str, str]:
    """Keys whose status or entity set differ, with a sentence saying how."""
    old, new = _key_index(before), _key_index(after)
    out = {}
    for key in old.keys() | new.keys():
        o = old.get(key, {"status": None, "entities": {}})
        n = new.get(key, {"status": None, "entities": {}})
        if o["status"] != n["status"]:
            out[key] = f"status changed from {o['status']} to {n['status']}"
        elif o["entities"].keys() != n["entities"].keys():
            plus = sorted(e for _, e in n["entities"].keys() - o["entities"].keys())
            minus = sorted(e for _, e in o["entities"].keys() - n["entities"].keys())
            out[key] = f"entities gained {plus or '[]'}, lost {minus or '[]'}"
    return out


def _data_versions(answer: dict) -> dict:
    datasets = (answer.get("provenance") or {}).get("datasets") or {}
    return {
        name: {k: meta.get(k) for k in ("version", "loaded_at", "etag", "features", "stale") if k in meta}
        for name, meta in datasets.items()
        if isinstance(meta, dict)
    }


class Boundaries:
    """The boundary workflow over a :class:`~boundary.store.Store`.

    Parameters
    ----------
    store : Store
    check : callable
        ``check(geometry_4326) -> dict``, the native constraints answer.
    settings : WorkflowSettings, optional
    clock : callable, optional
        Returns the current aware ``datetime``; tests move time with it.
    router : callable, optional
        ``router(local_authority) -> Channels``: where each council's change-request events go.
    on_events : callable, optional
        Called (no arguments) after a transaction that wrote events commits, e.g. to wake a dispatcher.
    """

    def __init__(
        self,
        store: Store,
        check: Checker,
        settings: WorkflowSettings | None = None,
        clock=utcnow,
        *,
        router: Router = no_channels,
        on_events=None,
    ):
        self.store = store
        self.check = check
        self.settings = settings or WorkflowSettings()
        self.clock = clock
        self.router = router
        self.on_events = on_events

    def _committed_events(self) -> None:
        if self.on_events is not None:
            self.on_events()

    # -- helpers ---------------------------------------------------------------------------------------
    def validate(self, site) -> ValidBoundary:
        return validate_boundary(site, self.settings.limits)

    def _now(self) -> str:
        return iso(self.clock())

    def _emit(self, tx: Tx, event: str, boundary: dict, request: dict, at: str, token=None, **data) -> None:
        """Write a change-request event to the outbox, in the transaction of its state change."""
        emit(
            tx,
            self.router,
            audit_event=event,
            boundary=boundary,
            request=request,
            at=at,
            data=event_data(boundary, request, **data),
            token=token,
        )

    @staticmethod
    def _audit(tx: Tx, boundary_id: str, at: str, actor: str, event: str, **details) -> None:
        tx.append_audit(boundary_id, at, actor, event, details)

    def _require_boundary(self, tx: Tx, boundary_id: str, *, for_update=False) -> dict:
        record = tx.get_boundary(boundary_id, for_update=for_update) if _is_id(boundary_id) else None
        if record is None:
            raise NotFound(f"no boundary {boundary_id!r}")
        return record

    def _require_request(self, tx: Tx, request_id: str, *, for_update=False) -> dict:
        record = tx.get_change_request(request_id, for_update=for_update) if _is_id(request_id) else None
        if record is None:
            raise NotFound(f"no change request {request_id!r}")
        return record

    @staticmethod
    def _version_record(boundary_id, n, valid: ValidBoundary, at, actor, reason, request_id=None) -> dict:
        return {
            "boundary_id": boundary_id,
            "n": n,
            **_boundary_columns(valid),
            "created_at": at,
            "created_by": actor,
            "reason": reason,
            "change_request_id": request_id,
        }

    def _reevaluate_overrides(
        self, tx: Tx, boundary_id: str, before: dict, after: dict, at: str, why: str
    ) -> None:
        """Flag every live override whose constraint the change touched; never delete one."""
        changed = _changed_keys(before, after)
        for override in tx.list_overrides(boundary_id):
            note = changed.get(override["key"])
            if note is None:
                continue
            text = f"{why}: {note}"
            tx.update_override(override["id"], needs_review=True, review_note=text)
            self._audit(
                tx,
                boundary_id,
                at,
                SYSTEM,
                "override_flagged",
                override=override["id"],
                key=override["key"],
                note=text,
            )

    # -- boundaries ------------------------------------------------------------------------------------
    def create(
        self,
        reference: str,
        local_authority: str,
        site,
        actor: str,
        *,
        valid: ValidBoundary | None = None,
        applicant_email: str | None = None,
    ) -> dict:
        """Create a boundary with its version 1 and that version's constraints answer.

        ``applicant_email``, when given, is where change requests for this boundary are emailed.
        """
        if not str(reference or "").strip():
            raise InvalidRequest("reference is required (the application reference, e.g. a PlanX session id)")
        if not str(local_authority or "").strip():
            raise InvalidRequest("local_authority is required (e.g. the council's name or organisation id)")
        valid = valid or self.validate(site)
        answer = self.check(valid.geometry)
        boundary_id = str(uuid.uuid4())
        at = self._now()
        with self.store.transaction() as tx:
            tx.insert_boundary(
                {
                    "id": boundary_id,
                    "reference": reference,
                    "local_authority": local_authority,
                    "current_version": 1,
                    "created_at": at,
                    "created_by": actor,
                    "applicant_email": applicant_email,
                }
            )
            tx.insert_version(self._version_record(boundary_id, 1, valid, at, actor, "created"))
            tx.insert_check(
                {"boundary_id": boundary_id, "version": 1, "checked_at": at, "actor": actor, "answer": answer}
            )
            self._audit(
                tx, boundary_id, at, actor, "created", reference=reference, local_authority=local_authority
            )
            self._audit(
                tx,
                boundary_id,
                at,
                actor,
                "version_added",
                version=1,
                area_m2=round(valid.area_m2, 2),
                warnings=valid.warnings,
                data_versions=_data_versions(answer),
            )
        return self.get(boundary_id)

    def get(self, boundary_id: str) -> dict:
        """The current version with its latest constraints answer, overrides and any open request."""
        self.run_auto_approvals(boundary_id=boundary_id)
        with self.store.transaction(write=False) as tx:
            record = self._require_boundary(tx, boundary_id)
            view = self._version_view(tx, record, record["current_version"])
            view["overrides"] = [self._override_view(o) for o in tx.list_overrides(boundary_id)]
            open_request = tx.open_change_request(boundary_id)
            view["open_change_request"] = open_request["id"] if open_request else None
        return view

    def _version_view(self, tx: Tx, record: dict, n: int) -> dict:
        version = tx.get_version(record["id"], n)
        if version is None:
            raise NotFound(
                f"boundary {record['id']!r} has no version {n} (it has 1 to {record['current_version']})"
            )
        check = tx.latest_check(record["id"], n)
        geometry = shape(version["geometry"])
        centroid = geometry.centroid
        try:
            bng = crs.to_bng(centroid)
            grid = crs.grid_reference(bng.x, bng.y)
        except crs.OutsideGridError:
            grid = None
        return {
            "id": record["id"],
            "reference": record["reference"],
            "local_authority": record["local_authority"],
            "applicant_email": record.get("applicant_email"),
            "version": n,
            "current_version": record["current_version"],
            "created_at": version["created_at"],
            "created_by": version["created_by"],
            "reason": version["reason"],
            "change_request_id": version["change_request_id"],
            "site": {"type": "Feature", "properties": {}, "geometry": version["geometry"]},
            "bounds": [version["min_lon"], version["min_lat"], version["max_lon"], version["max_lat"]],
            "area_m2": round(version["area_m2"], 2),
            "area_ha": round(version["area_m2"] / 10_000, 4),
            "perimeter_m": round(version["perimeter_m"], 2),
            "centroid": {"lon": round(centroid.x, 7), "lat": round(centroid.y, 7)},
            "grid_reference": grid,
            "warnings": version["warnings"],
            "checked_at": check["checked_at"] if check else None,
            "constraints": check["answer"] if check else None,
        }

    def versions(self, boundary_id: str) -> list[dict]:
        with self.store.transaction(write=False) as tx:
            self._require_boundary(tx, boundary_id)
            return [
                {
                    "version": v["n"],
                    "created_at": v["created_at"],
                    "created_by": v["created_by"],
                    "reason": v["reason"],
                    "change_request_id": v["change_request_id"],
                    "area_m2": round(v["area_m2"], 2),
                    "area_ha": round(v["area_m2"] / 10_000, 4),
                }
                for v in tx.list_versions(boundary_id)
            ]

    def version(self, boundary_id: str, n: int) -> dict:
        with self.store.transaction(write=False) as tx:
            record = self._require_boundary(tx, boundary_id)
            view = self._version_view(tx, record, n)
            view["overrides"] = [
                self._override_view(o)
                for o in tx.list_overrides(boundary_id, include_removed=True)
                if o["version"] <= n
            ]
        return view

    def recheck(self, boundary_id: str, actor: str) -> dict:
        """Re-run the check on the current version (new data); keeps every override, flags affected ones."""
        with self.store.transaction(write=False) as tx:
            record = self._require_boundary(tx, boundary_id)
            n = record["current_version"]
            geometry = shape(tx.get_version(boundary_id, n)["geometry"])
        answer = self.check(geometry)
        at = self._now()
        with self.store.transaction() as tx:
            record = self._require_boundary(tx, boundary_id, for_update=True)
            if record["current_version"] != n:
                raise Conflict(
                    f"boundary {boundary_id} moved to version {record['current_version']} during the re-check; retry"
                )
            before = tx.latest_check(boundary_id, n)["answer"]
            tx.insert_check(
                {"boundary_id": boundary_id, "version": n, "checked_at": at, "actor": actor, "answer": answer}
            )
            changed = _changed_keys(before, answer)
            self._audit(
                tx,
                boundary_id,
                at,
                actor,
                "recheck_done",
                version=n,
                changed=changed,
                data_versions=_data_versions(answer),
            )
            self._reevaluate_overrides(tx, boundary_id, before, answer, at, f"re-check of version {n}")
        return self.get(boundary_id)

    # -- change requests -------------------------------------------------------------------------------
    def propose(
        self,
        boundary_id: str,
        site,
        reason: str,
        actor: str,
        *,
        base_version: int | None = None,
        valid: ValidBoundary | None = None,
    ) -> dict:
        """An officer proposes a new geometry: opens a change request and returns it with its token (once)."""
        if not str(reason or "").strip():
            raise InvalidRequest("reason is required: say why the boundary should change")
        valid = valid or self.validate(site)
        self.run_auto_approvals(boundary_id=boundary_id)
        with self.store.transaction(write=False) as tx:
            record = self._require_boundary(tx, boundary_id)
            current = record["current_version"]
            version = tx.get_version(boundary_id, current)
            before = tx.latest_check(boundary_id, current)["answer"]
        if base_version is not None and base_version != current:
            raise Conflict(
                f"the proposal is based on version {base_version} but boundary {boundary_id} is at version {current}; "
                "reload it and propose again"
            )
        change = amendment(shape(version["geometry"]), valid.geometry)
        answer = self.check(valid.geometry)
        gained, lost = constraint_diff(before, answer)
        diff = {
            "area_added_m2": change["area_added_m2"],
            "area_removed_m2": change["area_removed_m2"],
            "constraints_gained": gained,
            "constraints_lost": lost,
        }
        token = secrets.token_urlsafe(32)  # 256 bits; the link the officer's system sends carries it
        opened = self.clock()
        at = iso(opened)
        days = self.settings.auto_approve_working_days
        due = iso(auto_approval_due(opened, days)) if days else None
        expires = iso(opened + timedelta(days=self.settings.token_ttl_days))
        request_id = str(uuid.uuid4())
        with self.store.transaction() as tx:
            # The row lock (PostgreSQL) or the write lock (SQLite) makes concurrent proposals take turns;
            # the second one then sees the first one's open request or the moved version.
            record = self._require_boundary(tx, boundary_id, for_update=True)
            if record["current_version"] != current:
                raise Conflict(
                    f"boundary {boundary_id} changed to version {record['current_version']} while this proposal was "
                    "prepared; reload it and propose again"
                )
            existing = tx.open_change_request(boundary_id)
            if existing is not None:
                raise Conflict(
                    f"change request {existing['id']} is already open for boundary {boundary_id}; "
                    "cancel it or wait for the applicant's answer before proposing another",
                    open_change_request=existing["id"],
                )
            cr_record = {
                    "id": request_id,
                    "boundary_id": boundary_id,
                    "base_version": current,
                    **_boundary_columns(valid),
                    "reason": reason,
                    "state": OPEN,
                    "token_hash": hash_token(token),
                    "token_expires_at": expires,
                    "due_at": due,
                    "created_at": at,
                    "created_by": actor,
                    "diff": diff,
                    "proposed_answer": answer,
                }
            tx.insert_change_request(cr_record)
            self._audit(
                tx,
                boundary_id,
                at,
                actor,
                "change_request_opened",
                change_request=request_id,
                base_version=current,
                reason=reason,
                area_added_m2=diff["area_added_m2"],
                area_removed_m2=diff["area_removed_m2"],
                constraints_gained=[g["key"] for g in gained],
                constraints_lost=[g["key"] for g in lost],
            )
            self._audit(
                tx,
                boundary_id,
                at,
                actor,
                "change_request_sent",
                change_request=request_id,
                to="applicant",
                token_expires_at=expires,
                auto_approval_due_at=due,
            )
            self._emit(tx, "change_request_opened", record, cr_record, at, token=token, state=OPEN, actor=actor)
        self._committed_events()
        view = self.get_change_request(request_id)
        view["token"] = token
        return view

    def get_change_request(self, request_id: str) -> dict:
        with self.store.transaction(write=False) as tx:
            boundary_id = self._require_request(tx, request_id)["boundary_id"]
        self.run_auto_approvals(boundary_id=boundary_id)
        with self.store.transaction(write=False) as tx:
            cr = self._require_request(tx, request_id)
            original = tx.get_version(cr["boundary_id"], cr["base_version"])
        return {
            "id": cr["id"],
            "boundary_id": cr["boundary_id"],
            "state": cr["state"],
            "reason": cr["reason"],
            "base_version": cr["base_version"],
            "created_at": cr["created_at"],
            "created_by": cr["created_by"],
            "auto_approval_due_at": cr["due_at"],
            "token_expires_at": cr["token_expires_at"],
            "decided_at": cr["decided_at"],
            "decided_by": cr["decided_by"],
            "decision_reason": cr["decision_reason"],
            "result_version": cr["result_version"],
            "original": {
                "type": "Feature",
                "properties": {"version": cr["base_version"]},
                "geometry": original["geometry"],
            },
            "proposed": {"type": "Feature", "properties": {}, "geometry": cr["geometry"]},
            "original_area_m2": round(original["area_m2"], 2),
            "proposed_area_m2": round(cr["area_m2"], 2),
            # The areas themselves, for a map of the change (the applicant page draws them).
            **{k: v for k, v in amendment(shape(original["geometry"]), shape(cr["geometry"])).items() if k in ("added", "removed")},
            "warnings": cr["warnings"],
            **cr["diff"],
            "constraints": cr["proposed_answer"],
        }

    def authorize_applicant(self, request_id: str, token: str) -> None:
        """Raise unless ``token`` is this request's unexpired applicant token.

        A wrong token and an unknown request look the same (403), so a token cannot probe for others.
        """
        cr = None
        if _is_id(request_id):
            with self.store.transaction(write=False) as tx:
                cr = tx.get_change_request(request_id)
        if cr is None or not hmac.compare_digest(cr["token_hash"], hash_token(token or "")):
            raise Forbidden("this token does not open change request " + repr(request_id))
        if parse_iso(cr["token_expires_at"]) <= self.clock():
            raise Unauthorized(
                f"the link for change request {request_id} expired at {cr['token_expires_at']}; "
                "ask the planning officer to send a new one",
                code="link-expired",
            )

    def approve(self, request_id: str, actor: str) -> dict:
        return self._approve(request_id, actor, automatic=False)

    def _approve(self, request_id: str, actor: str, *, automatic: bool) -> dict:
        with self.store.transaction(write=False) as tx:
            cr = self._require_request(tx, request_id)
        if cr["state"] != OPEN:
            raise InvalidState(
                f"change request {request_id} is {cr['state']}; only an open request can be approved"
            )
        geometry = shape(cr["geometry"])
        # Re-check at approval: the layers may have changed since the officer proposed.
        answer = self.check(geometry)
        at = self._now()
        with self.store.transaction() as tx:
            record = self._require_boundary(tx, cr["boundary_id"], for_update=True)
            cr = self._require_request(tx, request_id, for_update=True)
            if cr["state"] != OPEN:
                raise InvalidState(
                    f"change request {request_id} is {cr['state']}; only an open request can be approved"
                )
            base = cr["base_version"]
            if record["current_version"] != base:
                raise Conflict(
                    f"boundary {record['id']} is at version {record['current_version']}, not the version {base} "
                    "this request amends"
                )
            new = base + 1
            before = tx.latest_check(record["id"], base)["answer"]
            tx.insert_version(
                {
                    "boundary_id": record["id"],
                    "n": new,
                    **{column: cr[column] for column in BOUNDARY_COLUMNS},
                    "created_at": at,
                    "created_by": cr["created_by"],
                    "reason": cr["reason"],
                    "change_request_id": request_id,
                }
            )
            tx.insert_check(
                {
                    "boundary_id": record["id"],
                    "version": new,
                    "checked_at": at,
                    "actor": actor,
                    "answer": answer,
                }
            )
            if not tx.advance_version(record["id"], base, new):
                raise Conflict(f"boundary {record['id']} changed while approving; reload it")
            state = AUTO_APPROVED if automatic else APPROVED
            if not tx.decide_change_request(
                request_id, from_state=OPEN, state=state, decided_at=at, decided_by=actor, result_version=new
            ):
                raise InvalidState(f"change request {request_id} was decided by someone else first")
            event = "change_request_auto_approved" if automatic else "change_request_approved"
            details = {"change_request": request_id, "version": new}
            if automatic:
                details |= {
                    "automatic": True,
                    "working_days": self.settings.auto_approve_working_days,
                    "due_at": cr["due_at"],
                }
            self._audit(tx, record["id"], at, actor, event, **details)
            self._emit(tx, event, record, cr, at, state=state, actor=actor, decided_at=at, result_version=new)
            self._audit(
                tx,
                record["id"],
                at,
                actor,
                "version_added",
                version=new,
                change_request=request_id,
                area_m2=round(cr["area_m2"], 2),
                data_versions=_data_versions(answer),
            )
            self._audit(
                tx,
                record["id"],
                at,
                actor,
                "recheck_done",
                version=new,
                changed=_changed_keys(before, answer),
                data_versions=_data_versions(answer),
            )
            self._reevaluate_overrides(
                tx, record["id"], before, answer, at, f"boundary change v{base} -> v{new}"
            )
        self._committed_events()
        return self.get_change_request(request_id)

    def reject(self, request_id: str, reason: str, actor: str) -> dict:
        if not str(reason or "").strip():
            raise InvalidRequest(
                "reason is required when rejecting: tell the officer what is wrong with the proposal"
            )
        return self._close(request_id, REJECTED, "change_request_rejected", actor, reason, verb="rejected")

    def cancel(self, request_id: str, actor: str, reason: str | None = None) -> dict:
        return self._close(request_id, CANCELLED, "change_request_cancelled", actor, reason, verb="cancelled")

    def _close(self, request_id: str, state: str, event: str, actor: str, reason, *, verb: str) -> dict:
        self.get_change_request(request_id)  # applies a due auto-approval first
        at = self._now()
        with self.store.transaction() as tx:
            cr = self._require_request(tx, request_id)
            record = self._require_boundary(tx, cr["boundary_id"], for_update=True)
            cr = self._require_request(tx, request_id, for_update=True)
            if cr["state"] != OPEN:
                raise InvalidState(
                    f"change request {request_id} is {cr['state']}; only an open request can be {verb}"
                )
            tx.decide_change_request(
                request_id,
                from_state=OPEN,
                state=state,
                decided_at=at,
                decided_by=actor,
                decision_reason=reason,
            )
            self._audit(tx, cr["boundary_id"], at, actor, event, change_request=request_id, reason=reason)
            self._emit(tx, event, record, cr, at, state=state, actor=actor, decided_at=at, decision_reason=reason)
        self._committed_events()
        return self.get_change_request(request_id)

    def run_expiries(self, *, boundary_id: str | None = None) -> list[str]:
        """Close every open request whose applicant link has expired (and was not auto-approved first)."""
        with self.store.transaction(write=False) as tx:
            due = [r["id"] for r in tx.expired_change_requests(self._now(), boundary_id)]
        done = []
        for request_id in due:
            at = self._now()
            with self.store.transaction() as tx:
                cr = tx.get_change_request(request_id)
                record = self._require_boundary(tx, cr["boundary_id"], for_update=True)
                if not tx.decide_change_request(
                    request_id, from_state=OPEN, state=EXPIRED, decided_at=at, decided_by=SYSTEM
                ):
                    continue  # decided meanwhile
                self._audit(
                    tx,
                    record["id"],
                    at,
                    SYSTEM,
                    "change_request_expired",
                    change_request=request_id,
                    token_expires_at=cr["token_expires_at"],
                )
                self._emit(tx, "change_request_expired", record, cr, at, state=EXPIRED, actor=SYSTEM, decided_at=at)
            done.append(request_id)
        if done:
            self._committed_events()
        return done

    def run_auto_approvals(self, *, boundary_id: str | None = None) -> list[str]:
        """Approve every open request whose working-day deadline has passed; returns their ids.

        Requests whose applicant link expired before that are closed as ``expired`` instead.
        """
        if not self.settings.auto_approve_working_days:
            self.run_expiries(boundary_id=boundary_id)
            return []
        with self.store.transaction(write=False) as tx:
            due = [r["id"] for r in tx.due_change_requests(self._now(), boundary_id)]
        done = []
        for request_id in due:
            try:
                self._approve(request_id, SYSTEM, automatic=True)
                done.append(request_id)
            except (InvalidState, Conflict):
                continue  # decided meanwhile by a person or another replica
        self.run_expiries(boundary_id=boundary_id)
        return done

    # -- overrides -------------------------------------------------------------------------------------
    @staticmethod
    def _override_view(o: dict) -> dict:
        return {
            "id": o["id"],
            "key": o["key"],
            "action": o["action"],
            "entity": o["entity"],
            "text": o["text"],
            "reason": o["reason"],
            "version": o["version"],
            "created_at": o["created_at"],
            "created_by": o["created_by"],
            "needs_review": o["needs_review"],
            "review_note": o["review_note"],
            "removed_at": o["removed_at"],
            "removed_by": o["removed_by"],
            "removed_reason": o["removed_reason"],
        }

    def add_override(
        self,
        boundary_id: str,
        *,
        key: str,
        action: str,
        actor: str,
        entity=None,
        text=None,
        reason=None,
        version: int | None = None,
    ) -> dict:
        """Record an officer's judgement on one constraint, apart from the machine answer."""
        if action not in OVERRIDE_ACTIONS:
            raise InvalidRequest(f"action must be one of {', '.join(OVERRIDE_ACTIONS)}, not {action!r}")
        if action == "added" and not (entity or text):
            raise InvalidRequest("an added constraint needs an entity id or a text describing it")
        if action == "dismissed" and not str(reason or "").strip():
            raise InvalidRequest("dismissing a constraint needs a reason")
        at = self._now()
        override_id = str(uuid.uuid4())
        with self.store.transaction() as tx:
            record = self._require_boundary(tx, boundary_id, for_update=True)
            n = record["current_version"] if version is None else version
            if n != record["current_version"]:
                raise Conflict(
                    f"overrides apply to the current version ({record['current_version']}), not version {n}; reload"
                )
            keys = _key_index(tx.latest_check(boundary_id, n)["answer"])
            if key not in keys:
                raise InvalidRequest(f"unknown constraint key {key!r}; use a key of the constraints answer")
            tx.insert_override(
                {
                    "id": override_id,
                    "boundary_id": boundary_id,
                    "version": n,
                    "key": key,
                    "action": action,
                    "entity": None if entity is None else str(entity),
                    "text": text,
                    "reason": reason,
                    "created_at": at,
                    "created_by": actor,
                }
            )
            self._audit(
                tx,
                boundary_id,
                at,
                actor,
                "override_added",
                override=override_id,
                key=key,
                action=action,
                entity=entity,
                text=text,
                reason=reason,
                version=n,
            )
            return self._override_view(tx.get_override(override_id))

    def remove_override(
        self, boundary_id: str, override_id: str, actor: str, reason: str | None = None
    ) -> dict:
        def removal(o: dict, at: str) -> dict:
            if o["removed_at"] is not None:
                raise InvalidState(f"override {override_id} was already removed at {o['removed_at']}")
            return {"removed_at": at, "removed_by": actor, "removed_reason": reason}

        return self._change_override(
            boundary_id, override_id, actor, "override_removed", removal, live=False, reason=reason
        )

    def review_override(
        self, boundary_id: str, override_id: str, actor: str, note: str | None = None
    ) -> dict:
        """An officer confirms a flagged override still stands after the change."""
        return self._change_override(
            boundary_id,
            override_id,
            actor,
            "override_reviewed",
            lambda o, at: {"needs_review": False, "review_note": note},
            live=True,
            note=note,
        )

    def _change_override(
        self, boundary_id: str, override_id: str, actor: str, event: str, changes, *, live: bool, **details
    ) -> dict:
        """Update one override of the boundary and audit it, in one transaction under the boundary's row lock.

        ``changes(override, at)`` gives the columns to set, or raises when the change is not allowed;
        ``live``: only an override not yet removed may be changed.
        """
        at = self._now()
        with self.store.transaction() as tx:
            self._require_boundary(tx, boundary_id, for_update=True)
            o = tx.get_override(override_id) if _is_id(override_id) else None
            if o is None or o["boundary_id"] != boundary_id or (live and o["removed_at"] is not None):
                raise NotFound(f"boundary {boundary_id} has no {'live ' if live else ''}override {override_id!r}")
            tx.update_override(override_id, **changes(o, at))
            self._audit(tx, boundary_id, at, actor, event, override=override_id, key=o["key"], **details)
            return self._override_view(tx.get_override(override_id))

    # -- audit -----------------------------------------------------------------------------------------
    def audit(self, boundary_id: str) -> list[dict]:
        self.run_auto_approvals(boundary_id=boundary_id)
        with self.store.transaction(write=False) as tx:
            self._require_boundary(tx, boundary_id)
            return [
                {"at": e["at"], "actor": e["actor"], "event": e["event"], "details": e["details"]}
                for e in tx.list_audit(boundary_id)
            ]

    def audit_text(self, boundary_id: str) -> str:
        """The audit trail as a plain-text log, one event a line."""
        lines = []
        for e in self.audit(boundary_id):
            details = " ".join(f"{k}={v}" for k, v in e["details"].items() if v not in (None, [], {}))
            lines.append(f"{e['at']}  {e['actor']:<20}  {e['event']:<30}  {details}".rstrip())
        return "\n".join(lines) + "\n"
