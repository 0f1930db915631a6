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
        media = response.headers["content-type"].split(";")[0]
        answer = response.text if media.startswith("text/") else abridge(response.json())
        if isinstance(answer, str):
            answer = "\n".join(answer.splitlines()[:40]) + "\n"
        out[operation] = {
            "request": {"path": path, "query": params, "body": body},
            "media_type": media,
            "response": answer,
        }
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
        ok = op.setdefault("responses", {}).setdefault("200", {"description": "Successful Response"})
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
    from api.settings import Settings

    with tempfile.TemporaryDirectory(prefix="redline-examples-") as tmp:
        app = create_app(Settings(data_dir=Path(tmp), load_samples=True), load_in_background=False)
        with TestClient(app) as client:
            captured = capture(client)
    PATH.write_text(
        json.dumps(
            {
                "_about": "Real answers over the bundled samples, abridged; rebuilt by python -m api.examples",
                "operations": captured,
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"{len(captured)} operations -> {PATH}")
    return 0
