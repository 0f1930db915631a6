"""Shared state for routers: the index, settings, the key store, and scope checks on API keys."""

from __future__ import annotations

import threading
import time

from fastapi import Depends, Request

from constraints.index import ConstraintIndex
from datasets.catalogue import Catalogue

from .errors import Problem
from .keys import SCOPES, KeyStore, KeyStoreUnavailable, Principal
from .settings import Settings

OPEN = Principal("anonymous (no API keys configured)", frozenset(SCOPES))


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_index(request: Request) -> ConstraintIndex:
    index = request.app.state.index
    if index is None or index.snapshot is None:
        raise Problem(503, "Not ready", "the constraint layers are still loading; try again in a few seconds", headers={"Retry-After": "5"})
    return index


async def get_catalogue(request: Request) -> Catalogue:
    return request.app.state.catalogue


async def get_keys(request: Request) -> KeyStore:
    return request.app.state.keys


class TokenBucket:
    """Per-key rate limit: ``rate`` requests a second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> float:
        """0 when allowed, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(who, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._state[who] = (tokens - 1, now)
                return 0.0
            self._state[who] = (tokens, now)
            return (1 - tokens) / self.rate


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(request: Request) -> Principal | None:
    """The caller's principal from an API key, OPEN when no keys were ever configured, or None without a valid key.

    A store that must hold keys but has none usable (revoked, missing, corrupt) answers 503: the
    service stays closed rather than open to everyone.
    """
    keys: KeyStore = request.app.state.keys
    try:
        if not keys.usable():
            return OPEN
        token = bearer_token(request)
        if token is None:
            return None
        principal, why = keys.authenticate(token)
    except KeyStoreUnavailable as err:
        raise Problem(503, "API keys unavailable", str(err), type="/problems/no-usable-keys", headers={"Retry-After": "60"}) from None
    if principal is None:
        raise Problem(401, "Unauthorised", f"the API key is {'revoked' if why == 'revoked' else 'not recognised'}; ask your administrator for a valid key", headers={"WWW-Authenticate": "Bearer"})
    return principal


def admit(request: Request, scope: str) -> Principal:
    """The caller's principal if its API key holds ``scope`` and it is within its rate limit; else a Problem."""
    principal = authenticate(request)
    if principal is None:
        raise Problem(401, "Unauthorised", f"this endpoint needs an API key with scope '{scope}', sent as 'Authorization: Bearer KEY'", headers={"WWW-Authenticate": "Bearer"})
    if not principal.has(scope):
        raise Problem(403, "Forbidden", f"the API key '{principal.name}' lacks the '{scope}' scope this endpoint needs")
    limiter: TokenBucket = request.app.state.rate_limiter
    wait = limiter.take(principal.key_id or "anonymous")
    if wait > 0:
        raise Problem(429, "Too many requests", f"rate limit reached for '{principal.name}'; retry in {wait:.1f} s", headers={"Retry-After": str(max(1, round(wait)))})
    request.state.principal = principal
    return principal


def require_scope(scope: str):
    """A dependency that admits only callers whose API key holds ``scope``."""

    async def dependency(request: Request) -> Principal:
        return admit(request, scope)

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return Depends(dependency)
