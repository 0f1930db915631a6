"""Request bodies: one size limit, enforced while the body streams, and one JSON reader.

Every request passes through :class:`BodyLimit`, so every endpoint (the check, the widget helpers,
boundaries, validation, uploads, and any added later) gets the same limit, ``max_body_bytes``: a
``Content-Length`` over it is refused before a byte is read, and a body without one (chunked) or
with one that lies is cut off at the first chunk past it. Nothing ever holds more than the limit.

JSON is parsed by :func:`constraints.site.load_json` everywhere, FastAPI's body models included
(:class:`JSONRoute`), so nesting depth and number sizes are refused (422) before parsing goes deep.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from constraints.site import SiteError, SiteLimits, load_json

from .errors import Problem, problem_response

UNBOUNDED = SiteLimits(max_bytes=None)  # the size is BodyLimit's to enforce, as the body arrives


class BodyTooLarge(Problem):
    def __init__(self, limit: int, size: int | None = None):
        told = f"the request body is {size} bytes" if size is not None else f"the request body is over {limit} bytes"
        super().__init__(413, "Payload too large", f"{told}; at most {limit} are accepted (REDLINE_MAX_BODY_BYTES)", type="/problems/too-large")


class BodyLimit:
    """ASGI middleware: no request body over ``limit`` bytes reaches the app, whatever its headers say.

    When the limit is passed, whatever the app then answers (its own 413, or the 400 FastAPI makes of
    a failed read) is replaced by one 413 problem. The rest of the body is discarded by the server.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            return await _answer(BodyTooLarge(limit, declared), scope, send)
        received = 0
        refused: BodyTooLarge | None = None
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = BodyTooLarge(limit)
                    raise refused
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused is not None:  # the app's answer to a body it was not given in full
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _answer(refused, scope, send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if refused is None or started:
                raise
            await _answer(refused, scope, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _answer(problem: Problem, scope: Scope, send: Send) -> None:
    response = problem_response(problem.status, problem.title, problem.detail, type=problem.type, instance=scope.get("path"))

    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, nothing, send)


def parse_json(body: bytes, what: str = "the request body") -> object:
    """JSON from a request body, or a 422 problem naming what is wrong (not JSON, too deep, NaN, huge numbers)."""
    try:
        return load_json(body, UNBOUNDED, what=what)
    except SiteError as err:
        raise Problem(422, "The request is not valid", err.message, type=f"/problems/{err.code}") from None


async def read_body(request: Request) -> bytes:
    """The whole body (at most ``max_body_bytes``: :class:`BodyLimit` stops it as it arrives)."""
    return await request.body()


async def read_json_object(request: Request) -> dict:
    """A JSON object from the body, or a 422 problem saying what is wrong with it."""
    body = await read_body(request)
    if not body:
        raise Problem(422, "The request is not valid", "the request body is empty: send a JSON object", type="/problems/empty")
    data = await request.json() if isinstance(request, _JSONRequest) else parse_json(body)
    if not isinstance(data, dict):
        raise Problem(422, "The request is not valid", "the request body must be a JSON object", type="/problems/not-json")
    return data


class _JSONRequest(Request):
    async def json(self) -> object:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class JSONRoute(APIRoute):
    """A FastAPI route whose JSON bodies are read by :func:`parse_json`, not the standard library's parser.

    The body is read and parsed before FastAPI's own body handling, which would turn any error in
    it into a bare 400: a problem here (413, or 422 naming the fault) is answered as it is.
    """

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def handle(request: Request):
            request = _JSONRequest(request.scope, request.receive)
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if (content_type == "application/json" or content_type.endswith("+json")) and await request.body():
                await request.json()
            return await handler(request)

        return handle
