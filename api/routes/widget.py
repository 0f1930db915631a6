"""The bundled ``<redline-map>`` widget: its script, the vendored map libraries, the demo and officer pages,
and the few small helpers the widget needs from the server.

Everything the widget loads comes from this service (no CDN), so a page using it makes no request to
another origin unless its ``tiles`` attribute names a tile server. The helpers keep the browser code small
and the geometry honest: British National Grid conversion goes through OSTN15 (``datasets.crs``), boundary
files are read by the boundary package's parser, and areas added or removed by an amendment are geodesic.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import shapely
import shapely.geometry
import shapely.ops
from fastapi import APIRouter, Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from shapely.geometry import box, mapping
from starlette.concurrency import run_in_threadpool

from boundary.errors import BoundaryError
from boundary.geometry import amendment, parse_upload
from constraints.index import ConstraintIndex, is_current
from constraints.site import SiteLimits, limit_overlay, parse_site
from datasets import crs

from ..bodies import JSONRoute
from ..deps import get_index, require_scope
from ..errors import Problem
from ..responses import json_response
from .check import boundary_limits, site_limits

STATIC = Path(__file__).resolve().parent.parent / "static"
VENDOR = STATIC / "vendor"

# A view wider than this (degrees) would send most of a layer; the widget asks the user to zoom in.
MAX_VIEW_DEGREES = 0.25
MAX_FEATURES = 5000
REQUEST_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
BOUNDARY_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")

router = APIRouter(tags=["widget"], route_class=JSONRoute)
pages = APIRouter(include_in_schema=False)


# --- pages and files --------------------------------------------------------------------------------
@pages.get("/")
def demo_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


@pages.get("/officer/{boundary_id}")
def officer_page(boundary_id: str) -> HTMLResponse:
    if not BOUNDARY_ID.match(boundary_id):
        raise Problem(
            404, "Not found", "a boundary id is letters, digits, '-', '_', '.' or ':' (at most 128)"
        )
    text = (STATIC / "officer.html").read_text(encoding="utf-8")
    return HTMLResponse(text.replace("{{boundary_id}}", html.escape(boundary_id, quote=True)))


@pages.get("/respond/{request_id}")
def respond_page(request_id: str) -> HTMLResponse:
    """The applicant's page for a change request; its token arrives in the URL fragment, never here."""
    if not REQUEST_ID.match(request_id):
        raise Problem(404, "Not found", "a change request id is a UUID, as in the link from the email")
    text = (STATIC / "respond.html").read_text(encoding="utf-8")
    return HTMLResponse(
        text.replace("{{request_id}}", request_id),
        # The page is only a shell (the request is fetched with the token), but no cache keeps even that.
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


@pages.get("/widget/respond.js")
def respond_script() -> FileResponse:
    return FileResponse(
        STATIC / "respond.js", media_type="text/javascript; charset=utf-8", headers={"Cache-Control": "no-cache"}
    )


@pages.get("/widget/redline-map.js")
def widget_script() -> FileResponse:
    # no-cache: browsers revalidate (ETag), so a council page picks up an upgraded service at once.
    return FileResponse(
        STATIC / "redline-map.js",
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "no-cache"},
    )


# --- helpers for the widget ---------------------------------------------------------------------------
def _current_rows(layer, rows: np.ndarray) -> np.ndarray:
    """Rows whose entities are current (the platform's ``period=current``)."""
    return rows[is_current(layer.end_date[rows])]


