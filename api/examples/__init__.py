"""OpenAPI examples captured from real answers over the bundled sample layers.

``examples.json`` holds, for each operation (``"GET /entity.json"``), the request that was sent and
the answer the service gave over the real samples (long lists abridged to their first items).
:func:`attach` puts them into ``/openapi.json`` (and so ``/docs``). Regenerate after a change
to an answer's shape with::

    python -m api.examples

which loads the samples into a temporary cache, runs the app in-process and rewrites the file.
"""

from __future__ import annotations

import copy
import json
import tempfile
from functools import lru_cache
from pathlib import Path

PATH = Path(__file__).with_name("examples.json")

# A real site in the centre of Bath: inside the Bath conservation area and the World Heritage Site,
# on listed buildings of Westgate Street.
BATH_SITE = {
    "type": "Feature",
    "properties": {"name": "Westgate Street, Bath"},
    "geometry": {
        "type": "Polygon",
        "coordinates": [
            [
                [-2.3614, 51.3812],
                [-2.3606, 51.3812],
                [-2.3606, 51.3817],
                [-2.3614, 51.3817],
                [-2.3614, 51.3812],
            ]
        ],
    },
}
BATH_WKT = "POLYGON((-2.3614 51.3812, -2.3606 51.3812, -2.3606 51.3817, -2.3614 51.3817, -2.3614 51.3812))"

#: (operation, path with values, query parameters, JSON body); ``{entity}`` is filled from a search.
REQUESTS = [
    ("GET /healthz", "/healthz", {}, None),
    ("GET /readyz", "/readyz", {}, None),
    ("POST /v1/check", "/v1/check", {}, BATH_SITE),
    (
        "GET /gis/{team}",
        "/gis/bathnes",
        {"geom": BATH_WKT, "vals": "listed,designated.conservationArea,designated.WHS,articleFour,tpo"},
        None,
    ),
    (
        "GET /entity.json",
        "/entity.json",
        {
            "geometry": BATH_WKT,
            "geometry_relation": "intersects",
            "exclude_field": "geometry,point",
            "limit": "3",
        },
        None,
    ),
    (
        "GET /entity.geojson",
        "/entity.geojson",
        {"dataset": "listed-building-outline", "limit": "2", "period": "current"},
        None,
    ),
    ("GET /entity/{entity}.json", "/entity/{entity}.json", {}, None),
    ("GET /entity/{entity}.geojson", "/entity/{entity}.geojson", {}, None),
    ("GET /dataset.json", "/dataset.json", {}, None),
    ("GET /dataset/{name}.json", "/dataset/conservation-area.json", {}, None),
    ("GET /v1/datasets", "/v1/datasets", {}, None),
    ("GET /metrics", "/metrics", {}, None),
]
MAX_ITEMS = 3


def abridge(value, depth: int = 0):
    """Lists cut to their first items so the spec stays readable; everything kept is real."""
    if isinstance(value, list):
        return [abridge(v, depth + 1) for v in value[:MAX_ITEMS]]
    if isinstance(value, dict):
        return {k: abridge(v, depth + 1) for k, v in value.items()}
    return value


def capture(client) -> dict:
    """Send every request in :data:`REQUESTS` through ``client`` and keep the answers."""
    out = {}
    outline = client.get("/entity.json", params={"dataset": "listed-building-outline", "limit": 1}).json()[
        "entities"
    ][0]["entity"]
    for operation, path, params, body in REQUESTS:
        path = path.replace("{entity}", str(outline))
        response = client.request(operation.split()[0], path, params=params, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"{operation} answered {response.status_code}: {response.text[:300]}")
        out[operation] = _record(path, params, body, response)
    out.update(capture_boundary_flow(client))
    return out


def _record(path: str, params: dict, body, response) -> dict:
    media = response.headers["content-type"].split(";")[0]
    answer = response.text if media.startswith("text/") else abridge(response.json())
    if isinstance(answer, str):
        answer = "\n".join(answer.splitlines()[:40]) + "\n"
    return {
        "request": {"path": path, "query": params, "body": body},
        "status": response.status_code,
        "media_type": media,
        "response": answer,
    }


#: The red line's journey: an applicant's boundary, an officer's amendment, the applicant's answer.
BOUNDARY = {"reference": "PLX-1234", "local_authority": "Bath and North East Somerset", "site": BATH_SITE}
AMENDED = {
    "type": "Polygon",
    "coordinates": [[[-2.3614, 51.3812], [-2.3608, 51.3812], [-2.3608, 51.3817], [-2.3614, 51.3817], [-2.3614, 51.3812]]],
}


