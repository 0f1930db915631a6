"""One place that turns domain exceptions into RFC 9457 ``application/problem+json`` answers."""

from __future__ import annotations

import inspect
import json
import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from boundary import errors as boundary_errors
from boundary.errors import (
    BoundaryError,
    BoundaryTooLarge,
    Conflict,
    Forbidden,
    InvalidBoundary,
    InvalidRequest,
    InvalidState,
    StoreUnavailable,
    Unauthorized,
)
from constraints.site import SiteError, SiteTooLarge
from datasets.cache import CacheError
from datasets.catalogue import CatalogueError

from .check_process import CheckProcessLost
from .check_thread import CheckOverdue

log = logging.getLogger("redline.api")
PROBLEM = "application/problem+json"

#: The endpoints copied from the Planning Data Platform: their errors take its shape, so its clients parse them.
PLATFORM_PATHS = re.compile(r"/(entity(/[^/]+)?\.(json|geojson)|dataset(/[^/]+)?\.json|(curie|prefix)/.+\.(json|geojson))")

# pydantic 1's wording and types, which the platform's answers (and clients) carry: v2 type -> (msg, type, ctx key)
_PYDANTIC1 = {
    "missing": ("field required", "value_error.missing", None),
    "int_parsing": ("value is not a valid integer", "type_error.integer", None),
    "int_from_float": ("value is not a valid integer", "type_error.integer", None),
    "float_parsing": ("value is not a valid float", "type_error.float", None),
    "bool_parsing": ("value could not be parsed to a boolean", "type_error.bool", None),
    "date_parsing": ("invalid date format", "value_error.date", None),
    "date_from_datetime_parsing": ("invalid date format", "value_error.date", None),
    "date_from_datetime_inexact": ("invalid date format", "value_error.date", None),
    "greater_than_equal": ("ensure this value is greater than or equal to {}", "value_error.number.not_ge", "ge"),
    "greater_than": ("ensure this value is greater than {}", "value_error.number.not_gt", "gt"),
    "less_than_equal": ("ensure this value is less than or equal to {}", "value_error.number.not_le", "le"),
    "less_than": ("ensure this value is less than {}", "value_error.number.not_lt", "lt"),
    "string_too_long": ("ensure this value has at most {} characters", "value_error.any_str.max_length", "max_length"),
    "string_pattern_mismatch": ('string does not match regex "{}"', "value_error.str.regex", "pattern"),
}


class Problem(Exception):
    """An error with an HTTP status, raised by routers for what the domain does not cover.

    Items of ``errors`` may carry the platform's ``loc``, ``msg``, ``type`` and ``ctx`` beside the
    problem's ``pointer`` and ``detail``: the platform-compatible endpoints answer with those.
    """

    def __init__(self, status: int, title: str, detail: str, *, type: str = "about:blank", headers: dict | None = None, **extra):
        super().__init__(detail)
        self.status, self.title, self.detail, self.type = status, title, detail, type
        self.headers = headers or {}
        self.extra = extra


