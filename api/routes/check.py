"""POST /v1/check: the constraints check for a GeoJSON site."""

from __future__ import annotations

import functools
from typing import Annotated
from urllib.parse import parse_qsl

import orjson
from fastapi import Request
from pydantic import AfterValidator, BaseModel, Field, ValidationError

from boundary.geometry import BoundaryLimits
from constraints.formats import Format, render
from constraints.index import ConstraintIndex, Tolerance
from constraints.site import SiteLimits, load_json

from ..bodies import read_body
from ..dataset_metadata import describer
from ..deps import admit, get_index
from ..errors import Problem

SITE_EXAMPLE = {
    "type": "Feature",
    "properties": {"name": "Example site"},
    "geometry": {
        "type": "Polygon",
        "coordinates": [[[-2.3614, 51.3812], [-2.3606, 51.3812], [-2.3606, 51.3817], [-2.3614, 51.3817], [-2.3614, 51.3812]]],
    },
}


def site_limits(settings) -> SiteLimits:
    """The site limits from the settings: every endpoint that reads a site uses these."""
    return SiteLimits(
        max_bytes=settings.max_body_bytes,
        max_vertices=settings.max_vertices,
        max_features=settings.max_geometries,
        max_parts=settings.max_parts,
        max_holes=settings.max_holes,
        max_repair_vertices=settings.max_repair_vertices,
        max_self_intersections=settings.max_self_intersections,
    )


def boundary_limits(settings) -> BoundaryLimits:
    """The limits of a red-line boundary and of an uploaded boundary file, from the settings."""
    return BoundaryLimits(
        max_area_ha=settings.max_boundary_area_ha,
        max_upload_bytes=settings.max_body_bytes,
        max_unpacked_bytes=settings.max_upload_unpacked_bytes,
        max_ratio=settings.max_upload_ratio,
        max_files=settings.max_upload_files,
        site=site_limits(settings),
    )


def split_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


async def read_site(request: Request) -> bytes:
    body = await read_body(request)
    if not body:
        raise Problem(422, "The site cannot be checked", "the request body is empty: send a GeoJSON geometry, Feature or FeatureCollection", type="/problems/empty")
    return body


def run_check(index: ConstraintIndex, catalogue, site, fmt: Format, *, tolerance: Tolerance, datasets=None, council=None, keys=None, source_request: str = "", snapshot=None):
    snapshot = snapshot or index.snapshot
    answer = index.check(site, tolerance=tolerance, datasets=datasets, council=council, keys=keys, snapshot=snapshot)
    return render(answer, fmt, catalogue, snapshot, source_request=source_request, describe=describer(snapshot))


def answer_check(index: ConstraintIndex, catalogue, limits: SiteLimits, body: bytes, fmt: Format, tolerance: Tolerance, datasets, council, keys, *, snapshot=None) -> tuple[bytes, str]:
    """A check from the request body to the answer's bytes, and the data version it was answered from.

    ``snapshot`` is the data to read from start to finish (the index's current one by default).
    """
    snapshot = snapshot or index.snapshot
    site = load_json(body, limits)
    answer = run_check(index, catalogue, site, fmt, tolerance=tolerance, datasets=datasets, council=council, keys=keys, snapshot=snapshot)
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), snapshot.data_version


class CheckQuery(BaseModel):
    """The check's query parameters, declared once: :class:`CheckEndpoint` parses with it and the
    OpenAPI lists them from it (:func:`query_parameters`). A blank value is the same as leaving it out."""

    format: Format = Field(Format.native, description="native, planx (PlanX GIS shape), odp (ODP designations) or geojson")
    datasets: Annotated[list[str] | None, AfterValidator(split_list)] = Field(None, description="Restrict to these datasets (repeat, or comma-separated); other keys answer unknown")
    keys: Annotated[list[str] | None, AfterValidator(split_list)] = Field(None, description="Answer only these keys")
    council: str | None = Field(None, description="Add this council's granular article 4 keys, e.g. lambeth")
    tolerance_m2: float | None = Field(None, ge=0, le=1e6, allow_inf_nan=False, description="Overlaps below this many m² are slivers (listed as nearby)")
    tolerance_pct: float | None = Field(None, ge=0, le=100, allow_inf_nan=False, description="Overlaps below this % of the site are slivers")

    @classmethod
    def parse(cls, raw: bytes) -> CheckQuery:
        """The query string's values (the first of a repeated single value, every one of a list), or a 422."""
        data: dict = {}
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True) if raw else ():
            if name in _LISTS:
                data.setdefault(name, []).append(value)
            elif value != "":
                data.setdefault(name, value)
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            errors = [{"in": "query", "pointer": f"/{e['loc'][0]}", "detail": e["msg"]} for e in err.errors(include_url=False)]
        detail = "; ".join(f"query {e['pointer'][1:]}: {e['detail']}" for e in errors)
        raise Problem(422, "The request is not valid", detail, type="/problems/invalid-request", errors=errors)


