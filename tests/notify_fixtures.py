"""Real HTTP receivers on loopback for the notification tests: a fake GOV.UK Notify and a webhook receiver.

The fake Notify checks each request the way Notify's API documents it (the "REST API" page of
docs.notifications.service.gov.uk): ``POST /v2/notifications/email`` with JSON, a JWT bearer token signed
HS256 with the API key's secret, ``iss`` the service id and ``iat`` within 30 seconds of now, an
``email_address`` and a known ``template_id``, and every ``((placeholder))`` of the template supplied in
``personalisation``. It answers 201 with the documented body, or the documented error shape
(``{"errors": [{"error", "message"}], "status_code"}``).

The webhook receiver verifies each message's Standard Webhooks signature with the shared secret
(``standardwebhooks``) and keeps what arrived, valid or not.

Both can be told to fail the next N requests (HTTP 500/503) to exercise retries.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PLACEHOLDER = re.compile(r"\(\(([^)]+)\)\)")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1:free port in a daemon thread."""

    def __init__(self, handler):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.RLock()
        self.fail_next = 0
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _take_failure(self) -> bool:
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return True
            return False

    def wait_for(self, predicate, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self):
                    return
            time.sleep(0.05)
        raise AssertionError(f"{type(self).__name__} did not see what was expected within {timeout} s")


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet test output
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _answer(self, status: int, body: dict | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# --- GOV.UK Notify ------------------------------------------------------------------------------------
class FakeNotify(_Server):
    """Notify's email endpoint. ``api_key`` is a key in Notify's format for this fake service."""

    def __init__(self, templates: dict[str, str]):
        super().__init__(_NotifyHandler)
        self.service_id = str(uuid.uuid4())
        self.secret = str(uuid.uuid4())
        self.api_key = f"redline_test-{self.service_id}-{self.secret}"
        self.templates = dict(templates)  # template id -> body with ((placeholders))
        self.sent: list[dict] = []  # accepted emails: request body plus the rendered text
        self.refused: list[tuple[int, str]] = []


class _NotifyHandler(_Handler):
    def _error(self, status: int, error: str, message: str) -> None:
        self.server.owner.refused.append((status, message))
        self._answer(status, {"errors": [{"error": error, "message": message}], "status_code": status})

    def do_POST(self):  # noqa: N802 - http.server's naming
        notify: FakeNotify = self.server.owner
        raw = self._body()
        if self.path != "/v2/notifications/email":
            return self._error(404, "NotFoundError", f"no route {self.path}")
        if notify._take_failure():
            return self._error(500, "Exception", "Internal server error")
        if not self.headers.get("content-type", "").startswith("application/json"):
            return self._error(400, "BadRequestError", "Content-Type must be application/json")
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            return self._error(401, "AuthError", "Unauthorized: authentication token must be provided")
        try:
            header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
            claims = jwt.decode(token, notify.secret, algorithms=["HS256"], options={"verify_iat": False})
        except (jwt.PyJWTError, ValueError) as exc:
            return self._error(403, "AuthError", f"Invalid token: signature, api token not found ({exc})")
        if header.get("typ") != "JWT" or header.get("alg") != "HS256":
            return self._error(403, "AuthError", "Invalid token: algorithm used is not HS256")
        if claims.get("iss") != notify.service_id:
            return self._error(403, "AuthError", "Invalid token: service not found")
        if abs(time.time() - int(claims.get("iat", 0))) > 30:
            return self._error(403, "AuthError", "Error: Your system clock must be accurate to within 30 seconds")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(400, "BadRequestError", "Invalid JSON supplied in POST data")
        address = body.get("email_address")
        if not isinstance(address, str) or not EMAIL.match(address):
            return self._error(400, "ValidationError", "email_address Not a valid email address")
        template = notify.templates.get(body.get("template_id"))
        if template is None:
            return self._error(400, "BadRequestError", "Template not found")
        personalisation = body.get("personalisation") or {}
        missing = [p for p in PLACEHOLDER.findall(template) if p not in personalisation]
        if missing:
            return self._error(400, "BadRequestError", f"Missing personalisation: {', '.join(missing)}")
        rendered = PLACEHOLDER.sub(lambda m: str(personalisation[m.group(1)]), template)
        notification_id = str(uuid.uuid4())
        with notify.lock:
            notify.sent.append(
                {"body": body, "text": rendered, "user_agent": self.headers.get("user-agent"), "id": notification_id}
            )
        self._answer(
            201,
            {
                "id": notification_id,
                "reference": body.get("reference"),
                "content": {
                    "subject": "A change to your planning application's site boundary",
                    "body": rendered,
                    "from_email": "planning@notifications.service.gov.uk",
                    "one_click_unsubscribe_url": None,
                },
                "uri": f"{notify.url}/v2/notifications/{notification_id}",
                "template": {
                    "id": body["template_id"],
                    "version": 1,
                    "uri": f"{notify.url}/services/{notify.service_id}/templates/{body['template_id']}",
                },
            },
        )


# --- webhook receiver ----------------------------------------------------------------------------------
class WebhookReceiver(_Server):
    """Accepts Standard Webhooks messages and verifies each one's signature."""

    def __init__(self, secret: str | None = None):
        super().__init__(_WebhookHandler)
        self.secret = secret or "whsec_" + base64.b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode()
        self.received: list[dict] = []  # {"id", "type", "data", "valid", "headers"}

    def events(self, valid_only: bool = True) -> list[dict]:
        with self.lock:
            return [m for m in self.received if m["valid"] or not valid_only]

    def ids(self) -> list[str]:
        return [m["id"] for m in self.events()]


class _WebhookHandler(_Handler):
    def do_POST(self):  # noqa: N802
        receiver: WebhookReceiver = self.server.owner
        raw = self._body()
        if receiver._take_failure():
            return self._answer(503, {"error": "try again later"})
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            payload = Webhook(receiver.secret).verify(raw, headers)
            valid = True
        except WebhookVerificationError:
            payload, valid = json.loads(raw or b"null"), False
        with receiver.lock:
            receiver.received.append(
                {
                    "id": headers.get("webhook-id"),
                    "type": (payload or {}).get("type"),
                    "data": (payload or {}).get("data"),
                    "valid": valid,
                    "headers": headers,
                }
            )
        self._answer(204 if valid else 401)
