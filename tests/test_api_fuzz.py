"""Every endpoint in the OpenAPI spec, fuzzed with schemathesis: no input yields a 5xx, every status is
one the operation's OpenAPI declares, and every 4xx is an RFC 9457 problem (application/problem+json with
type, title, status, detail), except on the endpoints copied from the Planning Data Platform, which answer
in the platform's shape ({"detail": ...})."""

from __future__ import annotations

import schemathesis
from api_fixtures import make_app
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings

from api.errors import PLATFORM_PATHS

_app = None


def _started_app():
    """The real app over a private copy of the samples, its index loaded (lifespan run once)."""
    global _app
    if _app is None:
        import tempfile
        from pathlib import Path

        # an empty folder: the app loads the bundled samples into it at start, as `make run` does
        _app = make_app(Path(tempfile.mkdtemp(prefix="redline-fuzz-")))
        client = TestClient(_app)
        client.__enter__()  # runs the lifespan: the index loads and stays loaded for the session
    return _app


schema = schemathesis.openapi.from_asgi("/openapi.json", _started_app())


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_input_makes_a_server_error_and_every_client_error_is_a_problem(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.formatted_path, case.query, response.text[:500])
    declared = case.operation.responses.status_codes
    same_method = case.method.upper() == case.operation.method.upper()  # schemathesis also tries others (405)
    assert not same_method or str(response.status_code) in declared or "default" in declared, (
        f"{case.method} {case.formatted_path} answered {response.status_code}, which its OpenAPI does not declare ({', '.join(declared)})"
    )
    content_type = response.headers["content-type"]
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    if response.status_code >= 400 and PLATFORM_PATHS.fullmatch(case.formatted_path):
        detail = response.json()["detail"]
        assert content_type == "application/json" and detail, (case.formatted_path, detail)
        assert isinstance(detail, str) or all({"loc", "msg", "type"} <= set(item) for item in detail), detail
    elif response.status_code >= 400:
        assert (
            response.headers["content-type"][0].startswith("application/problem+json")
            if isinstance(response.headers["content-type"], list)
            else response.headers["content-type"].startswith("application/problem+json")
        ), (case.method, case.formatted_path, response.status_code, response.headers)
        body = response.json()
        assert (
            body["status"] == response.status_code and body["title"] and body["detail"] and "type" in body
        ), body
