"""Shared state for routers: the index, settings, the key store, and scope checks on API keys."""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from constraints.index import ConstraintIndex
from datasets.catalogue import Catalogue

from .errors import Problem
from .keys import SCOPES, KeyStore, KeyStoreUnavailable, Principal
from .settings import Settings

OPEN = Principal("anonymous (no API keys configured)", frozenset(SCOPES))


async def app_settings(request: Request) -> Settings:
    """The running app's settings (a dependency; ``api.settings.get_settings`` reads them from the environment)."""
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


ANONYMOUS = Principal("anonymous", frozenset())


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def client_address(request: Request) -> str:
    """The caller's address (uvicorn puts a trusted proxy's ``X-Forwarded-For`` here)."""
    return request.client.host if request.client else "unknown"


def _too_many(wait: float, detail: str) -> Problem:
    return Problem(429, "Too many requests", f"{detail}; retry in {wait:.1f} s", headers={"Retry-After": str(max(1, round(wait)))})


def guard_failures(request: Request) -> None:
    """429 when the caller's address has used up its allowance of failed authentications."""
    settings: Settings = request.app.state.settings
    wait = request.app.state.rate_limits.peek(f"fail:{client_address(request)}", settings.failed_auth_per_s, settings.failed_auth_burst)
    if wait > 0:
        raise _too_many(wait, f"too many failed authentications from {client_address(request)}")


def record_failure(request: Request) -> None:
    """Count one failed authentication against the caller's address."""
    settings: Settings = request.app.state.settings
    request.app.state.rate_limits.take(f"fail:{client_address(request)}", settings.failed_auth_per_s, settings.failed_auth_burst)


def authenticate(request: Request) -> Principal | None:
    """The caller's principal from an API key, OPEN when no keys were ever configured, or None without a key.

    A key that is not recognised or revoked is a 401, counted against the caller's address; past
    ``failed_auth_burst`` of them, keyed requests from that address are 429 until it refills.

    Raises
    ------
    KeyStoreUnavailable
        When the store must hold keys but has none usable (revoked, missing, corrupt): the service
        stays closed rather than open to everyone (``admit`` answers 503).
    """
    keys: KeyStore = request.app.state.keys
    if not keys.usable():
        return OPEN
    token = bearer_token(request)
    if token is None:
        return None
    guard_failures(request)
    principal, why = keys.authenticate(token)
    if principal is None:
        record_failure(request)
        raise Problem(401, "Unauthorized", f"the API key is {'revoked' if why == 'revoked' else 'not recognised'}; ask your administrator for a valid key", headers={"WWW-Authenticate": "Bearer"})
    return principal


def admit(request: Request, *scopes: str, public: bool = False) -> Principal:
    """The one admission rule of every route: the caller's principal, or a 401/403/429 problem.

    Parameters
    ----------
    scopes
        The API key must hold one of these (``admin`` holds all).
    public
        A platform-compatible read (``/entity*``, ``/dataset*``, ``/gis/{team}``): with the
        ``public_read`` setting on (the default) it needs no key, and any valid key will do.

    Callers with a key are rate-limited per key; callers without one per client address, with the
    ``anonymous_rate_limit_*`` settings. The buckets are shared by every worker process.
    """
    settings: Settings = request.app.state.settings
    public = public and settings.public_read
    wanted = " or ".join(f"'{s}'" for s in scopes)
    try:
        principal = authenticate(request)
    except KeyStoreUnavailable as err:
        if not public or bearer_token(request) is not None:
            raise Problem(503, "API keys unavailable", str(err), type="/problems/no-usable-keys", headers={"Retry-After": "60"}) from None
        principal = None  # a public read needs no key, so no key store either
    if principal is None:
        if not public:
            raise Problem(401, "Unauthorized", f"this endpoint needs an API key with scope {wanted}, sent as 'Authorization: Bearer KEY'", headers={"WWW-Authenticate": "Bearer"})
        principal = ANONYMOUS
    elif not public and not any(principal.has(s) for s in scopes):
        raise Problem(403, "Forbidden", f"the API key '{principal.name}' lacks the scope {wanted} this endpoint needs")
    throttle(request, principal)
    request.state.principal = principal
    return principal


def throttle(request: Request, principal: Principal | None = None) -> None:
    """Take one request from the caller's bucket (its API key's, else its address's), or raise 429."""
    state = request.app.state
    settings: Settings = state.settings
    if principal is not None and principal.key_id:
        wait = state.rate_limits.take(f"key:{principal.key_id}", settings.rate_limit_per_s, settings.rate_limit_burst)
        who = f"the API key '{principal.name}'"
    else:
        address = client_address(request)
        wait = state.rate_limits.take(f"addr:{address}", settings.anonymous_rate_limit_per_s, settings.anonymous_rate_limit_burst)
        who = f"requests without an API key from {address}"
    if wait > 0:
        raise _too_many(wait, f"rate limit reached for {who}")


class ApiKey(SecurityBase):
    """An API key holding one of ``scopes``, as a dependency that runs :func:`admit`.

    Being a ``SecurityBase``, it also declares the ``apiKey`` bearer scheme on every operation that
    uses it, so the OpenAPI (and ``/docs``) says which routes need a key from the same declaration
    that enforces it.
    """

    def __init__(self, *scopes: str, public: bool = False):
        self.model = HTTPBearerModel(
            description="An API key (`redline keys create --name N --scope S`) sent as `Authorization: Bearer KEY`; "
            "scopes: check, boundary:write, officer, admin. The platform-compatible reads need none while the "
            "public_read setting is on (the default)."
        )
        self.scheme_name = "apiKey"
        self.scopes, self.public = scopes, public

    async def __call__(self, request: Request) -> Principal:
        return admit(request, *self.scopes, public=self.public)


class ChangeRequestToken(SecurityBase):
    """The applicant's token for one change request (from the link the officer's system sends).

    Checked by the change-request routes themselves against the request it opens; as a dependency it
    only declares the ``changeRequestToken`` bearer scheme in the OpenAPI.
    """

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            description="The applicant's token for one change request, returned once when the officer opens it and "
            "carried by the link sent to the applicant; sent as `Authorization: Bearer TOKEN`. It opens that "
            "request and nothing else, and expires."
        )
        self.scheme_name = "changeRequestToken"

    async def __call__(self, request: Request) -> str | None:
        return bearer_token(request)


def require_scope(*scopes: str, public: bool = False):
    """A dependency that admits only callers whose API key holds one of ``scopes`` (see :func:`admit`)."""
    return Security(ApiKey(*scopes, public=public))


#: Declares the applicant's token on the change-request routes an applicant may call.
APPLICANT_TOKEN = Security(ChangeRequestToken())
