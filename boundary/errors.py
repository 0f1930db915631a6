"""Domain exceptions of the boundary package.

Each carries a machine-readable ``code``, a human ``detail`` and, where there is one, a ``pointer`` into
the input; the HTTP status and title each maps to live in one table, ``api/errors.py``. The core never
imports the API.
"""

from __future__ import annotations


class BoundaryError(Exception):
    """Base class: something the caller asked for cannot be done.

    Attributes
    ----------
    code : str
        Machine-readable reason, also used to build the problem ``type`` URI.
    detail : str
        Human, actionable message (RFC 9457 ``detail``).
    pointer : str or None
        JSON pointer to the offending part of the input, where there is one.
    """

    code = "bad-request"

    def __init__(self, detail: str, *, code: str | None = None, pointer: str | None = None, **extra):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.pointer = pointer
        if pointer is not None:
            extra.setdefault("errors", [{"pointer": pointer, "detail": detail}])
        self.extra = extra



class InvalidBoundary(BoundaryError):
    """The geometry is not an acceptable red-line boundary (unrepairable or outside the limits)."""

    code = "invalid-boundary"


class BoundaryTooLarge(InvalidBoundary):
    """The uploaded file or geometry exceeds a size limit."""

    code = "too-large"


class NotFound(BoundaryError):
    code = "not-found"


class Conflict(BoundaryError):
    """Someone else changed the boundary first (optimistic version check) or a request is already open."""

    code = "conflict"


class InvalidState(BoundaryError):
    """The change request is not in a state that allows this action (e.g. approving a cancelled one)."""

    code = "invalid-state"


class Unauthorized(BoundaryError):
    """No credentials, or a token that is unknown or expired."""

    code = "unauthorized"


class Forbidden(BoundaryError):
    """Credentials that are valid but do not open this resource (e.g. a token for another request)."""

    code = "forbidden"


class StoreUnavailable(BoundaryError):
    """The database cannot be reached; the caller may retry."""

    code = "store-unavailable"


class InvalidRequest(BoundaryError):
    """A well-formed request whose content makes no sense (unknown constraint key, missing reason...)."""

    code = "invalid-request"