_LISTS = frozenset(name for name, field in CheckQuery.model_fields.items() if "list" in str(field.annotation))


def query_parameters(model: type[BaseModel]) -> list[dict]:
    """OpenAPI query parameters from a model's fields (none required; lists repeat or take commas)."""
    parameters = []
    for name, prop in model.model_json_schema()["properties"].items():
        schema = next((s for s in prop.get("anyOf", [prop]) if s.get("type") != "null"), prop)
        schema = {k: v for k, v in schema.items() if k not in ("title", "description")}
        if "$ref" in schema:  # the Format enum
            schema = {"type": "string", "enum": [f.value for f in Format]}
        if prop.get("default") is not None:
            schema["default"] = prop["default"]
        parameter = {"name": name, "in": "query", "required": False, "description": prop.get("description", ""), "schema": schema}
        if schema.get("type") == "array":
            parameter |= {"style": "form", "explode": True}
        parameters.append(parameter)
    return parameters


CHECK_PARAMETERS = query_parameters(CheckQuery)


CHECK_OPERATION = {
    "tags": ["check"],
    "summary": "Which planning constraints apply to a site",
    "description": "Send the site as GeoJSON (EPSG:4326 lon/lat): a Polygon, MultiPolygon, Feature or FeatureCollection of polygons, or a Point for an address-only check.",
    "operationId": "check_v1_check_post",
    "parameters": CHECK_PARAMETERS,
    "security": [{"apiKey": []}],  # the scheme is declared by api.deps.ApiKey on the other routes
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}, "example": SITE_EXAMPLE}}},
    "responses": {
        "200": {"description": "The answer for every catalogue key", "content": {"application/json": {"schema": {"type": "object"}}}},
        "401": {"description": "No valid API key"},
        "403": {"description": "The API key lacks the check scope"},
        "413": {"description": "Body or site too large"},
        "422": {"description": "The site cannot be checked"},
        "429": {"description": "Rate limit reached"},
        "503": {"description": "The constraint layers are still loading, or the check overran its deadline (Retry-After says when to send it again)"},
    },
}


def document(schema: dict) -> dict:
    """Add ``POST /v1/check`` to an OpenAPI schema: it is served by :class:`CheckEndpoint`, not a FastAPI route."""
    schema.setdefault("paths", {}).setdefault("/v1/check", {})["post"] = CHECK_OPERATION
    return schema


class CheckEndpoint:
    """``POST /v1/check`` as a plain ASGI app.

    The check is the service's hot path, and FastAPI's per-request machinery (parameter models,
    dependency solving, response classes) cost about as much CPU as the check itself. This endpoint
    keeps everything a caller sees the same: API key and scope, rate limit, body limits, problem+json
    errors (it raises the domain exceptions and ``errors.py`` answers them), the data-version header
    and the metrics (which read the route template from ``path``).
    """

    path = "/v1/check"

    async def __call__(self, scope, receive, send) -> None:
        request = Request(scope, receive)
        app = scope["app"]
        admit(request, "check")
        state = app.state
        index: ConstraintIndex = await get_index(request)
        settings = state.settings
        query = CheckQuery.parse(scope.get("query_string", b""))
        body = await read_site(request)
        tolerance = Tolerance(
            settings.tolerance_m2 if query.tolerance_m2 is None else query.tolerance_m2,
            settings.tolerance_pct if query.tolerance_pct is None else query.tolerance_pct,
        )
        fmt = query.format
        options = (fmt, tolerance, query.datasets, query.council, query.keys)
        runner = state.check_process
        if runner is not None:  # in the worker's check process (see api/check_process.py), in arrival order
            payload, data_version = await runner.run(index.snapshot, body, *options)
        else:  # on the worker's check thread, off the event loop, in arrival order
            work = functools.partial(answer_check, index, state.catalogue, site_limits(settings), body, *options)
            payload, data_version = await state.check_thread.run(work)
        request.state.checked = True
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/geo+json" if fmt is Format.geojson else b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"x-redline-data-version", data_version.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