def capture_boundary_flow(client) -> dict:
    """Walk a boundary through validation, creation, an amendment and the applicant's approval; keep each answer.

    The second of each pair of change requests is rejected, so both of the applicant's answers are shown.
    """
    out: dict = {}

    def step(operation: str, path: str, body=None, *, token: str | None = None, expect: int = 200, params=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = client.request(operation.split()[0], path, json=body, params=params or {}, headers=headers)
        if response.status_code != expect:
            raise RuntimeError(f"{operation} answered {response.status_code}: {response.text[:300]}")
        out[operation] = _record(path, params or {}, body, response)
        return response.json() if response.headers["content-type"].startswith("application/") else response.text

    step("POST /v1/validate", "/v1/validate", {"site": BATH_SITE})
    boundary = step("POST /v1/boundaries", "/v1/boundaries", BOUNDARY, expect=201)
    bid = boundary["id"]
    step("GET /v1/boundaries/{boundary_id}", f"/v1/boundaries/{bid}")
    proposal = {"site": AMENDED, "reason": "The red line must follow the garden wall"}
    opened = step("POST /v1/boundaries/{boundary_id}/change-requests", f"/v1/boundaries/{bid}/change-requests", proposal, expect=201)
    step("GET /v1/change-requests/{request_id}", f"/v1/change-requests/{opened['id']}", token=opened["token"])
    step("POST /v1/change-requests/{request_id}/approve", f"/v1/change-requests/{opened['id']}/approve", token=opened["token"])
    second = client.post(f"/v1/boundaries/{bid}/change-requests", json={"site": BATH_SITE["geometry"], "reason": "Back to the first line"}).json()
    step(
        "POST /v1/change-requests/{request_id}/reject",
        f"/v1/change-requests/{second['id']}/reject",
        {"reason": "That strip is my neighbour's garden"},
        token=second["token"],
    )
    step("GET /v1/boundaries/{boundary_id}/versions", f"/v1/boundaries/{bid}/versions")
    step("GET /v1/boundaries/{boundary_id}/versions/{n}/odp", f"/v1/boundaries/{bid}/versions/2/odp")
    step("GET /v1/boundaries/{boundary_id}/constraints", f"/v1/boundaries/{bid}/constraints", params={"format": "odp"})
    step("GET /v1/boundaries/{boundary_id}/audit", f"/v1/boundaries/{bid}/audit")
    return out


@lru_cache(maxsize=1)
def examples() -> dict:
    try:
        return json.loads(PATH.read_text(encoding="utf-8"))["operations"]
    except FileNotFoundError:
        return {}


def add_examples(schema: dict) -> dict:
    """``schema`` with each captured operation's answer (and query values) as its examples."""
    schema = copy.deepcopy(schema)
    for operation, captured in examples().items():
        method, path = operation.split(" ", 1)
        op = schema.get("paths", {}).get(path, {}).get(method.lower())
        if op is None:
            continue
        status = str(captured.get("status", 200))
        ok = op.setdefault("responses", {}).setdefault(status, {"description": "Successful Response"})
        content = ok.setdefault("content", {})
        media = captured["media_type"]
        content.setdefault(media, {"schema": {}})["example"] = captured["response"]
        if media != "application/json":
            content.pop("application/json", None)  # FastAPI's default; the answer is geo+json or text
        query = captured["request"]["query"]
        for parameter in op.get("parameters", []):
            if parameter.get("in") == "query" and parameter["name"] in query:
                parameter["example"] = query[parameter["name"]]
            if parameter.get("in") == "path":
                value = _path_value(path, captured["request"]["path"], parameter["name"])
                if value is not None:
                    parameter["example"] = value
        body = captured["request"]["body"]
        if body is not None and "requestBody" in op:
            for media_type in op["requestBody"].get("content", {}).values():
                media_type["example"] = body
    return schema


def _path_value(template: str, path: str, name: str):
    import re

    pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+?)", re.escape(template)) + "$"
    match = re.match(pattern, path)
    return match.group(name) if match and name in match.groupdict() else None


def attach(app) -> None:
    """Make ``app.openapi()`` include the captured examples (computed once, on first request)."""
    build = app.openapi

    def openapi():
        if app.openapi_schema is None:
            app.openapi_schema = add_examples(build())
        return app.openapi_schema

    app.openapi = openapi


def main() -> int:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.data import write_bundled_json
    from api.settings import Settings

    with tempfile.TemporaryDirectory(prefix="redline-examples-") as tmp:
        app = create_app(Settings(data_dir=Path(tmp), load_samples=True), load_in_background=False)
        with TestClient(app) as client:
            captured = capture(client)
    write_bundled_json(
        PATH,
        {
            "_about": "Real answers over the bundled samples, abridged; rebuilt by python -m api.examples",
            "operations": captured,
        },
    )
    print(f"{len(captured)} operations -> {PATH}")
    return 0
