"""Persistence for boundaries, versions, checks, change requests, overrides and the audit trail.

One schema and one migration path serve both back ends:

- SQLite (default): a file in ``REDLINE_DATA_DIR``, WAL mode so readers never block the writer, and
  ``BEGIN IMMEDIATE`` around every state change so two writers serialise instead of failing half way.
- PostgreSQL when the database URL says ``postgresql://`` (psycopg 3). Writers lock the boundary row
  (``SELECT ... FOR UPDATE``) so two officers amending one boundary serialise; the loser sees the new
  state and gets a :class:`~boundary.errors.Conflict`.

Geometry is stored as GeoJSON text (EPSG:4326) plus its bounds, which both engines index without
extensions. Times are ISO 8601 UTC strings, which sort the same as the instants they name. Nothing is
updated in place except a change request's state, an override's review flag / removal stamp and the
boundary's pointer to its current version; versions, checks and audit events are append-only.

SQL is written once with ``?`` placeholders and rewritten to ``%s`` for psycopg.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from boundary.errors import Conflict, StoreUnavailable

SQLITE_FILENAME = "boundaries.sqlite3"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Fixed-width ISO 8601 UTC text: sorts lexically in time order in both engines."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


# --- schema -------------------------------------------------------------------------------------------
# Each migration is a list of portable statements; ``{serial}`` and ``{float}`` are the only dialect
# differences. Append new migrations; never edit an applied one.
_TYPES = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "float": "REAL"},
    "postgresql": {"serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "float": "DOUBLE PRECISION"},
}

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE boundaries (
            id TEXT PRIMARY KEY,
            reference TEXT NOT NULL,
            local_authority TEXT NOT NULL,
            current_version INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL)""",
        "CREATE INDEX boundaries_reference ON boundaries (reference)",
        """CREATE TABLE versions (
            boundary_id TEXT NOT NULL REFERENCES boundaries (id),
            n INTEGER NOT NULL,
            geometry TEXT NOT NULL,
            min_lon {float} NOT NULL, min_lat {float} NOT NULL,
            max_lon {float} NOT NULL, max_lat {float} NOT NULL,
            area_m2 {float} NOT NULL,
            perimeter_m {float} NOT NULL,
            warnings TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            reason TEXT,
            change_request_id TEXT,
            PRIMARY KEY (boundary_id, n))""",
        """CREATE TABLE checks (
            id {serial},
            boundary_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            checked_at TEXT NOT NULL,
            actor TEXT NOT NULL,
            answer TEXT NOT NULL,
            FOREIGN KEY (boundary_id, version) REFERENCES versions (boundary_id, n))""",
        "CREATE INDEX checks_version ON checks (boundary_id, version, id)",
        """CREATE TABLE change_requests (
            id TEXT PRIMARY KEY,
            boundary_id TEXT NOT NULL REFERENCES boundaries (id),
            base_version INTEGER NOT NULL,
            geometry TEXT NOT NULL,
            min_lon {float} NOT NULL, min_lat {float} NOT NULL,
            max_lon {float} NOT NULL, max_lat {float} NOT NULL,
            area_m2 {float} NOT NULL,
            perimeter_m {float} NOT NULL,
            warnings TEXT NOT NULL,
            reason TEXT NOT NULL,
            state TEXT NOT NULL,
            token_hash TEXT NOT NULL,
            token_expires_at TEXT NOT NULL,
            due_at TEXT,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            decided_at TEXT,
            decided_by TEXT,
            decision_reason TEXT,
            result_version INTEGER,
            diff TEXT NOT NULL,
            proposed_answer TEXT NOT NULL)""",
        # The database itself refuses a second open request for one boundary, whatever the code does.
        "CREATE UNIQUE INDEX change_requests_one_open ON change_requests (boundary_id) WHERE state = 'open'",
        "CREATE INDEX change_requests_due ON change_requests (state, due_at)",
        """CREATE TABLE overrides (
            id TEXT PRIMARY KEY,
            boundary_id TEXT NOT NULL REFERENCES boundaries (id),
            version INTEGER NOT NULL,
            key TEXT NOT NULL,
            action TEXT NOT NULL,
            entity TEXT,
            text TEXT,
            reason TEXT,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            needs_review INTEGER NOT NULL DEFAULT 0,
            review_note TEXT,
            removed_at TEXT,
            removed_by TEXT,
            removed_reason TEXT)""",
        "CREATE INDEX overrides_boundary ON overrides (boundary_id)",
        """CREATE TABLE audit (
            seq {serial},
            boundary_id TEXT NOT NULL,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            event TEXT NOT NULL,
            details TEXT NOT NULL)""",
        "CREATE INDEX audit_boundary ON audit (boundary_id, seq)",
    ],
    [
        # The notification outbox: each change-request event is written in the transaction of its state
        # change, with one delivery per channel it goes to; a dispatcher sends them after the commit.
        "ALTER TABLE boundaries ADD COLUMN applicant_email TEXT",
        """CREATE TABLE events (
            seq {serial},
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            boundary_id TEXT NOT NULL,
            change_request_id TEXT NOT NULL,
            local_authority TEXT NOT NULL,
            at TEXT NOT NULL,
            data TEXT NOT NULL)""",
        "CREATE INDEX events_boundary ON events (boundary_id, seq)",
        """CREATE TABLE deliveries (
            id {serial},
            event_id TEXT NOT NULL REFERENCES events (id),
            channel TEXT NOT NULL,
            target TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            lease_until TEXT,
            lease_owner TEXT,
            token TEXT,
            created_at TEXT NOT NULL,
            delivered_at TEXT,
            last_error TEXT,
            replay_of BIGINT)""",
        "CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at)",
        "CREATE INDEX deliveries_event ON deliveries (event_id)",
        """CREATE TABLE delivery_attempts (
            id {serial},
            delivery_id BIGINT NOT NULL,
            at TEXT NOT NULL,
            worker TEXT NOT NULL,
            outcome TEXT NOT NULL,
            status INTEGER,
            error TEXT,
            duration_ms {float} NOT NULL)""",
        "CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, id)",
    ],
]

