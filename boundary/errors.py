"""Domain exceptions of the boundary package.

Each class carries the HTTP ``status_code`` and problem ``title`` the API maps it to, so the API's one
generic handler (``api/errors.py``) turns any :class:`BoundaryError` into ``application/problem+json``
without a table of its own. The core never imports the API: these are plain attributes.
"""

from __future__ import annotations


class BoundaryError(Exception):
    """Base class: something the caller asked for cannot be done.

    Attributes
    ----------
    status_code : int
        HTTP status the API answers with.
    title : str
        Short, stable problem title (RFC 9457 ``title``).
    code : str
        Machine-readable reason, also used to build the problem ``type`` URI.
    detail : str
        Human, actionable message (RFC 9457 ``detail``).
    pointer : str or None
        JSON pointer to the offending part of the input, where there is one.
    """

    status_code = 400
    title = "Bad request"
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

    def to_problem(self) -> dict:
        """The RFC 9457 body for this error."""
        body = {
            "type": f"https://redline.dev/problems/{self.code}",
            "title": self.title,
            "status": self.status_code,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body


class InvalidBoundary(BoundaryError):
    """The geometry is not an acceptable red-line boundary (unrepairable or outside the limits)."""

    status_code = 422
    title = "Invalid boundary"
    code = "invalid-boundary"


class BoundaryTooLarge(InvalidBoundary):
    """The uploaded file or geometry exceeds a size limit."""

    status_code = 413
    title = "Boundary too large"
    code = "too-large"


class NotFound(BoundaryError):
    status_code = 404
    title = "Not found"
    code = "not-found"


class Conflict(BoundaryError):
    """Someone else changed the boundary first (optimistic version check) or a request is already open."""

    status_code = 409
    title = "Conflict"
    code = "conflict"


class InvalidState(BoundaryError):
    """The change request is not in a state that allows this action (e.g. approving a cancelled one)."""

    status_code = 409
    title = "Invalid state"
    code = "invalid-state"


class Unauthorized(BoundaryError):
    """No credentials, or a token that is unknown or expired."""

    status_code = 401
    title = "Unauthorized"
    code = "unauthorized"


class Forbidden(BoundaryError):
    """Credentials that are valid but do not open this resource (e.g. a token for another request)."""

    status_code = 403
    title = "Forbidden"
    code = "forbidden"


class StoreUnavailable(BoundaryError):
    """The database cannot be reached; the caller may retry."""

    status_code = 503
    title = "Store unavailable"
    code = "store-unavailable"


class InvalidRequest(BoundaryError):
    """A well-formed request whose content makes no sense (unknown constraint key, missing reason...)."""

    status_code = 422
    title = "Invalid request"
    code = "invalid-request"
