"""POST /v1/check: the constraints check for a GeoJSON site."""

from __future__ import annotations

import functools
from enum import StrEnum

import anyio
import anyio.to_thread
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from constraints.formats import to_geojson, to_odp, to_planx
from constraints.index import ConstraintIndex, Tolerance
from constraints.site import SiteLimits, load_json

from ..deps import get_index, require_scope
from ..errors import Problem

router = APIRouter(tags=["check"])
_limiter: anyio.CapacityLimiter | None = None


def _check_limiter() -> anyio.CapacityLimiter:
    global _limiter
    if _limiter is None:  # created inside the running event loop, once per process
        _limiter = anyio.CapacityLimiter(2)
    return _limiter


class Format(StrEnum):
    native = "native"
    planx = "planx"
    odp = "odp"
    geojson = "geojson"


SITE_EXAMPLE = {
    "type": "Feature",
    "properties": {"name": "Example site"},
    "geometry": {
        "type": "Polygon",
        "coordinates": [[[-2.3614, 51.3812], [-2.3606, 51.3812], [-2.3606, 51.3817], [-2.3614, 51.3817], [-2.3614, 51.3812]]],
    },
}


def site_limits(settings) -> SiteLimits:
    return SiteLimits(max_bytes=settings.max_body_bytes, max_vertices=settings.max_vertices, max_features=settings.max_geometries)


def json_response(body, request: Request, status: int = 200, media_type: str = "application/json") -> Response:
    headers = {"X-Redline-Data-Version": request.app.state.index.data_version if request.app.state.index else "none"}
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type=media_type, headers=headers)


def split_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Problem(413, "Payload too large", f"the request body is {int(declared)} bytes; at most {limit} are accepted")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise Problem(413, "Payload too large", f"the request body is over {limit} bytes; at most {limit} are accepted")
    if not body:
        raise Problem(422, "The site cannot be checked", "the request body is empty: send a GeoJSON geometry, Feature or FeatureCollection", type="/problems/empty")
    return bytes(body)


def run_check(index: ConstraintIndex, catalogue, site, fmt: Format, *, tolerance: Tolerance, datasets=None, council=None, keys=None, source_request: str = ""):
    answer = index.check(site, tolerance=tolerance, datasets=datasets, council=council, keys=keys)
    if fmt is Format.planx:
        return to_planx(answer, catalogue, source_request)
    if fmt is Format.odp:
        return {"designations": to_odp(answer), "site": answer["site"], "provenance": answer["provenance"]}
    if fmt is Format.geojson:
        return to_geojson(answer, index.snapshot)
    return answer


def _number(request: Request, name: str, low: float, high: float) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (low <= value <= high):  # NaN fails too
        raise Problem(422, "The request is not valid", f"query {name}: must be a number from {low:g} to {high:g}, got {raw!r}", type="/problems/invalid-request", errors=[{"in": "query", "pointer": f"/{name}", "detail": f"a number from {low:g} to {high:g}"}])
    return value


def _listed(request: Request, name: str) -> list[str] | None:
    return split_list(request.query_params.getlist(name))


# The query parameters are read by hand rather than declared: FastAPI's per-parameter machinery cost
# more than the check itself (about 0.4 ms a request), and this endpoint is the hot path.
CHECK_PARAMETERS = [
    {"name": "format", "in": "query", "required": False, "description": "native, planx (PlanX GIS shape), odp (ODP designations) or geojson", "schema": {"type": "string", "enum": [f.value for f in Format], "default": "native"}},
    {"name": "datasets", "in": "query", "required": False, "description": "Restrict to these datasets (repeat, or comma-separated); other keys answer unknown", "schema": {"type": "array", "items": {"type": "string"}}, "style": "form", "explode": True},
    {"name": "keys", "in": "query", "required": False, "description": "Answer only these keys", "schema": {"type": "array", "items": {"type": "string"}}, "style": "form", "explode": True},
    {"name": "council", "in": "query", "required": False, "description": "Add this council's granular article 4 keys, e.g. lambeth", "schema": {"type": "string"}},
    {"name": "tolerance_m2", "in": "query", "required": False, "description": "Overlaps below this many m² are slivers (listed as nearby)", "schema": {"type": "number", "minimum": 0, "maximum": 1e6}},
    {"name": "tolerance_pct", "in": "query", "required": False, "description": "Overlaps below this % of the site are slivers", "schema": {"type": "number", "minimum": 0, "maximum": 100}},
]


@router.post(
    "/v1/check",
    summary="Which planning constraints apply to a site",
    description="Send the site as GeoJSON (EPSG:4326 lon/lat): a Polygon, MultiPolygon, Feature or FeatureCollection of polygons, or a Point for an address-only check.",
    openapi_extra={
        "parameters": CHECK_PARAMETERS,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}, "example": SITE_EXAMPLE}}},
    },
    responses={200: {"description": "The answer for every catalogue key"}, 413: {"description": "Body or site too large"}, 422: {"description": "The site cannot be checked"}},
)
async def check(request: Request, principal=require_scope("check")):
    state = request.app.state
    index: ConstraintIndex = await get_index(request)
    settings = state.settings
    raw_format = request.query_params.get("format") or "native"
    try:
        fmt = Format(raw_format)
    except ValueError:
        raise Problem(422, "The request is not valid", f"query format: {raw_format!r} is not one of native, planx, odp, geojson", type="/problems/invalid-request", errors=[{"in": "query", "pointer": "/format", "detail": "native, planx, odp or geojson"}]) from None
    tolerance_m2 = _number(request, "tolerance_m2", 0, 1e6)
    tolerance_pct = _number(request, "tolerance_pct", 0, 100)
    body = await read_body(request, settings.max_body_bytes)
    site = load_json(body, site_limits(settings))
    tolerance = Tolerance(
        settings.tolerance_m2 if tolerance_m2 is None else tolerance_m2,
        settings.tolerance_pct if tolerance_pct is None else tolerance_pct,
    )
    work = functools.partial(
        run_check, index, state.catalogue, site, fmt, tolerance=tolerance, datasets=_listed(request, "datasets"), council=request.query_params.get("council") or None, keys=_listed(request, "keys")
    )
    # off the event loop, two at a time: more threads in one process only queue on the GIL, and
    # first-come-first-served keeps the slowest answers from waiting behind later ones
    answer = await anyio.to_thread.run_sync(work, limiter=_check_limiter())
    request.state.checked = True
    return json_response(answer, request, media_type="application/geo+json" if fmt is Format.geojson else "application/json")
