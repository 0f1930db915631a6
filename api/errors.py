"""One place that turns domain exceptions into RFC 9457 ``application/problem+json`` answers."""

from __future__ import annotations

import inspect
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from constraints.site import SiteError
from datasets.cache import CacheError
from datasets.catalogue import CatalogueError

log = logging.getLogger("redline.api")
PROBLEM = "application/problem+json"


class Problem(Exception):
    """An error with an HTTP status, raised by routers for what the domain does not cover."""

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


def _site_error(request: Request, exc: SiteError) -> JSONResponse:
    errors = [{"pointer": exc.pointer or "/", "detail": exc.message}]
    title = "Payload too large" if exc.status == 413 else "The site cannot be checked"
    return problem_response(exc.status, title, exc.message, type=f"/problems/{exc.code}", instance=request.url.path, errors=errors)


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        errors.append({"pointer": "/" + "/".join(loc[1:]) if len(loc) > 1 else "/" + "/".join(loc), "in": loc[0] if loc else "body", "detail": err.get("msg", "invalid")})
    detail = "; ".join(f"{e['in']} {e['pointer']}: {e['detail']}" for e in errors[:5])
    return problem_response(422, "The request is not valid", detail, type="/problems/invalid-request", instance=request.url.path, errors=errors)


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    titles = {404: "Not found", 405: "Method not allowed", 401: "Unauthorised", 403: "Forbidden", 413: "Payload too large", 429: "Too many requests"}
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"there is nothing at {request.url.path}; see /docs for the endpoints"
    return problem_response(exc.status_code, titles.get(exc.status_code, "Error"), detail, instance=request.url.path, headers=getattr(exc, "headers", None))


def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    """Boundary and other domain errors declare ``status_code`` and ``title`` on their class."""
    status = getattr(exc, "status_code", 400)
    title = getattr(exc, "title", type(exc).__name__)
    code = getattr(exc, "code", None)
    return problem_response(status, title, str(exc), type=f"/problems/{code}" if code else "about:blank", instance=request.url.path, **(getattr(exc, "extra", None) or {}))


def _problem(request: Request, exc: Problem) -> JSONResponse:
    return problem_response(exc.status, exc.title, exc.detail, type=exc.type, instance=request.url.path, headers=exc.headers, **exc.extra)


def _cache_error(request: Request, exc: CacheError) -> JSONResponse:
    return problem_response(503, "Constraint data unavailable", str(exc), instance=request.url.path, headers={"Retry-After": "5"})


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
    problem = {"content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = {
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status", "detail"],
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}, "instance": {"type": "string"}, "errors": {"type": "array", "items": {"type": "object"}}},
    }
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
                operation["responses"].setdefault(status, {"description": description, **problem})
    return schema


def install(app: FastAPI, domain_errors: tuple[type[Exception], ...] = ()) -> None:
    app.add_exception_handler(SiteError, _site_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(CacheError, _cache_error)
    app.add_exception_handler(CatalogueError, _domain_error)
    for error in domain_errors:
        app.add_exception_handler(error, _domain_error)
    app.add_exception_handler(Exception, _unexpected)