_JSON_COLUMNS = {"warnings", "answer", "diff", "proposed_answer", "details", "geometry", "data"}


def _decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    out = dict(row)
    for key in _JSON_COLUMNS & out.keys():
        if isinstance(out[key], str):
            out[key] = json.loads(out[key])
    if "needs_review" in out:
        out["needs_review"] = bool(out["needs_review"])
    return out


def _encode(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    if isinstance(value, bool):
        return int(value)
    return value


@dataclass(frozen=True)
class StoreConfig:
    url: str
    dialect: str  # "sqlite" or "postgresql"
    path: Path | None = None


def resolve_url(url: str | None, data_dir: str | os.PathLike | None = None) -> StoreConfig:
    """Turn ``REDLINE_DATABASE_URL`` (or its absence) into a back end.

    ``None`` or ``""`` means the SQLite file ``boundaries.sqlite3`` in ``data_dir``;
    ``sqlite:///abs/path.db`` a given SQLite file; ``postgresql://...`` / ``postgres://...`` PostgreSQL.
    """
    if not url:
        from datasets.data_dir import default_data_dir

        root = Path(data_dir or os.environ.get("REDLINE_DATA_DIR") or default_data_dir())
        path = root / SQLITE_FILENAME
        return StoreConfig(url=f"sqlite:///{path}", dialect="sqlite", path=path)
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        return StoreConfig(url=url, dialect="sqlite", path=path)
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return StoreConfig(url=url.replace("postgresql+psycopg://", "postgresql://"), dialect="postgresql")
    raise ValueError(
        f"REDLINE_DATABASE_URL {url!r} is neither sqlite:///PATH nor postgresql://USER@HOST:PORT/DB"
    )


class Tx:
    """One open transaction: every method runs inside it. Obtain through :meth:`Store.transaction`."""

    def __init__(self, store: Store, conn):
        self.store = store
        self.conn = conn
        self.dialect = store.dialect

    # -- plumbing --------------------------------------------------------------------------------------
    def execute(self, sql: str, params: tuple | list = ()):
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        try:
            return self.conn.execute(sql, tuple(_encode(p) for p in params))
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"the store refused a conflicting write ({exc})") from exc
        except Exception as exc:  # psycopg's integrity errors, without importing psycopg for SQLite users
            if type(exc).__name__ in ("UniqueViolation", "IntegrityError", "SerializationFailure"):
                raise Conflict(f"the store refused a conflicting write ({exc.__class__.__name__})") from exc
            raise

    def one(self, sql: str, params=()) -> dict | None:
        row = self.execute(sql, params).fetchone()
        return _decode(row) if row is not None else None

    def all(self, sql: str, params=()) -> list[dict]:
        return [_decode(r) for r in self.execute(sql, params).fetchall()]

    def insert(self, table: str, record: dict) -> None:
        cols = list(record)
        self.execute(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
            [record[c] for c in cols],
        )

    def _lock(self) -> str:
        return " FOR UPDATE" if self.dialect == "postgresql" else ""

    # -- boundaries ------------------------------------------------------------------------------------
    def get_boundary(self, boundary_id: str, *, for_update: bool = False) -> dict | None:
        return self.one(
            "SELECT * FROM boundaries WHERE id = ?" + (self._lock() if for_update else ""), (boundary_id,)
        )

    def insert_boundary(self, record: dict) -> None:
        self.insert("boundaries", record)

    def advance_version(self, boundary_id: str, expected: int, new: int) -> bool:
        """Compare-and-set of the current version: False when someone else moved it first."""
        cur = self.execute(
            "UPDATE boundaries SET current_version = ? WHERE id = ? AND current_version = ?",
            (new, boundary_id, expected),
        )
        return cur.rowcount == 1

    # -- versions and checks ---------------------------------------------------------------------------
    def insert_version(self, record: dict) -> None:
        self.insert("versions", record)

    def get_version(self, boundary_id: str, n: int) -> dict | None:
        return self.one("SELECT * FROM versions WHERE boundary_id = ? AND n = ?", (boundary_id, n))

    def list_versions(self, boundary_id: str) -> list[dict]:
        return self.all("SELECT * FROM versions WHERE boundary_id = ? ORDER BY n", (boundary_id,))

    def insert_check(self, record: dict) -> None:
        self.insert("checks", record)

    def latest_check(self, boundary_id: str, n: int) -> dict | None:
        return self.one(
            "SELECT * FROM checks WHERE boundary_id = ? AND version = ? ORDER BY id DESC LIMIT 1",
            (boundary_id, n),
        )

    def count_checks(self, boundary_id: str, n: int) -> int:
        row = self.one(
            "SELECT COUNT(*) AS c FROM checks WHERE boundary_id = ? AND version = ?", (boundary_id, n)
        )
        return int(row["c"])

    # -- change requests -------------------------------------------------------------------------------
    def insert_change_request(self, record: dict) -> None:
        self.insert("change_requests", record)

    def get_change_request(self, request_id: str, *, for_update: bool = False) -> dict | None:
        return self.one(
            "SELECT * FROM change_requests WHERE id = ?" + (self._lock() if for_update else ""),
            (request_id,),
        )

    def open_change_request(self, boundary_id: str) -> dict | None:
        return self.one(
            "SELECT * FROM change_requests WHERE boundary_id = ? AND state = 'open'", (boundary_id,)
        )

    def list_change_requests(self, boundary_id: str) -> list[dict]:
        return self.all(
            "SELECT * FROM change_requests WHERE boundary_id = ? ORDER BY created_at, id", (boundary_id,)
        )

    def due_change_requests(self, now: str, boundary_id: str | None = None) -> list[dict]:
        sql = "SELECT id FROM change_requests WHERE state = 'open' AND due_at IS NOT NULL AND due_at <= ?"
        params: tuple = (now,)
        if boundary_id is not None:
            sql += " AND boundary_id = ?"
            params += (boundary_id,)
        return self.all(sql + " ORDER BY due_at", params)

    def expired_change_requests(self, now: str, boundary_id: str | None = None) -> list[dict]:
        sql = "SELECT id FROM change_requests WHERE state = 'open' AND token_expires_at <= ?"
        params: tuple = (now,)
        if boundary_id is not None:
            sql += " AND boundary_id = ?"
            params += (boundary_id,)
        return self.all(sql + " ORDER BY token_expires_at", params)

    def decide_change_request(self, request_id: str, *, from_state: str, **fields) -> bool:
        """Move a request out of ``from_state``; False when it was no longer in that state."""
        sets = ", ".join(f"{k} = ?" for k in fields)
        cur = self.execute(
            f"UPDATE change_requests SET {sets} WHERE id = ? AND state = ?",
            [*fields.values(), request_id, from_state],
        )
        return cur.rowcount == 1

    # -- overrides -------------------------------------------------------------------------------------
    def insert_override(self, record: dict) -> None:
        self.insert("overrides", record)

    def get_override(self, override_id: str) -> dict | None:
        return self.one("SELECT * FROM overrides WHERE id = ?", (override_id,))

    def list_overrides(self, boundary_id: str, *, include_removed: bool = False) -> list[dict]:
        sql = "SELECT * FROM overrides WHERE boundary_id = ?"
        if not include_removed:
            sql += " AND removed_at IS NULL"
        return self.all(sql + " ORDER BY created_at, id", (boundary_id,))

    def update_override(self, override_id: str, **fields) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.execute(f"UPDATE overrides SET {sets} WHERE id = ?", [*fields.values(), override_id])

    # -- audit -----------------------------------------------------------------------------------------
    def append_audit(self, boundary_id: str, at: str, actor: str, event: str, details: dict) -> None:
        self.insert(
            "audit",
            {"boundary_id": boundary_id, "at": at, "actor": actor, "event": event, "details": details},
        )

    def list_audit(self, boundary_id: str) -> list[dict]:
        return self.all(
            "SELECT seq, at, actor, event, details FROM audit WHERE boundary_id = ? ORDER BY seq",
            (boundary_id,),
        )

    # -- notification outbox ---------------------------------------------------------------------------
    def insert_event(self, record: dict) -> None:
        self.insert("events", record)

    def insert_delivery(self, record: dict) -> int:
        cols = list(record)
        row = self.one(
            f"INSERT INTO deliveries ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) RETURNING id",
            [record[c] for c in cols],
        )
        return int(row["id"])

    def any_due_delivery(self, now: str) -> bool:
        return (
            self.one(
                "SELECT id FROM deliveries WHERE state = 'pending' AND next_attempt_at <= ? "
                "AND (lease_until IS NULL OR lease_until <= ?) LIMIT 1",
                (now, now),
            )
            is not None
        )

    def claim_deliveries(self, now: str, lease_until: str, owner: str, limit: int) -> list[dict]:
        """Lease up to ``limit`` due deliveries to ``owner``: another replica skips them until the lease ends.

        PostgreSQL skips rows another transaction is claiming (``SKIP LOCKED``); SQLite's write lock
        (``BEGIN IMMEDIATE``) already makes claimers take turns.
        """
        skip = " FOR UPDATE SKIP LOCKED" if self.dialect == "postgresql" else ""
        due = self.all(
            "SELECT id FROM deliveries WHERE state = 'pending' AND next_attempt_at <= ? "
            "AND (lease_until IS NULL OR lease_until <= ?) ORDER BY id LIMIT ?" + skip,
            (now, now, limit),
        )
        claimed = []
        for row in due:
            cur = self.execute(
                "UPDATE deliveries SET lease_until = ?, lease_owner = ? WHERE id = ? AND state = 'pending' "
                "AND (lease_until IS NULL OR lease_until <= ?)",
                (lease_until, owner, row["id"], now),
            )
            if cur.rowcount == 1:
                claimed.append(self.get_delivery(row["id"]))
        return claimed

    def get_delivery(self, delivery_id: int) -> dict | None:
        return self.one(
            "SELECT d.*, e.type AS event_type, e.boundary_id, e.change_request_id, e.local_authority, "
            "e.at AS event_at, e.data FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.id = ?",
            (delivery_id,),
        )

    def list_deliveries(self, *, state=None, boundary_id=None, event_id=None, limit: int = 100) -> list[dict]:
        sql = (
            "SELECT d.*, e.type AS event_type, e.boundary_id, e.change_request_id, e.local_authority, "
            "e.at AS event_at, e.data FROM deliveries d JOIN events e ON e.id = d.event_id WHERE 1 = 1"
        )
        params: list = []
        for column, value in (("d.state", state), ("e.boundary_id", boundary_id), ("d.event_id", event_id)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        return self.all(sql + " ORDER BY d.id DESC LIMIT ?", [*params, limit])

    def finish_attempt(self, delivery_id: int, owner: str, attempt: dict, **fields) -> bool:
        """Record an attempt and move the delivery on, unless another worker's lease replaced ours."""
        sets = ", ".join(f"{k} = ?" for k in fields)
        cur = self.execute(
            f"UPDATE deliveries SET {sets}, attempts = attempts + 1, lease_until = NULL, lease_owner = NULL "
            "WHERE id = ? AND lease_owner = ?",
            [*fields.values(), delivery_id, owner],
        )
        self.insert("delivery_attempts", {"delivery_id": delivery_id, "worker": owner, **attempt})
        return cur.rowcount == 1

    def list_attempts(self, delivery_id: int) -> list[dict]:
        return self.all(
            "SELECT at, worker, outcome, status, error, duration_ms FROM delivery_attempts "
            "WHERE delivery_id = ? ORDER BY id",
            (delivery_id,),
        )

    def list_events(self, boundary_id: str) -> list[dict]:
        return self.all("SELECT * FROM events WHERE boundary_id = ? ORDER BY seq", (boundary_id,))


def _private(path: Path) -> None:
    """Make the SQLite file (and its WAL and shared-memory files) readable by this user only, as keys.json is.

    SQLite gives the files it creates the database file's permissions, so the file is created 0600
    before SQLite opens it; an existing one is tightened.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        with contextlib.suppress(FileNotFoundError):
            if name.stat().st_mode & 0o077:
                name.chmod(0o600)


class Store:
    """A boundary store on SQLite or PostgreSQL.

    Parameters
    ----------
    url : str or None
        ``REDLINE_DATABASE_URL``; see :func:`resolve_url`.
    data_dir : path, optional
        Where the default SQLite file lives (``REDLINE_DATA_DIR``).

    Usage::

        store = Store("sqlite:///tmp/b.sqlite3")
        with store.transaction() as tx:
            tx.get_boundary("...")
    """

    def __init__(self, url: str | None = None, *, data_dir: str | os.PathLike | None = None, migrate=True):
        self.config = resolve_url(url, data_dir)
        self.dialect = self.config.dialect
        self._local = threading.local()
        if self.dialect == "sqlite":
            self.config.path.parent.mkdir(parents=True, exist_ok=True)
            _private(self.config.path)
        if migrate:
            self.migrate()

    # -- connections -----------------------------------------------------------------------------------
    def _connect(self):
        if self.dialect == "sqlite":
            # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE for writes).
            conn = sqlite3.connect(
                self.config.path, isolation_level=None, timeout=30, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed change request survives power loss, not just a process kill.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            return conn
        import psycopg
        from psycopg.rows import dict_row

        try:
            # Autocommit: the only transactions are the explicit ``conn.transaction()`` blocks below.
            return psycopg.connect(self.config.url, row_factory=dict_row, connect_timeout=10, autocommit=True)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot reach the PostgreSQL boundary store: {exc}") from exc

    def _conn(self):
        # One connection per thread and process: sqlite3 and psycopg connections are not shared
        # across threads mid-transaction, and a forked child must not reuse its parent's socket.
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            if self.dialect == "sqlite" or not conn.closed:
                return conn
        conn = self._connect()
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Tx]:
        """A transaction around one state change: committed on success, rolled back on any error."""
        conn = self._conn()
        if self.dialect == "sqlite":
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield Tx(self, conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
            return
        import psycopg

        try:
            with conn.transaction():
                yield Tx(self, conn)
        except psycopg.OperationalError as exc:
            with contextlib.suppress(Exception):
                conn.close()
            raise StoreUnavailable(f"the PostgreSQL boundary store failed: {exc}") from exc

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- schema ----------------------------------------------------------------------------------------
    def migrate(self) -> int:
        """Bring the schema up to date; safe when several processes start at once. Returns the version."""
        types = _TYPES[self.dialect]
        with self.transaction() as tx:
            if self.dialect == "postgresql":
                # Serialise concurrent migrators (several replicas starting together).
                tx.execute("SELECT pg_advisory_xact_lock(7355608)")
            tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            row = tx.one("SELECT MAX(version) AS v FROM schema_migrations")
            current = int(row["v"] or 0)
            for number, statements in enumerate(MIGRATIONS, start=1):
                if number <= current:
                    continue
                for statement in statements:
                    tx.execute(statement.format(**types))
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (number, iso(utcnow())),
                )
                current = number
        return current

    def schema_version(self) -> int:
        with self.transaction(write=False) as tx:
            row = tx.one("SELECT MAX(version) AS v FROM schema_migrations")
        return int(row["v"] or 0)
