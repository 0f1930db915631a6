"""Drop-in shapes for existing callers: PlanX's ``/gis/{team}`` and the Planning Data Platform's
``/entity.json``, ``/entity/{id}.json``, ``/dataset.json``; and redline's own ``/v1/datasets``.

A submission service moves to redline by changing one base URL, so parameter names, defaults and
answer shapes follow the originals (``geometry_relation`` defaults to ``within``, nulls are ``""``,
``links`` is ``{}`` when one page holds everything). Where the original would quietly say "no"
because data is missing, redline says so: the entity search answers what is loaded (asking the
platform for the rest when the live fallback is on) and names what it could not look at in a header;
the GIS answer leaves a key it could not check out of ``constraints`` and lists it under ``unknown``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from enum import StrEnum
from typing import Annotated
from urllib.parse import parse_qs, parse_qsl, urlencode, urlunsplit

import shapely
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse

from constraints.formats import to_planx
from constraints.index import ConstraintIndex, Tolerance
from constraints.site import parse_site
from datasets.catalogue import Catalogue
from datasets.coverage import describe as describe_coverage
from datasets.live import LiveLookupError
from datasets.sync import is_stale

from .. import entity_search as es
from ..dataset_metadata import TYPOLOGIES, dataset_json, describer, specification
from ..deps import app_settings, get_catalogue, get_index, require_scope
from ..entity_search_params import MAX_ENTITY, EntitySearchParams, build_query
from ..errors import Problem
from ..responses import json_response
from .check import site_limits, split_list

log = logging.getLogger("redline.api")
router = APIRouter(tags=["platform"])
own = APIRouter(tags=["datasets"])

GEOJSON_BY_MISTAKE = (
    "The geometry parameter must be Well-Known Text (WKT), e.g. POINT(-0.1151 51.4745) or "
    "POLYGON((-0.1 51.5, -0.099 51.5, -0.099 51.501, -0.1 51.5)); it looks like GeoJSON, which this "
    "endpoint does not read. Convert it to WKT, or POST the GeoJSON to /v1/check."
)


# -- shared helpers --------------------------------------------------------------------------------


def parse_wkt(text: str, name: str, settings) -> BaseGeometry:
    """A WKT query geometry, or a 422/413 problem that says what is wrong with it."""
    text = text.strip()

    def refuse(detail: str, kind: str, status: int = 422) -> Problem:
        title = "Payload too large" if status == 413 else "The request is not valid"
        return Problem(status, title, detail, type=f"/problems/{kind}", errors=[{"pointer": f"/{name}", "in": "query", "detail": detail}])

    if text.startswith("{") or text.startswith("["):
        raise refuse(GEOJSON_BY_MISTAKE, "geometry-not-wkt")
    try:
        geom = shapely.from_wkt(text)
    except (shapely.errors.GEOSException, ValueError, TypeError) as err:
        raise refuse(
            f"{name} is not valid WKT ({err}); expected e.g. POINT(-0.1151 51.4745) or POLYGON((...)) in EPSG:4326 lon/lat",
            "invalid-wkt",
        ) from None
    if geom is None or geom.is_empty:
        raise refuse(f"{name} is an empty geometry; give a point or polygon in EPSG:4326 lon/lat", "empty")
    vertices = int(shapely.get_num_coordinates(geom))
    if settings.max_vertices and vertices > settings.max_vertices:
        raise refuse(f"{name} has {vertices} vertices; at most {settings.max_vertices} are accepted: simplify it", "too-many-vertices", 413)
    coords = shapely.get_coordinates(geom)
    if not shapely.is_valid_input(geom) or not (abs(coords) < 1e300).all():
        raise refuse(f"{name} has coordinates that are not finite numbers", "not-finite")
    return geom


def _links(request: Request, count: int, limit: int, offset: int) -> dict:
    """The platform's ``first/last/next/prev`` links, with its arithmetic at the page edges.

    ``{}`` when one page holds everything; ``last`` is ``(count // limit) * limit`` (an empty page
    when ``count`` is a multiple of ``limit``), ``next`` goes no further than ``last``, and ``prev``
    is given only when a whole page fits before ``offset``.
    """
    if count == 0 or count <= limit:
        return {}
    url = request.url
    asked = parse_qs(url.query)  # as the platform: blank values dropped, repeated keys grouped

    def link(off: int) -> str:
        query = {k: v for k, v in asked.items() if k != "offset"} | ({"limit": asked["limit"]} if "limit" in asked else {"limit": [str(limit)]})
        query = query | ({"offset": [str(off)]} if off else {})
        return urlunsplit((url.scheme, url.netloc, url.path, urlencode(query, doseq=True), ""))

    last = (count // limit) * limit
    links = {"first": link(0)}
    if 0 < last <= count:
        links["last"] = link(last)
    if offset + limit < count and offset + limit <= last:
        links["next"] = link(offset + limit)
    if offset != 0 and offset - limit >= 0:
        links["prev"] = link(offset - limit)
    return links


def _loaded_and_missing(names: list[str] | None, index: ConstraintIndex) -> tuple[list[str] | None, list[str]]:
    """The requested datasets held here (None: every one), and those that are not."""
    if not names:
        return None, []
    layers = index.snapshot.layers
    return [n for n in names if n in layers], [n for n in names if n not in layers]


# -- /entity.json and /entity.geojson ---------------------------------------------------------------


def _search_query(params: EntitySearchParams, index: ConstraintIndex, settings) -> tuple[list[str], es.SearchQuery]:
    """The datasets asked for that are not loaded here, and the search over what is."""
    snapshot = index.snapshot
    typologies = set(TYPOLOGIES) | {d.get("typology", "") for d in specification().values()}
    for layer in snapshot.layer_list:
        typologies |= set(es.shown(layer, "typology"))
    query = build_query(
        params,
        parse_geometry=lambda text, name: parse_wkt(text, name, settings),
        known_datasets=set(specification()) | set(snapshot.layers),
        known_typologies=typologies - {""},
        snapshot=snapshot,
    )
    loaded, missing = _loaded_and_missing(query.datasets, index)
    if missing:
        query = dataclasses.replace(query, datasets=loaded)
    if len(query.geometries) > settings.max_geometries:
        raise Problem(
            413,
            "Payload too large",
            f"{len(query.geometries)} geometries were given; at most {settings.max_geometries} are accepted in one request",
        )
    return missing, query


def _platform_feature(entity: dict, properties: dict) -> dict:
    """A GeoJSON Feature, as ``/entity.geojson`` gives it, from an ``/entity.json`` entity of the platform."""
    wkt = entity.get("geometry") or entity.get("point") or ""
    geometry = None
    with contextlib.suppress(shapely.errors.GEOSException, ValueError, TypeError):
        geometry = mapping(shapely.from_wkt(wkt)) if wkt else None
    props = {k: v for k, v in properties.items() if k not in ("geometry", "point")}
    return {"geometry": geometry, "type": "Feature", "properties": props}


def _live_entities(request: Request, missing: list[str], geojson: bool) -> tuple[list[dict], str | None]:
    """The caller's own query asked of the platform for the datasets not held here, or why it could not be."""
    live = request.app.state.live
    params = [(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True) if k != "dataset"]
    if geojson:  # features need the geometry, whatever the caller excluded from the properties
        params = [(k, v) for k, v in params if k not in ("field", "exclude_field")]
    params += [("dataset", name) for name in missing]
    try:
        return live.search(params), None
    except LiveLookupError as err:
        return [], str(err)