def _features_in(
    index: ConstraintIndex, area_4326, clip_to, limit: int, wanted: set[tuple[str, int]] | None = None
) -> tuple[list[dict], bool]:
    """Constraint features meeting ``area_4326``, clipped to ``clip_to`` so huge polygons stay small."""
    snap = index.snapshot
    if snap.tree is None:
        return [], False
    try:
        query = crs.to_bng(area_4326)
    except crs.OutsideGridError:
        # Sea inside the lon/lat box around Great Britain: OSTN15 has no answer, and no layer has features.
        return [], False
    hits = snap.tree.query(query, predicate="intersects")
    layer_ids, rows = snap.piece_layer[hits], snap.piece_row[hits]
    features: list[dict] = []
    truncated = False
    for layer_id in np.unique(layer_ids):
        layer = snap.layer_list[int(layer_id)]
        chosen = _current_rows(layer, np.unique(rows[layer_ids == layer_id]))
        if wanted is not None:
            chosen = np.array(
                [r for r in chosen if (layer.name, int(layer.entity[r])) in wanted], dtype=np.int64
            )
        if len(chosen) == 0:
            continue
        geoms = shapely.clip_by_rect(layer.geometry[chosen], *clip_to.bounds)
        for row, geom in zip(chosen, geoms, strict=True):
            if geom is None or geom.is_empty:
                continue
            if len(features) >= limit:
                truncated = True
                break
            props = layer.properties(int(row))
            features.append(
                {
                    "type": "Feature",
                    "id": f"{layer.name}:{props['entity']}",
                    "geometry": mapping(geom),
                    # The id as a string: local-file entity ids are 64-bit, beyond a JavaScript number.
                    "properties": {
                        "entity": str(props["entity"]),
                        "dataset": layer.name,
                        "name": props.get("name"),
                        "reference": props.get("reference"),
                    },
                }
            )
    return features, truncated


@router.get("/widget/features", summary="Constraint features in a map view (for display and snapping)")
async def view_features(
    request: Request,
    bbox: str = Query(
        ...,
        description="west,south,east,north in degrees (EPSG:4326)",
        examples=["-2.365,51.378,-2.355,51.384"],
    ),
    limit: int = Query(2000, ge=1, le=MAX_FEATURES),
    principal=require_scope("check"),
    index: ConstraintIndex = Depends(get_index),
) -> Response:
    parts = bbox.split(",")
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError:
        raise Problem(
            422,
            "The view is not valid",
            f"bbox must be four numbers west,south,east,north; got {bbox!r}",
            type="/problems/bad-bbox",
        ) from None
    if not all(math.isfinite(v) for v in (west, south, east, north)) or west >= east or south >= north:
        raise Problem(
            422,
            "The view is not valid",
            "bbox must be finite with west < east and south < north",
            type="/problems/bad-bbox",
        )
    if not (
        crs.GB_LON[0] <= west and east <= crs.GB_LON[1] and crs.GB_LAT[0] <= south and north <= crs.GB_LAT[1]
    ):
        # Outside Great Britain there is nothing to show, and OSTN15 has no answer.
        return json_response(
            {
                "type": "FeatureCollection",
                "features": [],
                "properties": {"truncated": False, "zoom_in": False},
            },
            media_type="application/geo+json",
        )
    if east - west > MAX_VIEW_DEGREES or north - south > MAX_VIEW_DEGREES:
        return json_response(
            {
                "type": "FeatureCollection",
                "features": [],
                "properties": {"truncated": False, "zoom_in": True},
            },
            media_type="application/geo+json",
        )
    view = box(west, south, east, north)
    # Clip a little outside the view so panning does not show cut edges at once.
    margin = max(east - west, north - south) * 0.25
    features, truncated = await run_in_threadpool(
        _features_in, index, view, view.buffer(margin, join_style="mitre"), limit
    )
    return json_response(
        {
            "type": "FeatureCollection",
            "features": features,
            "properties": {"truncated": truncated, "zoom_in": False},
        },
        media_type="application/geo+json",
    )


class OverlayRequest(BaseModel):
    site: dict = Field(..., description="The site as GeoJSON (geometry or Feature), EPSG:4326")


