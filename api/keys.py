"""API keys with scopes, stored hashed in the data folder (``keys.json``), shared by replicas.

A key is shown once, when created; the file keeps only its SHA-256. Scopes: ``check``,
``boundary:write``, ``officer`` (which holds ``check`` too), ``admin`` (which holds every scope).

A service with no keys at all is open (development on loopback). Once a store is *required* (the
service started with keys, or was told to by ``require_keys``), losing every usable key never opens
it: revoking the last key, deleting ``keys.json`` or corrupting it closes the protected endpoints
(:class:`KeyStoreUnavailable`) until a key is created again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from datasets.cache import atomic_write_bytes, now_iso

SCOPES = ("check", "boundary:write", "officer", "admin")
# An officer re-checks and amends boundaries on the officer page, which uses the check and the widget's
# helpers (scope ``check``): an officer key holds that scope too.
IMPLIED = {"admin": frozenset(SCOPES), "officer": frozenset({"officer", "check"})}
PREFIX = "rl_"


class KeyStoreError(ValueError):
    pass


class KeyStoreUnavailable(KeyStoreError):
    """No usable key in a store that must hold one: protected requests are refused, never let through."""


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]
    key_id: str | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes or any(scope in IMPLIED.get(held, ()) for held in self.scopes)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyStore:
    """The keys in ``data_dir/keys.json``.

    ``required`` latches on: set at start when keys exist (or by the caller), and again whenever an
    active key is seen, so a service that was ever protected stays protected in this process.
    """

    def __init__(self, data_dir: Path | str, *, required: bool = False):
        self.path = Path(data_dir) / "keys.json"
        self._cache: tuple[tuple[int, int], dict] | None = None
        self.required = required
        try:
            self.required = required or bool(self._read()["keys"])
        except KeyStoreError:
            self.required = True  # unreadable at start: closed until it is readable again

    def _read(self) -> dict:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {"keys": {}}
        stamp = (stat.st_mtime_ns, stat.st_size)
        if self._cache and self._cache[0] == stamp:
            return self._cache[1]
        try:
            data = json.loads(self.path.read_bytes())
            if not isinstance(data, dict) or not isinstance(data.get("keys"), dict) or not all(isinstance(k, dict) and isinstance(k.get("hash"), str) for k in data["keys"].values()):
                raise ValueError("it does not hold a 'keys' object of hashed keys")
        except (ValueError, OSError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise KeyStoreUnavailable(f"the API key store {self.path} is unreadable ({err}); restore it from a backup or remove it and create keys again with 'redline keys create'") from None
        self._cache = (stamp, data)
        return data

    def usable(self) -> bool:
        """Whether protected requests need a key: True with active keys, False for a store never keyed.

        Raises :class:`KeyStoreUnavailable` when the store is required but holds no active key, or
        cannot be read.
        """
        active = self.any_active()
        if active:
            self.required = True
            return True
        if self.required:
            why = "has no active API key (the last one was revoked)" if self.path.exists() else "is missing"
            raise KeyStoreUnavailable(f"the API key store {self.path} {why}, so protected endpoints are closed; an administrator can create a key with 'redline keys create --name NAME --scope SCOPE'")
        return False

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def any_active(self) -> bool:
        return any(not k.get("revoked_at") for k in self._read()["keys"].values())

    def create(self, name: str, scopes: list[str]) -> tuple[str, str]:
        """Returns (key id, the key itself). The key is not stored and cannot be shown again."""
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            raise KeyStoreError(f"unknown scope(s) {unknown or scopes}; choose from {', '.join(SCOPES)}")
        token = PREFIX + secrets.token_urlsafe(32)
        key_id = secrets.token_hex(6)
        with self._locked():
            data = self._read()
            data = {"keys": dict(data["keys"])}
            data["keys"][key_id] = {"name": name, "scopes": sorted(set(scopes)), "hash": _hash(token), "created_at": now_iso(), "revoked_at": None}
            atomic_write_bytes(self.path, json.dumps(data, indent=1).encode())
        return key_id, token

    def revoke(self, key_id_or_name: str) -> int:
        with self._locked():
            data = {"keys": dict(self._read()["keys"])}
            hits = [k for k, v in data["keys"].items() if (k == key_id_or_name or v["name"] == key_id_or_name) and not v.get("revoked_at")]
            for k in hits:
                data["keys"][k] = {**data["keys"][k], "revoked_at": now_iso()}
            if hits:
                atomic_write_bytes(self.path, json.dumps(data, indent=1).encode())
        return len(hits)

    def list(self) -> list[dict]:
        return [{"id": k, **{f: v[f] for f in ("name", "scopes", "created_at", "revoked_at")}} for k, v in self._read()["keys"].items()]

    def authenticate(self, token: str) -> tuple[Principal | None, str]:
        """The principal for a key, or None with why ('unknown' or 'revoked')."""
        digest = _hash(token)
        for key_id, key in self._read()["keys"].items():
            if secrets.compare_digest(key["hash"], digest):
                if key.get("revoked_at"):
                    return None, "revoked"
                return Principal(key["name"], frozenset(key["scopes"]), key_id), "ok"
        return None, "unknown"