def _count_missing(request: Request, names: list[str], answered: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and names:
        # a name the platform does not publish is the caller's to choose: one label for them all
        known = specification().keys() | set(request.app.state.catalogue.datasets())
        metrics.count_entity_search_datasets([n if n in known else "(other)" for n in names], answered)


async def _entity_search(request: Request, index: ConstraintIndex, params: EntitySearchParams, settings, geojson: bool):
    """The platform's entity search over what is loaded here, and over the platform for what is not.

    A dataset that is not loaded never fails the query: with the live fallback on, the platform answers
    for it (the platform's semantics: an entity absent from the answer is not there); otherwise, or when
    the platform fails, it is answered with no entities and named in ``X-Redline-Datasets-Not-Loaded``,
    the log and the metrics, so a caller that reads headers can tell "none" from "not looked at".
    """
    missing, query = _search_query(params, index, settings)
    snapshot = index.snapshot
    # as on the platform, ``field`` shapes the JSON entities only; GeoJSON properties take exclude_field alone
    fields = None if geojson else split_list(params.field)
    excluded = split_list(params.exclude_field)
    headers: dict[str, str] = {}
    live_rows: list[dict] = []
    if missing and request.app.state.live is not None:
        live_rows, failure = await run_in_threadpool(_live_entities, request, missing, geojson)
        if failure is None:
            headers["X-Redline-Datasets-Live"] = ",".join(missing)
            _count_missing(request, missing, "live")
        else:
            log.warning("entity search: the live platform failed for %r (%s); answered without them", missing, failure)
            _count_missing(request, missing, "live-failed")
    if missing and "X-Redline-Datasets-Live" not in headers:
        headers["X-Redline-Datasets-Not-Loaded"] = ",".join(missing)
        if request.app.state.live is None:
            log.warning("entity search: datasets not loaded here, answered without them: %r", missing)
            _count_missing(request, missing, "not-loaded")

    def row(entity: dict, layer_row=None) -> dict:
        selected = es.select_fields(entity, fields, excluded)
        if not geojson:
            return selected
        if layer_row is None:
            return _platform_feature(entity, selected)
        return es.entity_feature(*layer_row, selected)

    def work():
        if not live_rows:
            result = es.search(snapshot, query)
            return result.count, [row(es.entity_json(layer, r), (layer, r)) for layer, r in result.hits]
        # merge by entity number, as the platform orders: enough of ours to fill the page, and theirs
        wanted = query.offset + query.limit
        ours = es.search(snapshot, dataclasses.replace(query, offset=0, limit=wanted))
        merged = [(int(layer.entity[r]), 0, (layer, r)) for layer, r in ours.hits]
        merged += [(int(e.get("entity") or 0), 1, e) for e in live_rows]
        merged.sort(key=lambda item: (item[0], item[1]))
        page = merged[query.offset : wanted]
        rows = [row(es.entity_json(*item), item) if source == 0 else row(item) for _, source, item in page]
        return ours.count + len(live_rows), rows

    count, rows = await run_in_threadpool(work)
    links = _links(request, count, query.limit, query.offset)
    if geojson:
        response = json_response(
            {"type": "FeatureCollection", "features": rows, "links": links},
            media_type="application/geo+json",
        )
    else:
        response = json_response({"entities": rows, "links": links, "count": count})
    response.headers.update(headers)
    return response


SEARCH_REFUSALS = {
    422: {"description": "A parameter the platform refuses too, in the platform's shape: {\"detail\": [{\"loc\", \"msg\", \"type\"}]}"}
}


def _search_route(path: str, summary: str, *, geojson: bool) -> None:
    """``/entity.json`` and ``/entity.geojson``: one search, two shapes of answer."""

    async def search(
        request: Request,
        params: Annotated[EntitySearchParams, Query()],
        principal=require_scope("check", public=True),
        index: ConstraintIndex = Depends(get_index),
        settings=Depends(app_settings),
    ):
        return await _entity_search(request, index, params, settings, geojson=geojson)

    search.__name__ = f"entity_search_{'geojson' if geojson else 'json'}"
    router.get(path, summary=summary, responses=SEARCH_REFUSALS)(search)


_search_route("/entity.json", "Search entities (the Planning Data Platform's /entity.json)", geojson=False)
_search_route("/entity.geojson", "Search entities as GeoJSON (the Planning Data Platform's /entity.geojson)", geojson=True)


def _one_entity(index: ConstraintIndex, entity: int):
    found = es.find_entity(index.snapshot, entity)
    if found is None:
        raise Problem(
            404,
            "Not found",
            f"entity not found: {entity} is not in any dataset loaded here; see /dataset.json for what is loaded",
            type="/problems/entity-not-found",
        )
    return found


ENTITY_ID = Path(..., ge=0, le=MAX_ENTITY, description="Entity number, e.g. 44000001")


def _entity_route(path: str, summary: str, *, geojson: bool) -> None:
    """``/entity/{id}.json`` and ``/entity/{id}.geojson``: one entity, as the platform's JSON or a Feature."""

    def one(
        request: Request,
        entity: int = ENTITY_ID,
        principal=require_scope("check", public=True),
        index: ConstraintIndex = Depends(get_index),
    ):
        layer, row = _one_entity(index, entity)
        body = es.entity_json(layer, row)
        if geojson:
            return json_response(es.entity_feature(layer, row, body), media_type="application/geo+json")
        return json_response(body)

    one.__name__ = f"entity_{'geojson' if geojson else 'json'}"
    router.get(path, summary=summary, responses={404: {"description": "No such entity here"}})(one)


_entity_route("/entity/{entity}.json", "One entity (the Planning Data Platform's /entity/{id}.json)", geojson=False)
_entity_route("/entity/{entity}.geojson", "One entity as a GeoJSON Feature", geojson=True)


class Suffix(StrEnum):
    json = "json"
    geojson = "geojson"


CURIE_LINK = {
    "status_code": 303,
    "responses": {303: {"description": "See /entity/{entity}.{suffix}"}, 404: {"description": "No entity held here has that CURIE"}},
}


@router.get("/curie/{prefix}:{reference}.{suffix}", summary="The entity with a CURIE (the platform's /curie/{prefix}:{reference}.json): a 303 to it", **CURIE_LINK)
@router.get("/prefix/{prefix}/reference/{reference}.{suffix}", summary="The same, in the platform's long form", **CURIE_LINK)
def curie_redirect(
    request: Request,
    prefix: str = Path(..., max_length=200),
    reference: str = Path(..., max_length=1000),
    suffix: Suffix = Path(...),
    principal=require_scope("check", public=True),
    index: ConstraintIndex = Depends(get_index),
):
    """The platform's CURIE links: 303 to the entity, or to a search when several entities share the CURIE."""
    found = es.entities_with_curie(index.snapshot, prefix, reference)
    if not found:
        raise Problem(404, "Not found", f"entity not found: no entity held here has the CURIE {prefix}:{reference}", type="/problems/entity-not-found")
    base = str(request.base_url).rstrip("/")
    if len(found) > 1:
        return RedirectResponse(f"{base}/entity.{suffix.value}?{urlencode({'curie': f'{prefix}:{reference}'})}", status_code=303)
    return RedirectResponse(f"{base}/entity/{found[0]}.{suffix.value}", status_code=303)


# -- /dataset.json ---------------------------------------------------------------------------------


class DatasetListParams(BaseModel):
    """The platform's ``/dataset.json`` parameters."""

    dataset: list[str] | None = Field(None, description="Only these datasets (repeatable)")
    field: list[str] | None = Field(None, description="Only these fields of each dataset (repeatable or comma-separated)")
    exclude_field: list[str] | None = Field(None, description="Leave out these fields of each dataset")
    include_typologies: bool = Field(True, description="Also group the datasets holding entities by typology")


@router.get(
    "/dataset.json", summary="The datasets loaded here, as the platform lists them, with entity-count"
)
def datasets_json(
    request: Request,
    params: Annotated[DatasetListParams, Query()],
    principal=require_scope("check", public=True),
    index: ConstraintIndex = Depends(get_index),
):
    wanted = set(split_list(params.dataset) or ())
    datasets = [
        dataset_json(name, len(layer), layer.entry)
        for name, layer in sorted(index.snapshot.layers.items())
        if not wanted or name in wanted
    ]
    body: dict = {"datasets": datasets}
    if params.include_typologies:
        typologies: dict[str, dict] = {}
        for dataset in datasets:
            if dataset["entity-count"] > 0:
                typologies.setdefault(dataset["typology"], {"dataset": []})["dataset"].append(dataset)
        body["typologies"] = typologies
    # the platform applies field, then exclude_field, to the list (not to the typology groups)
    fields = {f.replace("-", "_") for f in split_list(params.field) or ()}
    excluded = {f.replace("-", "_") for f in split_list(params.exclude_field) or ()}
    body["datasets"] = [
        {k: v for k, v in d.items() if (not fields or k.replace("-", "_") in fields) and k.replace("-", "_") not in excluded}
        for d in datasets
    ]
    return json_response(body)


@router.get(
    "/dataset/{name}.json",
    summary="One dataset's metadata (the platform's /dataset/{name}.json)",
    responses={404: {"description": "Not loaded here: {\"detail\": \"...\"} as on the platform"}},
)
def dataset_one(
    request: Request,
    name: str = Path(..., max_length=200),
    principal=require_scope("check", public=True),
    index: ConstraintIndex = Depends(get_index),
):
    layer = index.snapshot.layers.get(name)
    if layer is None:
        raise Problem(
            404,
            "Not found",
            f"dataset not found: {name!r} is not loaded here; loaded: {', '.join(sorted(index.snapshot.layers))}",
            type="/problems/dataset-not-loaded",
        )
    return json_response(dataset_json(name, len(layer), layer.entry))


# -- /gis/{team} ------------------------------------------------------------------------------------


def gis_keys(vals: list[str] | None, catalogue: Catalogue, council: str) -> list[str] | None:
    """The keys to answer for PlanX's ``vals``, with what PlanX derives from them.

    PlanX asks for base keys and answers their derived keys too: ``flood`` brings ``flood.zoneTwo``,
    ``listed`` the grades, ``articleFour`` the team's granular keys, ``designated.*`` brings ``designated``.
    A value that is not a key of the catalogue is dropped, as PlanX drops values it has no dataset for.
    """
    wanted = split_list(vals)
    if not wanted:
        return None
    team = catalogue.article4_council(council)
    known = catalogue.keys() + [r.key for r in catalogue.article4_rules(council)]
    if team is not None:
        known.append(team.caz_key)
        if "articleFour.caz" in wanted:
            wanted = [*wanted, team.caz_key]  # PlanX answers the zone under the team's own key
    keys = []
    for key in known:
        if key in wanted or any(key.startswith(v + ".") for v in wanted):
            keys.append(key)
        elif key in catalogue and set(catalogue.get(key).any_of) & set(wanted):
            keys.append(key)
    return keys


def _no_geom(team: str) -> Problem:
    # PlanX answers a request without ``geom`` 400 {"error": "<team> is not a supported local authority"},
    # and its editor shows ``error``; the problem carries the same member beside its own.
    detail = f"{team} is not a supported local authority without a site: send geom, the site as WKT in EPSG:4326, e.g. POINT(-0.1151 51.4745)"
    return Problem(400, "Bad request", detail, type="/problems/geom-missing", error=detail, errors=[{"pointer": "/geom", "in": "query", "detail": "geom is required"}])


@router.get(
    "/gis/{team}",
    summary="PlanX's GIS answer for a site (drop-in for api.editor.planx.uk/gis/{team})",
    description="``geom`` is the site as WKT (EPSG:4326); ``vals`` the keys wanted (comma-separated; all when absent). "
    "The team's granular article 4 keys are included. A key that could not be checked (its data is not loaded, "
    "or does not cover the site) is left out of ``constraints``, so that PlanX asks the applicant rather than "
    "recording \"does not apply\", and is listed with its reason under ``unknown``.",
    responses={400: {"description": "No geom, as PlanX answers"}, 413: {"description": "Site too large"}, 422: {"description": "The site cannot be checked"}},
)
async def gis(
    request: Request,
    team: str = Path(
        ...,
        max_length=100,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="PlanX team slug, the council, e.g. lambeth",
    ),
    geom: str | None = Query(None, max_length=2_000_000, description="The site as WKT in EPSG:4326 lon/lat (required)"),
    vals: list[str] | None = Query(None, description="Constraint keys, comma-separated"),
    principal=require_scope("check", public=True),
    index: ConstraintIndex = Depends(get_index),
    catalogue: Catalogue = Depends(get_catalogue),
    settings=Depends(app_settings),
):
    if geom is None or not geom.strip():
        raise _no_geom(team)
    council = team  # PlanX looks team slugs up exactly: "Lambeth" is not "lambeth"
    geometry = parse_wkt(geom, "geom", settings)
    site = parse_site(geometry, site_limits(settings))
    keys = gis_keys(vals, catalogue, council)
    tolerance = Tolerance(settings.tolerance_m2, settings.tolerance_pct)
    source = str(request.url)
    describe = describer(index.snapshot)

    def work():
        answer = index.check(site, tolerance=tolerance, council=council, keys=keys)
        body = to_planx(answer, catalogue, source, describe)
        if catalogue.article4_council(council) is not None:
            # PlanX renames the Central Activities Zone to the team's own key (articleFour.lambeth.caz),
            # which the check answers with the team's granular keys
            body["constraints"].pop("articleFour.caz", None)
            body["unknown"].pop("articleFour.caz", None)
        body["provenance"] = answer["provenance"]
        body["site"] = answer["site"]
        return body

    body = await request.app.state.check_thread.run(work)
    request.state.checked = True
    return json_response(body)


# -- /v1/datasets -----------------------------------------------------------------------------------


@own.get(
    "/v1/datasets", summary="Every cached dataset: count, source, loaded-at, ETag, stale flag and attribution"
)
def v1_datasets(
    request: Request,
    principal=require_scope("check"),
    index: ConstraintIndex = Depends(get_index),
    catalogue: Catalogue = Depends(get_catalogue),
    settings=Depends(app_settings),
):
    snap = index.snapshot
    out = []
    for name, layer in sorted(snap.layers.items()):
        entry = layer.entry
        meta = dataset_json(name, len(layer), entry)
        out.append(
            {
                "dataset": name,
                "name": meta["name"],
                "count": len(layer),
                "source": entry.get("source"),
                "loaded_at": entry.get("loaded_at"),
                "etag": entry.get("etag"),
                "last_modified": entry.get("last_modified"),
                "entry_date": entry.get("entry_date"),
                "version": entry.get("version"),
                "stale": is_stale(entry, stale_after_hours=settings.stale_after_hours),
                "covers": describe_coverage(entry),
                "last_error": entry.get("last_error"),
                "licence": meta["licence"],
                "licence_text": meta["licence-text"],
                "attribution": meta["attribution"],
                "attribution_text": meta["attribution-text"],
                "keys": [c.key for c in catalogue.constraints if name in c.datasets],
            }
        )
    missing = [d for d in catalogue.datasets() if d not in snap.layers]
    return json_response(
        {
            "datasets": out,
            "missing": missing,
            "data_version": snap.data_version,
            "stale_after_hours": settings.stale_after_hours,
        },
    )


def install(app) -> list[type[Exception]]:
    from ..examples import attach

    app.include_router(router)
    app.include_router(own)
    attach(app)  # examples captured from real answers over the samples, into /openapi.json
    return []