def overlay_features(index: ConstraintIndex, site) -> list[dict]:
    """The entities a check of ``site`` returns, with geometry clipped around the site, for the map.

    The check runs again here (it takes well under a millisecond) rather than taking entity ids from the
    browser: ids of entities loaded from local files are 64-bit hashes, beyond what a JavaScript number holds.
    """
    answer = index.check(site.geometry)
    applies: dict[tuple[str, int], dict] = {}
    nearby: dict[tuple[str, int], dict] = {}
    for item in answer["constraints"]:
        if item["status"] == "intersects" and item["key"] != "designated":
            for e in item["entities"]:
                ident = (e["dataset"], int(e["entity"]))
                found = applies.setdefault(
                    ident, {"status": "applies", "category": item["category"], "keys": []}
                )
                found["keys"].append(item["key"])
        for e in item.get("nearby") or []:
            ident = (e["dataset"], int(e["entity"]))
            nearby.setdefault(ident, {"status": "nearby", "category": item["category"], "keys": []})[
                "keys"
            ].append(item["key"])
    for ident in applies:
        nearby.pop(ident, None)
    flags = {**nearby, **applies}
    if not flags:
        return []
    west, south, east, north = site.geometry.bounds
    # Enough of each entity around the site to see how it lies, never a whole national park.
    margin = max(east - west, north - south, 0.002) * 1.5
    around = box(west - margin, south - margin, east + margin, north + margin)
    features, _ = _features_in(index, site.geometry.buffer(1e-6), around, MAX_FEATURES, set(flags))
    # Where to put each label: inside the part of the entity that meets the site, or for a nearby entity
    # the point of it nearest the site, so labels sit by the site rather than off the map.
    site_zone = site.geometry.envelope.buffer(max(east - west, north - south) * 0.1)
    centre = site.geometry.centroid
    for f in features:
        dataset, _, entity = f["id"].rpartition(":")
        f["properties"].update(flags[(dataset, int(entity))])
        geom = shapely.geometry.shape(f["geometry"])
        if f["properties"]["status"] == "applies":
            inside = geom.intersection(site_zone)
            label = (inside if not inside.is_empty else geom).representative_point()
        else:
            label = shapely.ops.nearest_points(geom, centre)[0]
        f["properties"]["label"] = [round(label.x, 7), round(label.y, 7)]
    # Applying constraints last, so they draw above the nearby ones.
    features.sort(key=lambda f: f["properties"]["status"] == "applies")
    return features


@router.post(
    "/widget/overlays", summary="Entities a check of the site returns, with geometry clipped around the site"
)
async def overlays(
    body: OverlayRequest,
    request: Request,
    principal=require_scope("check"),
    index: ConstraintIndex = Depends(get_index),
) -> Response:
    site = parse_site(body.site, site_limits(request.app.state.settings))
    features = await run_in_threadpool(overlay_features, index, site)
    return json_response({"type": "FeatureCollection", "features": features}, media_type="application/geo+json")


class CoordinatesRequest(BaseModel):
    text: str = Field(
        ...,
        max_length=200_000,
        description="Pairs of lon lat, or eastings northings, one pair a line (commas, spaces or semicolons between)",
    )
    crs: str = Field(
        "auto",
        pattern="^(auto|lonlat|bng)$",
        description="auto decides by magnitude: British National Grid metres are over 1000",
    )


def coordinates_to_feature(text: str, system: str = "auto") -> dict:
    """Read a typed or pasted list of coordinates as a GeoJSON polygon Feature in EPSG:4326.

    Numbers are read in order and paired; British National Grid eastings and northings are converted
    through OSTN15. The ring is closed if it was not. Validation (self-intersection, swapped axes, area)
    is left to ``/v1/validate``, which names the fault.
    """
    numbers = [float(m) for m in NUMBER.findall(text)]
    if not numbers:
        raise Problem(
            422,
            "No coordinates",
            "type or paste one point a line, e.g. '-2.3614, 51.3812' (longitude, latitude) or '375000 164900' (easting, northing)",
            type="/problems/no-coordinates",
        )
    if len(numbers) % 2:
        raise Problem(
            422,
            "Coordinates come in pairs",
            f"found {len(numbers)} numbers; every point needs two (longitude and latitude, or easting and northing)",
            type="/problems/odd-coordinates",
        )
    if not all(math.isfinite(v) for v in numbers):
        raise Problem(
            422,
            "Coordinates must be numbers",
            "a coordinate is not a finite number",
            type="/problems/not-finite",
        )
    pairs = np.array(numbers, dtype=np.float64).reshape(-1, 2)
    big = np.abs(pairs) > 1000
    if system == "auto":
        if big.all():
            system = "bng"
        elif not big.any():
            system = "lonlat"
        else:
            # Name the first point that is itself mixed, or that differs in kind from the first point.
            kind = big.all(axis=1)
            row = int(np.flatnonzero((big.any(axis=1) != kind) | (kind != kind[0]))[0])
            raise Problem(
                422,
                "Mixed coordinate systems",
                f"point {row + 1} ({pairs[row, 0]:g}, {pairs[row, 1]:g}) is in {'metres' if kind[row] else 'degrees'} but point 1 is in "
                f"{'metres' if kind[0] else 'degrees'}: enter every point as longitude, latitude or every point as easting, northing",
                type="/problems/mixed-coordinates",
            )
    if system == "bng":
        lon, lat = crs.bng_to_lonlat(pairs[:, 0], pairs[:, 1])
        bad = np.flatnonzero(~(np.isfinite(lon) & np.isfinite(lat)))
        if len(bad):
            row = int(bad[0])
            raise Problem(
                422,
                "Outside the National Grid",
                f"point {row + 1} (easting {pairs[row, 0]:g}, northing {pairs[row, 1]:g}) is outside the British National Grid",
                type="/problems/outside-gb",
            )
        # OSTN15 is good to about a centimetre; more decimals would only be noise.
        ring = np.column_stack([np.round(lon, 7), np.round(lat, 7)])
    else:
        ring = pairs
    if len(ring) and not np.array_equal(ring[0], ring[-1]):
        ring = np.vstack([ring, ring[:1]])
    if len(ring) < 4:
        raise Problem(
            422,
            "Too few points",
            f"a boundary needs at least 3 distinct points; found {len(ring) - 1}",
            type="/problems/too-few-points",
        )
    return {
        "type": "Feature",
        "properties": {"entered_as": system, "points": len(ring) - 1},
        "geometry": {"type": "Polygon", "coordinates": [[[float(x), float(y)] for x, y in ring]]},
    }


