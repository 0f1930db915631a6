"""POST /v1/check: the constraints check for a GeoJSON site."""

from __future__ import annotations

from enum import StrEnum

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from constraints.formats import to_geojson, to_odp, to_planx
from constraints.index import ConstraintIndex, Tolerance
from constraints.site import SiteLimits, load_json

from ..deps import get_catalogue, get_index, get_settings, require_scope
from ..errors import Problem

router = APIRouter(tags=["check"])


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


@router.post(
    "/v1/check",
    summary="Which planning constraints apply to a site",
    description="Send the site as GeoJSON (EPSG:4326 lon/lat): a Polygon, MultiPolygon, Feature or FeatureCollection of polygons, or a Point for an address-only check.",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}, "example": SITE_EXAMPLE}}}},
    responses={200: {"description": "The answer for every catalogue key"}, 413: {"description": "Body or site too large"}, 422: {"description": "The site cannot be checked"}},
)
async def check(
    request: Request,
    format: Format = Query(Format.native, description="native, planx (PlanX GIS shape), odp (ODP designations) or geojson"),
    datasets: list[str] | None = Query(None, description="Restrict to these datasets (repeat, or comma-separated); other keys answer unknown"),
    keys: list[str] | None = Query(None, description="Answer only these keys"),
    council: str | None = Query(None, description="Add this council's granular article 4 keys, e.g. lambeth"),
    tolerance_m2: float | None = Query(None, ge=0, le=1e6, description="Overlaps below this many m² are slivers (listed as nearby)"),
    tolerance_pct: float | None = Query(None, ge=0, le=100, description="Overlaps below this % of the site are slivers"),
    principal=require_scope("check"),
    index: ConstraintIndex = Depends(get_index),
    catalogue=Depends(get_catalogue),
    settings=Depends(get_settings),
):
    body = await read_body(request, settings.max_body_bytes)
    site = load_json(body, site_limits(settings))
    tolerance = Tolerance(
        settings.tolerance_m2 if tolerance_m2 is None else tolerance_m2,
        settings.tolerance_pct if tolerance_pct is None else tolerance_pct,
    )
    answer = await run_in_threadpool(
        run_check, index, catalogue, site, format, tolerance=tolerance, datasets=split_list(datasets), council=council, keys=split_list(keys)
    )
    request.state.checked = True
    return json_response(answer, request, media_type="application/geo+json" if format is Format.geojson else "application/json")


