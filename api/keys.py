"""API keys with scopes, stored hashed in the data folder (``keys.json``), shared by replicas.

A key is shown once, when created; the file keeps only its SHA-256. Scopes: ``check``,
``boundary:write``, ``officer``, ``admin`` (``admin`` holds every scope).
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
PREFIX = "rl_"


class KeyStoreError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]
    key_id: str | None = None

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyStore:
    def __init__(self, data_dir: Path | str):
        self.path = Path(data_dir) / "keys.json"
        self._cache: tuple[float, dict] | None = None

    def _read(self) -> dict:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {"keys": {}}
        if self._cache and self._cache[0] == mtime:
            return self._cache[1]
        data = json.loads(self.path.read_text())
        self._cache = (mtime, data)
        return data

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
