"""Drop-in shapes for existing callers: PlanX's ``/gis/{team}`` and the Planning Data Platform's
``/entity.json``, ``/entity/{id}.json``, ``/dataset.json``; and redline's own ``/v1/datasets``.

A submission service moves to redline by changing one base URL, so parameter names, defaults and
answer shapes follow the originals (``geometry_relation`` defaults to ``within``, nulls are ``""``,
``links`` is ``{}`` when one page holds everything). Where the original would quietly say "no"
because data is missing, redline says so instead: a dataset that is not loaded is refused by name
in the entity search, and reported as not checked (``value: null``) in the GIS answer.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode, urlunsplit

import shapely
from fastapi import APIRouter, Depends, Path, Query, Request
from shapely.geometry.base import BaseGeometry
from starlette.concurrency import run_in_threadpool

from constraints.formats import to_planx
from constraints.index import ConstraintIndex, Tolerance
from constraints.site import parse_site
from datasets.catalogue import Catalogue

from .. import entity_search as es
from ..dataset_metadata import dataset_json
from ..deps import get_catalogue, get_index, get_settings, require_scope
from ..errors import Problem
from .check import json_response, site_limits, split_list

router = APIRouter(tags=["platform"])
own = APIRouter(tags=["datasets"])

GEOJSON_BY_MISTAKE = (
    "The geometry parameter must be Well-Known Text (WKT), e.g. POINT(-0.1151 51.4745) or "
    "POLYGON((-0.1 51.5, -0.099 51.5, -0.099 51.501, -0.1 51.5)); it looks like GeoJSON, which this "
    "endpoint does not read. Convert it to WKT, or POST the GeoJSON to /v1/check."
)


class Relation(StrEnum):
    within = "within"
    intersects = "intersects"
    contains = "contains"
    covers = "covers"
    coveredby = "coveredby"
    overlaps = "overlaps"
    touches = "touches"
    crosses = "crosses"
    equals = "equals"
    disjoint = "disjoint"


class Period(StrEnum):
    current = "current"
    historical = "historical"
    all = "all"


# -- shared helpers --------------------------------------------------------------------------------


def parse_wkt(text: str, name: str, settings) -> BaseGeometry:
    """A WKT query geometry, or a 422/413 problem that says what is wrong with it."""
    text = text.strip()
    pointer = {"pointer": f"/{name}", "in": "query"}
    if text.startswith("{") or text.startswith("["):
        raise Problem(
            422,
            "The request is not valid",
            GEOJSON_BY_MISTAKE,
            type="/problems/geometry-not-wkt",
            errors=[pointer | {"detail": GEOJSON_BY_MISTAKE}],
        )
    try:
        geom = shapely.from_wkt(text)
    except (shapely.errors.GEOSException, ValueError, TypeError) as err:
        detail = f"{name} is not valid WKT ({err}); expected e.g. POINT(-0.1151 51.4745) or POLYGON((...)) in EPSG:4326 lon/lat"
        raise Problem(
            422,
            "The request is not valid",
            detail,
            type="/problems/invalid-wkt",
            errors=[pointer | {"detail": detail}],
        ) from None
    if geom is None or geom.is_empty:
        detail = f"{name} is an empty geometry; give a point or polygon in EPSG:4326 lon/lat"
        raise Problem(
            422,
            "The request is not valid",
            detail,
            type="/problems/empty",
            errors=[pointer | {"detail": detail}],
        )
    vertices = int(shapely.get_num_coordinates(geom))
    if settings.max_vertices and vertices > settings.max_vertices:
        detail = f"{name} has {vertices} vertices; at most {settings.max_vertices} are accepted: simplify it"
        raise Problem(
            413,
            "Payload too large",
            detail,
            type="/problems/too-many-vertices",
            errors=[pointer | {"detail": detail}],
        )
    coords = shapely.get_coordinates(geom)
    if not shapely.is_valid_input(geom) or not (abs(coords) < 1e300).all():
        detail = f"{name} has coordinates that are not finite numbers"
        raise Problem(
            422,
            "The request is not valid",
            detail,
            type="/problems/not-finite",
            errors=[pointer | {"detail": detail}],
        )
    return geom


def _links(request: Request, count: int, limit: int, offset: int) -> dict:
    """The platform's ``first/prev/next/last`` links; ``{}`` when one page holds everything."""
    if count == 0 or count <= limit:
        return {}
    url = request.url
    pairs = [(k, v) for k, v in parse_qsl(url.query, keep_blank_values=True) if k != "offset"]
    if not any(k == "limit" for k, _ in pairs):
        pairs.append(("limit", str(limit)))

    def link(off: int) -> str:
        query = urlencode(pairs + ([("offset", str(off))] if off else []))
        return urlunsplit((url.scheme, url.netloc, url.path, query, ""))

    last = (count // limit) * limit
    if last == count:
        last -= limit
    links = {"first": link(0)}
    if 0 < last:
        links["last"] = link(last)
    if offset + limit < count:
        links["next"] = link(offset + limit)
    if offset > 0:
        links["prev"] = link(max(0, offset - limit))
    return links


MAX_ENTITY = 2**63 - 1  # entity numbers are int64 in every layer


def _entity_number(values: list[str] | None) -> list[int] | None:
    if not values:
        return None
    out = []
    for raw in split_list(values) or []:
        try:
            number = int(raw)
            if not 0 <= number <= MAX_ENTITY:  # past int64 no layer can hold it, and numpy cannot compare it
                raise ValueError(raw)
            out.append(number)
        except ValueError:
            detail = f"entity must be an entity number from 0 to {MAX_ENTITY}, got {raw[:40]!r}"
            raise Problem(
                422,
                "The request is not valid",
                detail,
                type="/problems/invalid-request",
                errors=[{"pointer": "/entity", "in": "query", "detail": detail}],
            ) from None
    return out


def _require_loaded(names: list[str] | None, index: ConstraintIndex) -> None:
    if not names:
        return
    layers = index.snapshot.layers
    missing = [n for n in names if n not in layers]
    if missing:
        detail = (
            f"Requested datasets are not loaded in this service: {','.join(missing)}. "
            f"Loaded dataset names: {','.join(sorted(layers))}. redline answers only from data it holds, "
            "so a missing dataset is refused rather than answered as 'no entities'"
        )
        raise Problem(
            422,
            "The request is not valid",
            detail,
            type="/problems/dataset-not-loaded",
            errors=[{"pointer": "/dataset", "in": "query", "detail": detail}],
        )


# -- /entity.json and /entity.geojson ---------------------------------------------------------------


def _search_query(
    request: Request,
    index: ConstraintIndex,
    settings,
    dataset,
    geometry,
    geometry_relation,
    longitude,
    latitude,
    entity,
    reference,
    organisation_entity,
    period,
    entries,
    limit,
    offset,
) -> es.SearchQuery:
    datasets = split_list(dataset)
    _require_loaded(datasets, index)
    geoms = [parse_wkt(g, "geometry", settings) for g in (geometry or []) if g.strip()]
    if len(geoms) > settings.max_geometries:
        raise Problem(
            413,
            "Payload too large",
            f"{len(geoms)} geometries were given; at most {settings.max_geometries} are accepted in one request",
        )
    if (longitude is None) != (latitude is None):
        detail = "longitude and latitude go together: give both, or neither"
        raise Problem(
            422,
            "The request is not valid",
            detail,
            type="/problems/invalid-request",
            errors=[
                {
                    "pointer": "/longitude" if longitude is None else "/latitude",
                    "in": "query",
                    "detail": detail,
                }
            ],
        )
    point = shapely.Point(longitude, latitude) if longitude is not None else None
    periods = [p.value for p in (period or [])] + [p.value for p in (entries or [])]
    return es.SearchQuery(
        datasets=datasets,
        geometries=geoms,
        relation=geometry_relation.value,
        point=point,
        entities=_entity_number(entity),
        references=split_list(reference),
        organisation_entities=split_list(organisation_entity),
        periods=periods or None,
        limit=limit,
        offset=offset,
    )


async def _entity_search(
    request: Request, index: ConstraintIndex, query: es.SearchQuery, field, exclude_field, geojson: bool
):
    snapshot = index.snapshot
    fields, excluded = split_list(field), split_list(exclude_field)

    def work():
        result = es.search(snapshot, query)
        rows = []
        for layer, row in result.hits:
            entity = es.entity_json(layer, row)
            rows.append(
                es.entity_feature(layer, row, es.select_fields(entity, fields, excluded))
                if geojson
                else es.select_fields(entity, fields, excluded)
            )
        return result.count, rows

    count, rows = await run_in_threadpool(work)
    links = _links(request, count, query.limit, query.offset)
    if geojson:
        return json_response(
            {"type": "FeatureCollection", "features": rows, "links": links},
            request,
            media_type="application/geo+json",
        )
    return json_response({"entities": rows, "links": links, "count": count}, request)


def _search_parameters():
    """The platform's search parameters, shared by /entity.json and /entity.geojson."""

    def dependency(
        dataset: list[str] | None = Query(
            None, description="Dataset name (repeatable), e.g. conservation-area"
        ),
        geometry: list[str] | None = Query(
            None, description="WKT geometry in EPSG:4326 lon/lat (repeatable; any matches)"
        ),
        geometry_relation: Relation = Query(
            Relation.within,
            description="DE-9IM relation of the entity to the geometry; the platform's default is 'within'",
        ),
        longitude: float | None = Query(
            None, ge=-180, le=180, description="With latitude: entities whose geometry contains this point"
        ),
        latitude: float | None = Query(None, ge=-90, le=90),
        entity: list[str] | None = Query(None, description="Entity number (repeatable)"),
        reference: list[str] | None = Query(None, description="Entity reference (repeatable)"),
        organisation_entity: list[str] | None = Query(
            None, description="Organisation entity number (repeatable)"
        ),
        period: list[Period] | None = Query(
            None, description="current (no end date or a future one), historical, or all (default)"
        ),
        entries: list[Period] | None = Query(None, description="Older name of period, as PlanX sends it"),
        field: list[str] | None = Query(
            None, description="Only these fields (repeatable or comma-separated); entity is always kept"
        ),
        exclude_field: list[str] | None = Query(
            None, description="Leave out these fields, e.g. geometry,point"
        ),
        limit: int = Query(10, ge=1, le=500, description="Entities per page (at most 500)"),
        offset: int = Query(0, ge=0, le=10_000_000, description="Skip this many entities"),
    ) -> dict:
        return locals()

    return Depends(dependency)


@router.get(
    "/entity.json",
    summary="Search entities (the Planning Data Platform's /entity.json)",
    responses={422: {"description": "A parameter is not valid, or a dataset is not loaded"}},
)
async def entity_search_json(
    request: Request,
    params: dict = _search_parameters(),
    principal=require_scope("check"),
    index: ConstraintIndex = Depends(get_index),
    settings=Depends(get_settings),
):
    field, exclude_field = params.pop("field"), params.pop("exclude_field")
    query = _search_query(request, index, settings, **params)
    return await _entity_search(request, index, query, field, exclude_field, geojson=False)


@router.get(
    "/entity.geojson",
    summary="Search entities as GeoJSON (the Planning Data Platform's /entity.geojson)",
    responses={422: {"description": "A parameter is not valid, or a dataset is not loaded"}},
)
async def entity_search_geojson(
    request: Request,
    params: dict = _search_parameters(),
    principal=require_scope("check"),
    index: ConstraintIndex = Depends(get_index),
    settings=Depends(get_settings),
):
    field, exclude_field = params.pop("field"), params.pop("exclude_field")
    query = _search_query(request, index, settings, **params)
    return await _entity_search(request, index, query, field, exclude_field, geojson=True)


def _one_entity(index: ConstraintIndex, entity: int):
    found = es.find_entity(index.snapshot, entity)
    if found is None:
        raise Problem(
            404,
            "Not found",
            f"entity {entity} is not in any dataset loaded here; see /dataset.json for what is loaded",
            type="/problems/entity-not-found",
        )
    return found


ENTITY_ID = Path(..., ge=0, le=MAX_ENTITY, description="Entity number, e.g. 44000001")


@router.get(
    "/entity/{entity}.json",
    summary="One entity (the Planning Data Platform's /entity/{id}.json)",
    responses={404: {"description": "No such entity here"}},
)
def entity_json(
    request: Request,
    entity: int = ENTITY_ID,
    principal=require_scope("check"),
    index: ConstraintIndex = Depends(get_index),
):
    layer, row = _one_entity(index, entity)
    return json_response(es.entity_json(layer, row), request)


@router.get(
    "/entity/{entity}.geojson",
    summary="One entity as a GeoJSON Feature",
    responses={404: {"description": "No such entity here"}},
)
def entity_geojson(
    request: Request,
    entity: int = ENTITY_ID,
    principal=require_scope("check"),
    index: ConstraintIndex = Depends(get_index),
):
    layer, row = _one_entity(index, entity)
    return json_response(
        es.entity_feature(layer, row, es.entity_json(layer, row)), request, media_type="application/geo+json"
    )


# -- /dataset.json ---------------------------------------------------------------------------------


@router.get(
    "/dataset.json", summary="The datasets loaded here, as the platform describes them, with entity-count"
)
def datasets_json(
    request: Request, principal=require_scope("check"), index: ConstraintIndex = Depends(get_index)
):
    snap = index.snapshot
    return json_response(
        {
            "datasets": [
                dataset_json(name, len(layer), layer.entry) for name, layer in sorted(snap.layers.items())
            ]
        },
        request,
    )


@router.get(
    "/dataset/{name}.json",
    summary="One dataset's metadata (the platform's /dataset/{name}.json)",
    responses={404: {"description": "Not loaded here"}},
)
def dataset_one(
    request: Request,
    name: str = Path(..., max_length=200),
    principal=require_scope("check"),
    index: ConstraintIndex = Depends(get_index),
):
    layer = index.snapshot.layers.get(name)
    if layer is None:
        raise Problem(
            404,
            "Not found",
            f"dataset {name!r} is not loaded here; loaded: {', '.join(sorted(index.snapshot.layers))}",
            type="/problems/dataset-not-loaded",
        )
    return json_response(dataset_json(name, len(layer), layer.entry), request)


# -- /gis/{team} ------------------------------------------------------------------------------------


def gis_keys(
    vals: list[str] | None, catalogue: Catalogue, council: str
) -> tuple[list[str] | None, list[str]]:
    """The keys to answer for PlanX's ``vals``, with what PlanX derives from them, and the unknown ones.

    PlanX asks for base keys and answers their derived keys too: ``flood`` brings ``flood.zoneTwo``,
    ``listed`` the grades, ``articleFour`` the team's granular keys, ``designated.*`` brings ``designated``.
    """
    wanted = split_list(vals)
    if not wanted:
        return None, []
    known = catalogue.keys() + [r.key for r in catalogue.article4_rules(council)]
    keys = []
    for key in known:
        if key in wanted or any(key.startswith(v + ".") for v in wanted):
            keys.append(key)
        elif key in catalogue and set(catalogue.get(key).any_of) & set(wanted):
            keys.append(key)
    unknown = [v for v in wanted if v not in known]
    return keys, unknown


def _planx_metadata(answer: dict, catalogue: Catalogue, index: ConstraintIndex) -> dict:
    """PlanX's ``metadata``: for each base key answered, the ``/dataset/{name}.json`` of its first dataset."""
    layers = index.snapshot.layers
    out = {}
    for item in answer["constraints"]:
        key = item["key"]
        if key not in catalogue or catalogue.get(key).any_of or not item["datasets"]:
            continue
        parent = key.rsplit(".", 1)[0]
        if (
            parent != key
            and parent in catalogue
            and set(catalogue.get(parent).datasets) == set(item["datasets"])
        ):
            continue  # flood.zoneTwo, listed.gradeOne: PlanX describes the parent key only
        loaded = [d for d in item["datasets"] if d in layers]
        name = loaded[0] if loaded else item["datasets"][0]
        layer = layers.get(name)
        out[key] = dataset_json(
            name, len(layer) if layer is not None else 0, layer.entry if layer is not None else None
        )
    return out


@router.get(
    "/gis/{team}",
    summary="PlanX's GIS answer for a site (drop-in for api.editor.planx.uk/gis/{team})",
    description="``geom`` is the site as WKT (EPSG:4326); ``vals`` the keys wanted (comma-separated; all when absent). "
    "The team's granular article 4 keys are included. A key whose data is not loaded answers ``value: null`` with the reason, never false.",
    responses={413: {"description": "Site too large"}, 422: {"description": "The site cannot be checked"}},
)
async def gis(
    request: Request,
    team: str = Path(
        ...,
        max_length=100,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="PlanX team slug, the council, e.g. lambeth",
    ),
    geom: str = Query(..., max_length=2_000_000, description="The site as WKT in EPSG:4326 lon/lat"),
    vals: list[str] | None = Query(None, description="Constraint keys, comma-separated"),
    principal=require_scope("check"),
    index: ConstraintIndex = Depends(get_index),
    catalogue: Catalogue = Depends(get_catalogue),
    settings=Depends(get_settings),
):
    council = team.lower()
    geometry = parse_wkt(geom, "geom", settings)
    site = parse_site(geometry, site_limits(settings))
    keys, unknown = gis_keys(vals, catalogue, council)
    tolerance = Tolerance(settings.tolerance_m2, settings.tolerance_pct)
    source = str(request.url)

    def work():
        answer = index.check(site, tolerance=tolerance, council=council, keys=keys)
        body = to_planx(answer, catalogue, source)
        caz = body["constraints"].get("articleFour.caz")
        if caz is not None and catalogue.article4_rules(council):
            # PlanX repeats the Central Activities Zone under the team's granular keys (articleFour.lambeth.caz)
            body["constraints"][f"articleFour.{council}.caz"] = {**caz, "fn": f"articleFour.{council}.caz"}
        for key in unknown:
            body["constraints"][key] = {
                "fn": key,
                "value": None,
                "text": f"not checked: redline has no data behind '{key}'",
                "category": "",
                "reason": f"'{key}' is not a key redline knows",
            }
        body["metadata"] = _planx_metadata(answer, catalogue, index)
        body["provenance"] = answer["provenance"]
        body["site"] = answer["site"]
        return body

    body = await request.app.state.check_thread.run(work)
    request.state.checked = True
    return json_response(body, request)


# -- /v1/datasets -----------------------------------------------------------------------------------


def _is_stale(stamp: str | None, cutoff: datetime) -> bool:
    if not stamp:
        return True
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")) < cutoff
    return True


@own.get(
    "/v1/datasets", summary="Every cached dataset: count, source, loaded-at, ETag, stale flag and attribution"
)
def v1_datasets(
    request: Request,
    principal=require_scope("check"),
    index: ConstraintIndex = Depends(get_index),
    catalogue: Catalogue = Depends(get_catalogue),
    settings=Depends(get_settings),
):
    snap = index.snapshot
    cutoff = datetime.now(UTC) - timedelta(hours=settings.stale_after_hours)
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
                "stale": _is_stale(entry.get("loaded_at"), cutoff),
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
        request,
    )


def install(app) -> list[type[Exception]]:
    from ..examples import attach

    app.include_router(router)
    app.include_router(own)
    attach(app)  # examples captured from real answers over the samples, into /openapi.json
    return []