@router.post(
    "/widget/coordinates", summary="A boundary from typed coordinates (lon/lat or British National Grid)"
)
async def coordinates(
    body: CoordinatesRequest, request: Request, principal=require_scope("check")
) -> Response:
    return json_response(coordinates_to_feature(body.text, body.crs), media_type="application/geo+json")


@router.post(
    "/widget/upload",
    summary="Read a boundary file (GeoJSON, KML, GeoPackage, zipped Shapefile) without storing it",
)
async def upload(
    request: Request,
    file: UploadFile = File(..., description="One site per file, any CRS"),
    principal=require_scope("check"),
) -> Response:
    limits = boundary_limits(request.app.state.settings)
    content = await file.read(limits.max_upload_bytes + 1)
    geometry, warnings = await run_in_threadpool(parse_upload, file.filename or "", content, limits)
    if isinstance(geometry, dict) and geometry.get("type") == "Feature":
        geometry = geometry.get("geometry")
    return json_response(
        {
            "type": "Feature",
            "properties": {"filename": file.filename, "warnings": warnings},
            "geometry": geometry,
        },
        media_type="application/geo+json",
    )


class DiffRequest(BaseModel):
    current: dict = Field(..., description="The current boundary (GeoJSON geometry or Feature, EPSG:4326)")
    proposed: dict = Field(..., description="The proposed boundary")


def boundary_difference(current: dict, proposed: dict, limits: SiteLimits) -> dict:
    """Areas added to and removed from ``current`` by ``proposed``, as geometry and geodesic m²."""
    before = parse_site(current, limits).geometry
    after = parse_site(proposed, limits).geometry
    both = shapely.MultiPolygon([*shapely.get_parts(before), *shapely.get_parts(after)])
    # each is a valid site within the limits; what the difference costs is where the two cross
    together = replace(limits, max_vertices=None, max_parts=None, max_holes=None, max_repair_vertices=None)
    limit_overlay(both, together, "the two boundaries cross each other", "compare boundaries that differ in fewer places")
    return amendment(before, after)


@router.post("/widget/diff", summary="Areas an amendment adds and removes (geodesic m²)")
async def diff(body: DiffRequest, request: Request, principal=require_scope("check")) -> Response:
    limits = site_limits(request.app.state.settings)
    return json_response(
        await run_in_threadpool(boundary_difference, body.current, body.proposed, limits), media_type="application/geo+json")


def install(app: FastAPI) -> list[type[Exception]]:
    """Add the widget's pages, files and helpers to the app; the upload parser raises BoundaryError."""
    app.include_router(pages)
    app.include_router(router)
    app.mount("/widget/vendor", StaticFiles(directory=VENDOR), name="widget-vendor")
    return [BoundaryError]


__all__ = ["boundary_difference", "coordinates_to_feature", "install", "router"]
