"""Boundary versions, change requests, overrides and the audit trail, on SQLite and on PostgreSQL.

Every test runs against both stores (``backend_url``) and the real constraints index over the
bundled sample layers, with sites next to and over the real Saltford conservation area.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from boundary_fixtures import *  # noqa: F403 - pytest fixtures: backend_url, checker, saltford
from boundary_fixtures import status

from boundary.errors import (
    Conflict,
    Forbidden,
    InvalidBoundary,
    InvalidRequest,
    InvalidState,
    NotFound,
    Unauthorized,
)
from boundary.store import MIGRATIONS, Store
from boundary.workflow import Boundaries, WorkflowSettings, add_working_days, auto_approval_due, hash_token

CA = "designated.conservationArea"


class Clock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(backend_url):
    s = Store(backend_url)
    yield s
    s.close()


@pytest.fixture
def wf(store, checker):
    return Boundaries(store, checker)


@pytest.fixture
def created(wf, saltford):
    return wf.create("PLX-123", "Bath and North East Somerset", saltford.outside, "applicant")


def events(wf, boundary_id):
    return [e["event"] for e in wf.audit(boundary_id)]


# --- creation and versions -------------------------------------------------------------------------------
def test_create_makes_version_one_with_area_and_constraints(created, saltford):
    assert created["version"] == 1
    assert 890 < created["area_m2"] < 910  # a 30 m square on the grid, measured geodesically
    assert created["area_ha"] == pytest.approx(created["area_m2"] / 10_000, abs=1e-4)
    assert status(created["constraints"], CA) == ("clear", [])
    assert created["constraints"]["provenance"]["datasets"]["conservation-area"]["features"] == 336
    assert created["overrides"] == [] and created["open_change_request"] is None


def test_invalid_geometry_is_refused_and_nothing_is_stored(wf, store):
    bowtie = {
        "type": "Polygon",
        "coordinates": [[[-2.45, 51.40], [-2.44, 51.41], [-2.44, 51.40], [-2.45, 51.41], [-2.45, 51.40]]],
    }
    with pytest.raises(InvalidBoundary, match="crosses itself"):
        wf.create("R", "LA", bowtie, "applicant")
    with store.transaction(write=False) as tx:
        assert tx.one("SELECT COUNT(*) AS c FROM boundaries")["c"] == 0


def test_reference_and_authority_are_required(wf, saltford):
    with pytest.raises(InvalidRequest, match="reference"):
        wf.create(" ", "LA", saltford.outside, "applicant")


def test_unknown_boundary_is_not_found(wf):
    with pytest.raises(NotFound):
        wf.get("no-such-id")


# --- change requests -------------------------------------------------------------------------------------
def test_proposal_reports_area_and_constraint_difference(wf, created, saltford):
    cr = wf.propose(created["id"], saltford.over, "the red line missed the garden wall", "officer:jo")
    assert cr["state"] == "open"
    # Moved 40 m west, 30 m wide: the squares no longer overlap, all 900 m² removed and added.
    assert cr["area_added_m2"] == pytest.approx(created["area_m2"], rel=0.001)
    assert cr["area_removed_m2"] == pytest.approx(created["area_m2"], rel=0.001)
    gained = {g["key"]: g for g in cr["constraints_gained"]}
    assert CA in gained and gained[CA]["entities"][0]["entity"] == saltford.entity
    assert gained[CA]["status_before"] == "clear" and gained[CA]["status_after"] == "intersects"
    assert "designated.AONB" in {g["key"] for g in cr["constraints_lost"]}
    # Nothing changes until the applicant agrees.
    assert wf.get(created["id"])["version"] == 1
    assert wf.get(created["id"])["open_change_request"] == cr["id"]


def test_partial_move_adds_and_removes_the_strips(wf, created, saltford):
    # 15 m west: a 15 m x 30 m strip is added on one side and removed on the other.
    cr = wf.propose(created["id"], saltford.square(5.0), "shift", "officer")
    assert cr["area_added_m2"] == pytest.approx(450, rel=0.01)
    assert cr["area_removed_m2"] == pytest.approx(450, rel=0.01)


def test_token_has_256_bits_is_returned_once_and_stored_hashed(wf, store, created, saltford):
    cr = wf.propose(created["id"], saltford.over, "reason", "officer")
    token = cr["token"]
    assert len(token) >= 43  # token_urlsafe(32): 256 bits
    assert "token" not in wf.get_change_request(cr["id"])
    with store.transaction(write=False) as tx:
        row = tx.get_change_request(cr["id"])
        dump = str(tx.all("SELECT * FROM change_requests")) + str(tx.all("SELECT * FROM audit"))
    assert row["token_hash"] == hash_token(token)
    assert token not in dump


def test_token_opens_its_own_request_only(wf, checker, store, saltford):
    a = wf.create("A", "LA", saltford.outside, "applicant")
    b = wf.create("B", "LA", saltford.outside, "applicant")
    cr_a = wf.propose(a["id"], saltford.over, "r", "officer")
    cr_b = wf.propose(b["id"], saltford.over, "r", "officer")
    wf.authorize_applicant(cr_a["id"], cr_a["token"])
    with pytest.raises(Forbidden):
        wf.authorize_applicant(cr_b["id"], cr_a["token"])
    with pytest.raises(Forbidden):
        wf.authorize_applicant("no-such-request", cr_a["token"])
    with pytest.raises(Forbidden):
        wf.authorize_applicant(cr_a["id"], "")


def test_token_expires(store, checker, saltford):
    clock = Clock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    wf = Boundaries(
        store, checker, WorkflowSettings(auto_approve_working_days=None, token_ttl_days=7), clock=clock
    )
    b = wf.create("R", "LA", saltford.outside, "applicant")
    cr = wf.propose(b["id"], saltford.over, "r", "officer")
    clock.now += timedelta(days=6, hours=23)
    wf.authorize_applicant(cr["id"], cr["token"])
    clock.now += timedelta(hours=2)
    with pytest.raises(Unauthorized, match="expired"):
        wf.authorize_applicant(cr["id"], cr["token"])


def test_only_one_open_request_per_boundary(wf, created, saltford):
    first = wf.propose(created["id"], saltford.over, "r1", "officer:a")
    with pytest.raises(Conflict, match=first["id"]):
        wf.propose(created["id"], saltford.over_more, "r2", "officer:b")
    wf.cancel(first["id"], "officer:a")
    second = wf.propose(created["id"], saltford.over_more, "r2", "officer:b")
    assert second["state"] == "open"


def test_the_database_itself_refuses_two_open_requests(store, wf, created, saltford):
    cr = wf.propose(created["id"], saltford.over, "r1", "officer")
    with pytest.raises(Conflict), store.transaction() as tx:
        row = tx.get_change_request(cr["id"])
        row["id"] = "duplicate"
        tx.insert_change_request(row)


def test_reject_needs_a_reason_and_closes_the_request(wf, created, saltford):
    cr = wf.propose(created["id"], saltford.over, "r", "officer")
    with pytest.raises(InvalidRequest, match="reason"):
        wf.reject(cr["id"], "  ", "applicant")
    out = wf.reject(cr["id"], "that is my neighbour's garden", "applicant")
    assert out["state"] == "rejected" and out["decision_reason"] == "that is my neighbour's garden"
    assert wf.get(created["id"])["version"] == 1
    with pytest.raises(InvalidState):
        wf.approve(cr["id"], "applicant")


def test_approve_makes_a_new_rechecked_version_and_keeps_the_old_one(wf, created, saltford):
    cr = wf.propose(created["id"], saltford.over, "garden wall", "officer:jo")
    out = wf.approve(cr["id"], "applicant")
    assert out["state"] == "approved" and out["result_version"] == 2
    current = wf.get(created["id"])
    assert (
        current["version"] == 2
        and current["reason"] == "garden wall"
        and current["created_by"] == "officer:jo"
    )
    assert status(current["constraints"], CA) == ("intersects", [saltford.entity])
    v1 = wf.version(created["id"], 1)
    assert v1["site"]["geometry"] == created["site"]["geometry"]
    assert status(v1["constraints"], CA) == ("clear", [])
    assert [v["version"] for v in wf.versions(created["id"])] == [1, 2]
    with pytest.raises(NotFound, match="version 3"):
        wf.version(created["id"], 3)


def test_no_approving_a_cancelled_request(wf, created, saltford):
    cr = wf.propose(created["id"], saltford.over, "r", "officer")
    wf.cancel(cr["id"], "officer")
    with pytest.raises(InvalidState, match="cancelled"):
        wf.approve(cr["id"], "applicant")
    with pytest.raises(InvalidState):
        wf.cancel(cr["id"], "officer")
    with pytest.raises(InvalidState):
        wf.reject(cr["id"], "late", "applicant")


def test_stale_base_version_is_a_conflict(wf, created, saltford):
    with pytest.raises(Conflict, match="version 7"):
        wf.propose(created["id"], saltford.over, "r", "officer", base_version=7)


def test_two_officers_amending_at_once_one_wins_one_conflicts(backend_url, checker, saltford):
    """Both read version 1 and prepare a proposal at the same moment; exactly one is stored."""
    setup = Boundaries(Store(backend_url), checker)
    b = setup.create("R", "LA", saltford.outside, "applicant")
    barrier = threading.Barrier(2, timeout=30)

    def slow_check(geometry):
        answer = checker(geometry)
        barrier.wait()  # both proposals have read the boundary and computed their diff
        return answer

    results: dict[str, object] = {}

    def officer(name, site):
        wf = Boundaries(Store(backend_url), slow_check)  # own store: own connection, like two replicas
        try:
            results[name] = wf.propose(b["id"], site, f"{name}'s fix", name)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[name] = exc
        finally:
            wf.store.close()

    threads = [
        threading.Thread(target=officer, args=("officer:a", saltford.over)),
        threading.Thread(target=officer, args=("officer:b", saltford.over_more)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    outcomes = sorted(type(r).__name__ for r in results.values())
    assert outcomes == ["Conflict", "dict"], results
    winner = next(r for r in results.values() if isinstance(r, dict))
    assert setup.get(b["id"])["open_change_request"] == winner["id"]
    assert events(setup, b["id"]).count("change_request_opened") == 1
    setup.store.close()


def test_concurrent_approve_and_cancel_never_both_succeed(backend_url, checker, saltford):
    setup = Boundaries(Store(backend_url), checker)
    b = setup.create("R", "LA", saltford.outside, "applicant")
    cr = setup.propose(b["id"], saltford.over, "r", "officer")
    results = {}

    def act(name):
        wf = Boundaries(Store(backend_url), checker)
        try:
            results[name] = (
                wf.approve(cr["id"], "applicant") if name == "approve" else wf.cancel(cr["id"], "officer")
            )
        except Exception as exc:  # noqa: BLE001
            results[name] = exc
        finally:
            wf.store.close()

    threads = [threading.Thread(target=act, args=(n,)) for n in ("approve", "cancel")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(type(r).__name__ for r in results.values()) == ["InvalidState", "dict"]
    final = setup.get_change_request(cr["id"])["state"]
    assert final in ("approved", "cancelled")
    assert setup.get(b["id"])["version"] == (2 if final == "approved" else 1)
    setup.store.close()


# --- auto-approval -------------------------------------------------------------------------------------
def test_working_days_skip_weekends_and_england_bank_holidays():
    # Wed 23 Dec 2026: Christmas (Fri), Boxing Day substitute (Mon 28), New Year (Fri 1 Jan) are off.
    assert add_working_days(datetime(2026, 12, 23).date(), 5) == datetime(2027, 1, 4).date()
    # An ordinary week: Monday + 5 working days is the next Monday.
    assert add_working_days(datetime(2026, 3, 2).date(), 5) == datetime(2026, 3, 9).date()
    # Good Friday (3 April 2026) and Easter Monday (6 April) are bank holidays in England.
    assert add_working_days(datetime(2026, 4, 2).date(), 2) == datetime(2026, 4, 8).date()


def test_auto_approval_after_five_working_days_is_recorded_as_automatic(store, checker, saltford):
    clock = Clock(datetime(2026, 12, 23, 11, 0, tzinfo=UTC))
    wf = Boundaries(store, checker, clock=clock)
    b = wf.create("R", "LA", saltford.outside, "applicant")
    cr = wf.propose(b["id"], saltford.over, "r", "officer")
    assert cr["auto_approval_due_at"].startswith("2027-01-04T11:00")
    assert auto_approval_due(clock.now, 5) == datetime(2027, 1, 4, 11, 0, tzinfo=UTC)
    clock.now = datetime(2027, 1, 4, 10, 59, tzinfo=UTC)
    assert wf.run_auto_approvals() == []
    assert wf.get_change_request(cr["id"])["state"] == "open"
    clock.now = datetime(2027, 1, 4, 11, 1, tzinfo=UTC)
    # Reading the request is enough: a due request is approved before it is shown.
    out = wf.get_change_request(cr["id"])
    assert out["state"] == "auto_approved" and out["decided_by"] == "system" and out["result_version"] == 2
    auto = [e for e in wf.audit(b["id"]) if e["event"] == "change_request_auto_approved"]
    assert len(auto) == 1 and auto[0]["details"]["automatic"] is True and auto[0]["actor"] == "system"
    assert wf.get(b["id"])["version"] == 2
    with pytest.raises(InvalidState):
        wf.reject(cr["id"], "too late", "applicant")


def test_auto_approval_can_be_turned_off(store, checker, saltford):
    clock = Clock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    wf = Boundaries(store, checker, WorkflowSettings(auto_approve_working_days=None), clock=clock)
    b = wf.create("R", "LA", saltford.outside, "applicant")
    cr = wf.propose(b["id"], saltford.over, "r", "officer")
    clock.now += timedelta(days=20)
    assert wf.get_change_request(cr["id"])["state"] == "open" and cr["auto_approval_due_at"] is None
    # Open until its applicant link expires (30 days): then closed as expired, never approved.
    clock.now += timedelta(days=40)
    closed = wf.get_change_request(cr["id"])
    assert closed["state"] == "expired" and closed["result_version"] is None
    assert wf.get(b["id"])["version"] == 1
    assert wf.audit(b["id"])[-1]["event"] == "change_request_expired"


# --- overrides -----------------------------------------------------------------------------------------
def test_overrides_are_kept_apart_survive_rechecks_and_are_flagged_when_the_change_affects_them(
    wf, created, saltford
):
    bid = created["id"]
    dismissed = wf.add_override(
        bid, key="greenBelt", action="dismissed", reason="site is a built-up frontage", actor="officer"
    )
    added = wf.add_override(
        bid, key="tpo", action="added", text="TPO 12/1998 on the oak by the gate", actor="officer"
    )
    confirmed_ca = wf.add_override(bid, key=CA, action="confirmed", actor="officer")
    view = wf.get(bid)
    # The machine answer is untouched by overrides.
    assert status(view["constraints"], "greenBelt")[0] == "intersects"
    assert {o["id"] for o in view["overrides"]} == {dismissed["id"], added["id"], confirmed_ca["id"]}

    wf.recheck(bid, "officer")  # same data: nothing changes, nothing is flagged, nothing deleted
    assert all(not o["needs_review"] for o in wf.get(bid)["overrides"])

    cr = wf.propose(bid, saltford.over, "r", "officer")
    wf.approve(cr["id"], "applicant")
    after = {o["id"]: o for o in wf.get(bid)["overrides"]}
    assert set(after) == {dismissed["id"], added["id"], confirmed_ca["id"]}  # carried forward to version 2
    assert after[confirmed_ca["id"]]["needs_review"] is True  # the conservation area answer changed
    assert "v1 -> v2" in after[confirmed_ca["id"]]["review_note"]
    assert after[dismissed["id"]]["needs_review"] is False  # green belt unchanged by this move
    assert after[added["id"]]["needs_review"] is False
    flagged = [e for e in wf.audit(bid) if e["event"] == "override_flagged"]
    assert [e["details"]["key"] for e in flagged] == [CA]

    wf.review_override(bid, confirmed_ca["id"], "officer", note="still applies")
    removed = wf.remove_override(bid, added["id"], "officer", reason="entered on the wrong site")
    assert removed["removed_by"] == "officer"
    assert {o["id"] for o in wf.get(bid)["overrides"]} == {dismissed["id"], confirmed_ca["id"]}
    assert len(wf.version(bid, 2)["overrides"]) == 3  # the record keeps removed ones


def test_override_validation(wf, created):
    bid = created["id"]
    with pytest.raises(InvalidRequest, match="reason"):
        wf.add_override(bid, key="greenBelt", action="dismissed", actor="officer")
    with pytest.raises(InvalidRequest, match="entity"):
        wf.add_override(bid, key="tpo", action="added", actor="officer")
    with pytest.raises(InvalidRequest, match="unknown constraint key"):
        wf.add_override(bid, key="nope", action="confirmed", actor="officer")
    with pytest.raises(InvalidRequest, match="action"):
        wf.add_override(bid, key="tpo", action="deleted", actor="officer")


# --- audit ---------------------------------------------------------------------------------------------
def test_audit_trail_records_every_step_in_order(wf, created, saltford):
    bid = created["id"]
    first = wf.propose(bid, saltford.over, "r1", "officer:jo")
    wf.reject(first["id"], "wrong wall", "applicant")
    second = wf.propose(bid, saltford.over, "r2", "officer:jo")
    wf.add_override(bid, key="greenBelt", action="confirmed", actor="officer:jo")
    wf.approve(second["id"], "applicant")
    wf.recheck(bid, "officer:jo")
    trail = wf.audit(bid)
    assert [e["event"] for e in trail] == [
        "created",
        "version_added",
        "change_request_opened",
        "change_request_sent",
        "change_request_rejected",
        "change_request_opened",
        "change_request_sent",
        "override_added",
        "change_request_approved",
        "version_added",
        "recheck_done",
        "recheck_done",
    ]
    assert [e["at"] for e in trail] == sorted(e["at"] for e in trail)
    assert trail[4]["actor"] == "applicant" and trail[4]["details"]["reason"] == "wrong wall"
    assert (
        trail[2]["details"]["constraints_gained"] == [CA, "designated"]
        or CA in trail[2]["details"]["constraints_gained"]
    )
    text = wf.audit_text(bid)
    assert text.count("\n") == len(trail)
    assert "change_request_rejected" in text and "wrong wall" in text


def test_schema_migration_is_idempotent(backend_url):
    first = Store(backend_url)
    second = Store(backend_url)  # a second process starting on the same store
    assert first.schema_version() == second.schema_version() == len(MIGRATIONS)
    first.close()
    second.close()


def test_the_sqlite_store_is_readable_by_its_owner_only(tmp_path, checker, saltford):
    """Boundaries, tokens' hashes and the audit trail are as private as keys.json: 0600, WAL files too."""
    import os
    import stat

    store = Store(None, data_dir=tmp_path)
    Boundaries(store, checker, WorkflowSettings()).create("PRIV-1", "Bath and North East Somerset", saltford.outside, "test")
    files = [p for p in tmp_path.iterdir() if p.name.startswith("boundaries.sqlite3")]
    assert {p.name for p in files} >= {"boundaries.sqlite3", "boundaries.sqlite3-wal"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), {p.name: oct(p.stat().st_mode) for p in files}
    os.chmod(tmp_path / "boundaries.sqlite3", 0o644)  # made by an older version: tightened when opened
    Store(None, data_dir=tmp_path)
    assert stat.S_IMODE((tmp_path / "boundaries.sqlite3").stat().st_mode) == 0o600