def problem_response(status: int, title: str, detail: str, *, type: str = "about:blank", instance: str | None = None, headers: dict | None = None, **extra) -> JSONResponse:
    body = {"type": type, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


#: Each domain exception's HTTP status and problem title: the one table (as tipg's ``DEFAULT_STATUS_CODES``).
#: The core's exceptions carry a ``code`` and a ``pointer``, never a status; the nearest class listed wins.
DOMAIN_ERRORS: dict[type[Exception], tuple[int, str]] = {
    SiteTooLarge: (413, "Payload too large"),
    SiteError: (422, "The site cannot be checked"),
    BoundaryTooLarge: (413, "Boundary too large"),
    InvalidBoundary: (422, "Invalid boundary"),
    InvalidRequest: (422, "The request is not valid"),
    boundary_errors.NotFound: (404, "Not found"),
    Conflict: (409, "Conflict"),
    InvalidState: (409, "Invalid state"),
    Unauthorized: (401, "Unauthorized"),
    Forbidden: (403, "Forbidden"),
    StoreUnavailable: (503, "Store unavailable"),
    BoundaryError: (400, "Bad request"),
    CatalogueError: (400, "Bad request"),
}


def status_and_title(exc: Exception) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in DOMAIN_ERRORS:
            return DOMAIN_ERRORS[cls]
    raise LookupError(f"{type(exc).__name__} is not in errors.DOMAIN_ERRORS")


def _site_error(request: Request, exc: SiteError) -> JSONResponse:
    status, title = status_and_title(exc)
    errors = [{"pointer": exc.pointer or "/", "detail": exc.message}]
    return problem_response(status, title, exc.message, type=f"/problems/{exc.code}", instance=request.url.path, errors=errors, limit=exc.limit)


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        errors.append({"pointer": "/" + "/".join(loc[1:]) if len(loc) > 1 else "/" + "/".join(loc), "in": loc[0] if loc else "body", "detail": err.get("msg", "invalid")})
    detail = "; ".join(f"{e['in']} {e['pointer']}: {e['detail']}" for e in errors[:5])
    return problem_response(422, "The request is not valid", detail, type="/problems/invalid-request", instance=request.url.path, errors=errors)


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    titles = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized", 403: "Forbidden", 413: "Payload too large", 429: "Too many requests"}
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"there is nothing at {request.url.path}; see /docs for the endpoints"
    return problem_response(exc.status_code, titles.get(exc.status_code, "Error"), detail, instance=request.url.path, headers=getattr(exc, "headers", None))


def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    """Boundary and catalogue errors: status and title from :data:`DOMAIN_ERRORS`, the rest from the error."""
    status, title = status_and_title(exc)
    code = getattr(exc, "code", None)
    return problem_response(status, title, str(exc), type=f"/problems/{code}" if code else "about:blank", instance=request.url.path, **(getattr(exc, "extra", None) or {}))


def _problem(request: Request, exc: Problem) -> JSONResponse:
    return problem_response(exc.status, exc.title, exc.detail, type=exc.type, instance=request.url.path, headers=exc.headers, **exc.extra)


def _cache_error(request: Request, exc: CacheError) -> JSONResponse:
    return problem_response(503, "Constraint data unavailable", str(exc), instance=request.url.path, headers={"Retry-After": "5"})


def _check_interrupted(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, CheckOverdue):
        return problem_response(503, "Check took too long", str(exc), type="/problems/check-deadline", instance=request.url.path, headers={"Retry-After": "1"}, deadline_s=exc.deadline_s)
    detail = f"{exc}; the process answering checks was replaced: send the check again"
    return problem_response(503, "Check interrupted", detail, type="/problems/check-interrupted", instance=request.url.path, headers={"Retry-After": "1"})


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(500, "Internal error", "redline failed to answer this request; the error is logged. Please report it.", instance=request.url.path)


def handler_for(app: FastAPI, exc: Exception):
    """The app's handler for ``exc``: the nearest of its classes that has one, else the catch-all."""
    for cls in type(exc).__mro__:
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            return handler
    return _unexpected


def answering_errors(app: FastAPI, endpoint):
    """A plain ASGI ``endpoint`` served outside the router, with the app's exception handlers around it.

    What the router's ``ExceptionMiddleware`` and ``ServerErrorMiddleware`` do for routes: an exception
    raised before the answer has started becomes the same problem+json answer.
    """

    async def guarded(scope, receive, send):
        started = False

        async def tracking_send(message):
            nonlocal started
            started = True
            await send(message)

        try:
            await endpoint(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # half an answer is on the wire; nothing sensible can follow it
                raise
            response = handler_for(app, exc)(Request(scope, receive), exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)

    return guarded


# What the service's shared layers answer, so every operation's OpenAPI names the statuses it can return.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
GUARDED = {
    "401": "No valid API key (or change-request token) was sent",
    "403": "The API key lacks the scope this operation needs",
    "429": "Rate limit reached; see Retry-After",
    "503": "Not ready (the layers are loading) or no usable API key is configured; see Retry-After",
}
WITH_BODY = {"400": "The body cannot be read as what its Content-Type says (e.g. a malformed multipart form)", "413": "The request body is larger than REDLINE_MAX_BODY_BYTES", "422": "The request is not valid"}
WITH_PARAMETERS = {"422": "A parameter is not valid"}
WITH_PATH_ID = {"404": "Nothing with that id here"}
CHANGES_STATE = {"409": "The record is not in a state that allows this (e.g. a change request already closed)"}


def declare_problems(schema: dict) -> dict:
    """Add to each operation of an OpenAPI schema the problem answers it can give and does not declare.

    Declared here, by what an operation has (an API key check, a body, parameters, an id in its path,
    a workflow state), rather than route by route, so a new route cannot forget them.
    """
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            answers: dict[str, str] = {}
            if path not in OPEN_PATHS:
                answers |= GUARDED
            if "requestBody" in operation or method in ("post", "put", "patch"):
                answers |= WITH_BODY
            if operation.get("parameters"):
                answers |= WITH_PARAMETERS
            if "{" in path:
                answers |= WITH_PATH_ID
            if "{" in path and method in ("post", "delete") and "/widget/" not in path:
                answers |= CHANGES_STATE
            for status, description in answers.items():
                operation["responses"].setdefault(status, {"description": description})
    return schema
def invalid_parameter(name: str, msg: str, *, type: str = "value_error", ctx: dict | None = None, parsed: bool = True) -> Problem:
    """A 422 for one query parameter, in both shapes: the problem's pointer and the platform's ``loc``.

    ``parsed``: the platform reports what its validators refuse at ``[name]`` and what does not
    parse at all (not a number, not a date) at ``["query", name]``; keep that distinction.
    """
    item = {"pointer": f"/{name}", "in": "query", "detail": msg, "loc": [name] if parsed else ["query", name], "msg": msg, "type": type}
    if ctx:
        item["ctx"] = ctx
    return Problem(422, "The request is not valid", f"{name}: {msg}", type="/problems/invalid-request", errors=[item])


def _pydantic1(error: dict) -> dict:
    """One pydantic 2 validation error in the shape pydantic 1 gave it, as the platform answers."""
    item = {"loc": list(error.get("loc", ())), "msg": error.get("msg", "invalid"), "type": "value_error"}
    ctx = error.get("ctx") or {}
    kind = error.get("type", "")
    if kind == "enum":
        permitted = str(ctx.get("expected", "")).replace(" or ", ", ")
        item.update(msg=f"value is not a valid enumeration member; permitted: {permitted}", type="type_error.enum")
    elif kind in _PYDANTIC1:
        msg, type_, key = _PYDANTIC1[kind]
        item.update(msg=msg.format(ctx.get(key)) if key else msg, type=type_)
        if key:
            item["ctx"] = {"limit_value" if key != "pattern" else "pattern": ctx.get(key)}
    return item


def platform_error(body: dict, exc: Exception) -> dict:
    """The platform's error body for an answer redline rendered as a problem.

    Refused parameters are a list under ``detail`` (FastAPI's 422 shape); anything else, as the
    platform's ``HTTPException`` gives it, a string under ``detail``.
    """
    if isinstance(exc, RequestValidationError):
        return {"detail": [_pydantic1(e) for e in exc.errors()]}
    items = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    if body["status"] in (400, 422) or any("loc" in e for e in items):
        detail = [
            {k: e[k] for k in ("loc", "msg", "type", "ctx") if k in e}
            if "loc" in e
            else {"loc": [e.get("in", "query"), e.get("pointer", "/").lstrip("/")], "msg": e.get("detail", body["detail"]), "type": "value_error"}
            for e in items
        ]
        return {"detail": detail or [{"loc": [], "msg": body["detail"], "type": "value_error"}]}
    return {"detail": body["detail"]}


def _speaking_platform(handler):
    """``handler``, answering in the platform's shape on the platform-compatible endpoints."""

    async def answer(request: Request, exc: Exception):
        response = handler(request, exc)
        if inspect.isawaitable(response):
            response = await response
        if not PLATFORM_PATHS.fullmatch(request.url.path):
            return response
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        body = platform_error(json.loads(response.body), exc)
        return JSONResponse(body, status_code=response.status_code, headers=headers)

    return answer


def install(app: FastAPI, domain_errors: tuple[type[Exception], ...] = ()) -> None:
    add = lambda error, handler: app.add_exception_handler(error, _speaking_platform(handler))  # noqa: E731
    add(SiteError, _site_error)
    add(RequestValidationError, _validation_error)
    add(StarletteHTTPException, _http_error)
    add(Problem, _problem)
    add(CacheError, _cache_error)
    add(CheckOverdue, _check_interrupted)
    add(CheckProcessLost, _check_interrupted)
    add(CatalogueError, _domain_error)
    add(BoundaryError, _domain_error)
    for error in domain_errors:
        add(error, _domain_error)
    add(Exception, _unexpected)
