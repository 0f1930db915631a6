"""The background map over HTTP: ``/widget/basemap.json`` (TileJSON) and ``/basemap/{z}/{x}/{y}``.

Both are public like the widget's own files (the applicant's page has no API key); tiles requested
without a key share the anonymous per-address rate limit, so the proxy cannot be used to drain a
council's map quota.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from ..basemap import TileMissing, TileSourceError, media_type, tile_source
from ..deps import throttle
from ..errors import Problem
from ..responses import json_response

router = APIRouter(tags=["widget"])
TILE_MAX_AGE_S = 86_400
HOW_TO = (
    "No background map is configured. Set REDLINE_BASEMAP_ARCHIVE to an MBTiles or PMTiles file "
    "(QGIS: Processing > Generate XYZ tiles (MBTiles)), or REDLINE_BASEMAP_URL to an XYZ tile URL with "
    "{z}/{x}/{y} (e.g. Ordnance Survey's Maps API with your key: redline fetches the tiles, the key stays "
    "on the server), and REDLINE_BASEMAP_ATTRIBUTION to the provider's attribution."
)


@router.get("/widget/basemap.json", summary="The background map as TileJSON, or how to configure one")
async def basemap_json(request: Request) -> Response:
    source = request.app.state.basemap
    if source is None:
        body = {"configured": False, "help": HOW_TO}
    else:
        info = source.info
        body = {
            "tilejson": "3.0.0",
            "configured": True,
            "tiles": ["/basemap/{z}/{x}/{y}"],
            "minzoom": info.minzoom,
            "maxzoom": info.maxzoom,
            "attribution": info.attribution,
        }
    return json_response(body, headers={"Cache-Control": "no-cache"})


@router.get("/basemap/{z}/{x}/{y}", summary="One background map tile (from the archive or the proxied server)")
async def basemap_tile(request: Request, z: int, x: int, y: int) -> Response:
    source = request.app.state.basemap
    if source is None:
        raise Problem(404, "No background map", HOW_TO, type="/problems/no-basemap")
    if not (0 <= z <= 22 and 0 <= x < (1 << z) and 0 <= y < (1 << z)):
        raise Problem(404, "No such tile", f"tile {z}/{x}/{y} is outside the tile grid (z 0 to 22, x and y below 2^z)")
    throttle(request)
    try:
        data = await source.atile(z, x, y)
    except TileMissing as exc:
        raise Problem(404, "No such tile", str(exc)) from None
    except TileSourceError as exc:
        raise Problem(502, "Background map unavailable", f"{exc}; the map works without it", headers={"Retry-After": "30"}) from None
    return Response(data, media_type=media_type(data), headers={"Cache-Control": f"public, max-age={TILE_MAX_AGE_S}"})


def install(app: FastAPI) -> list[type[Exception]]:
    app.state.basemap = tile_source(app.state.settings)
    app.include_router(router)

    async def close(app: FastAPI) -> None:
        closer = getattr(app.state.basemap, "aclose", None)
        if closer is not None:
            await closer()

    app.state.on_shutdown.append(close)
    return []
