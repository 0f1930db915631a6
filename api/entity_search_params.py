"""The query parameters of the Planning Data Platform's entity search, declared once, and their meaning.

Every parameter the platform's ``/entity.json`` takes (digital-land.info ``QueryFilters``) is either
applied with the platform's meaning or refused with the platform's status (422) and error shape; none
is accepted and then ignored. Where the platform's own code ignores a value it accepts (a date match
other than ``entry_date_match``, ``theme``, a postcode ``q``), redline says so with a 422 naming the
parameter rather than answering as if it had been applied; the README lists those differences.

Examples
--------
>>> params = EntitySearchParams(dataset=["tree"], entry_date_year="2021", entry_date_match="since")
>>> query = build_query(params, parse_geometry=None, known_datasets={"tree"}, known_typologies={"geography"})
>>> query.dates
[DateFilter(column='entry-date', operator='since', value=datetime.date(2021, 1, 1))]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date
from enum import StrEnum
from typing import Annotated

import shapely
from pydantic import BaseModel, Field
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from . import entity_search as es
from .errors import Problem, invalid_parameter
from .routes.check import split_list

_CURIE_PREFIX = re.compile(r"[a-zA-Z_\d]+[a-zA-Z_\-\d]+")
_CURIE_REFERENCE = re.compile(r"\S(.*\S)?")
DATE_FIELDS = ("entry_date", "start_date", "end_date")


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


DateMatch = StrEnum("DateMatch", {name: name for name in es.DATE_OPERATORS})

MAX_ENTITY = 2**63 - 1  # entity numbers are int64 in every layer; past that numpy cannot even compare them
EntityNumber = Annotated[int, Field(ge=1, le=MAX_ENTITY)]
_DATE_PART = "Empty means not given, as in the platform's search form"


def _date_part(field: str, part: str) -> object:
    match = field.replace("_date", "_date_match")
    return Field(None, description=f"{part} of the {field.replace('_', ' ')}, with {match} (a whole number). {_DATE_PART}")


class EntitySearchParams(BaseModel):
    """The platform's entity search parameters, with its names, types and limits."""

    dataset: list[str] | None = Field(None, description="Dataset name (repeatable), e.g. conservation-area")
    typology: list[str] | None = Field(None, description="Typology of the entities, e.g. geography")
    prefix: list[str] | None = Field(None, description="Prefix of the entities' CURIE")
    reference: list[str] | None = Field(None, description="Entity reference (repeatable)")
    curie: list[str] | None = Field(None, description="prefix:reference of an entity; every one given must match")
    entity: list[EntityNumber] | None = Field(None, description="Entity number (repeatable)")
    organisation_entity: list[EntityNumber] | None = Field(None, description="Entity number of the organisation that manages the entities")
    organisation: list[str] | None = Field(None, description="prefix:reference, matched against the entity itself as the platform does")
    quality: list[str] | None = Field(None, description="Quality of the entity's data, e.g. authoritative, some")
    period: list[Period] | None = Field(None, description="current (no end date or a future one), historical, or all (default)")
    entries: list[Period] | None = Field(None, description="Older name of period, as PlanX sends it")

    entry_date: date | None = Field(None, description="Entities entered on this day (YYYY-MM-DD)")
    entry_date_year: str | None = _date_part("entry_date", "Year")
    entry_date_month: str | None = _date_part("entry_date", "Month")
    entry_date_day: str | None = _date_part("entry_date", "Day")
    entry_date_match: DateMatch | None = Field(None, description="match (default), before, since or empty (no entry date)")
    start_date: date | None = Field(None, description="Entities starting on this day (YYYY-MM-DD)")
    start_date_year: str | None = _date_part("start_date", "Year")
    start_date_month: str | None = _date_part("start_date", "Month")
    start_date_day: str | None = _date_part("start_date", "Day")
    start_date_match: DateMatch | None = Field(None, description="match (default), before, since or empty (no start date)")
    end_date: date | None = Field(None, description="Entities ending on this day (YYYY-MM-DD)")
    end_date_year: str | None = _date_part("end_date", "Year")
    end_date_month: str | None = _date_part("end_date", "Month")
    end_date_day: str | None = _date_part("end_date", "Day")
    end_date_match: DateMatch | None = Field(None, description="match (default), before, since or empty (no end date)")

    geometry: list[str] | None = Field(None, description="WKT geometry in EPSG:4326 lon/lat (repeatable; any matches)")
    geometry_entity: list[EntityNumber] | None = Field(None, description="Take the geometry from these entities")
    geometry_reference: list[str] | None = Field(None, description="Take the geometry from the entities with these references")
    geometry_curie: list[str] | None = Field(None, description="Take the geometry from the entities with these prefix:reference")
    geometry_relation: Relation = Field(Relation.within, description="DE-9IM relation of the entity to the geometry; the platform's default is 'within'")
    longitude: float | None = Field(None, ge=-180, le=180, description="With latitude: entities whose area contains this point")
    latitude: float | None = Field(None, ge=-90, le=90)

    theme: list[str] | None = Field(None, description="Not a filter on the platform either: refused, use dataset")
    q: str | None = Field(None, description="Postcode or UPRN search: not available here (refused)")

    field: list[str] | None = Field(None, description="Only these fields (repeatable or comma-separated); entity is always kept. JSON only, as on the platform")
    exclude_field: list[str] | None = Field(None, description="Leave out these fields, e.g. geometry,point")
    limit: int = Field(10, ge=1, le=500, description="Entities per page (at most 500)")
    offset: int = Field(0, ge=0, le=10_000_000, description="Skip this many entities")


def split(values: list[str] | None) -> list[str] | None:
    """Repeated and comma-separated values, blanks dropped (the platform drops empty values too)."""
    return split_list(values) or None


def _curies(values: list[str] | None, name: str) -> list[tuple[str, str]] | None:
    """``prefix:reference`` pairs, refused as the platform refuses them."""
    if values is None:
        return None
    out = []
    for value in values:
        parts = value.split(":")
        if len(parts) != 2 or not _CURIE_PREFIX.fullmatch(parts[0]) or not _CURIE_REFERENCE.fullmatch(parts[1]):
            raise invalid_parameter(name, "curie must be in form 'prefix:reference'")
        out.append((parts[0], parts[1]))
    return out


def _whole_number(params: EntitySearchParams, name: str, low: int, high: int | None) -> int | None:
    raw = getattr(params, name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise invalid_parameter(name, "value is not a valid integer", type="type_error.integer", parsed=False) from None
    if value < low or (high is not None and value > high):
        bound = f"greater than or equal to {low}" + (f" and less than or equal to {high}" if high else "")
        raise invalid_parameter(name, f"ensure this value is {bound}")
    return value


def _date_filters(params: EntitySearchParams) -> list[es.DateFilter]:
    out = []
    for name in DATE_FIELDS:
        column = name.replace("_", "-")
        exact = getattr(params, name)
        if exact is not None:
            out.append(es.DateFilter(column, "match", exact))
        year = _whole_number(params, f"{name}_year", 1, None)
        month = _whole_number(params, f"{name}_month", 1, 12)
        day = _whole_number(params, f"{name}_day", 1, 31)
        match = getattr(params, f"{name}_match")
        operator = match.value if match is not None else "match"
        if operator == "empty":
            out.append(es.DateFilter(column, "empty"))
            continue
        if year is None:
            given = [p for p, v in (("month", month), ("day", day), ("match", match)) if v is not None]
            if given:
                raise invalid_parameter(
                    f"{name}_year",
                    f"{name}_year is needed with {', '.join(f'{name}_{p}' for p in given)}: the date is compared from its year",
                )
            continue
        try:
            value = date(year, month or 1, day or 1)
        except ValueError as err:
            raise invalid_parameter(f"{name}_day", f"{year}-{month or 1}-{day or 1} is not a date ({err})") from None
        out.append(es.DateFilter(column, operator, value))
    return out


def _geometries(values: list[str] | None, parse: Callable[[str, str], BaseGeometry]) -> list[BaseGeometry]:
    """The ``geometry`` values; the platform refuses blank, unreadable and invalid (self-intersecting) ones."""
    out = []
    for text in values or []:
        if not text.strip():
            raise invalid_parameter("geometry", f"Invalid geometry {text}", type="value_error.invalidgeometry", ctx={"reason": "the geometry is blank"})
        try:
            geom = parse(text, "geometry")
        except Problem as problem:
            if problem.status != 422:
                raise
            raise invalid_parameter(
                "geometry", f"Invalid geometry {text}", type="value_error.invalidgeometry", ctx={"reason": problem.detail}
            ) from None
        if not geom.is_valid:
            raise invalid_parameter(
                "geometry",
                f"Invalid geometry {text}",
                type="value_error.invalidgeometry",
                ctx={"reason": f"{explain_validity(geom)}: a query geometry must be valid (no self-intersection)"},
            )
        out.append(geom)
    return out


def _refuse_unknown(name: str, values: list[str] | None, known: Iterable[str], plural: str) -> None:
    missing = sorted(set(values or ()) - set(known))
    if missing:
        names = sorted(known)
        raise invalid_parameter(
            name,
            f"Requested {plural} do not exist: {','.join(missing)}. Valid {name} names: {','.join(names)}",
            type=f"value_error.{name}valuenotfound",
            ctx={"dataset_names": names},
        )


def _held(snapshot, name: str, geoms: list[BaseGeometry], asked: list) -> list[BaseGeometry]:
    # the platform answers "nothing" for an entity it does not hold; redline may simply not have loaded it
    if asked and not geoms:
        raise invalid_parameter(
            name,
            f"no entity held here matches {','.join(map(str, asked))}; load its dataset, or give the geometry as WKT",
            type="value_error.entitynotheld",
        )
    return geoms


def build_query(
    params: EntitySearchParams,
    *,
    parse_geometry: Callable[[str, str], BaseGeometry] | None,
    known_datasets: Iterable[str],
    known_typologies: Iterable[str],
    snapshot=None,
) -> es.SearchQuery:
    """The search ``params`` ask for, or a 422 naming the first parameter the platform would refuse too."""
    if params.theme and split(params.theme):
        raise invalid_parameter("theme", "theme is not a filter of the entity search (the platform ignores it): use dataset")
    if params.q and params.q.strip():
        raise invalid_parameter("q", "postcode and UPRN search needs the Ordnance Survey's places API, which redline does not use: give longitude and latitude")
    datasets = split(params.dataset)
    _refuse_unknown("dataset", datasets, known_datasets, "datasets")
    typologies = split(params.typology)
    _refuse_unknown("typology", typologies, known_typologies, "typologies")
    curies = _curies(params.curie, "curie")
    organisations = _curies(params.organisation, "organisation")
    geometry_curies = _curies(params.geometry_curie, "geometry_curie")
    if (params.longitude is None) != (params.latitude is None):
        missing = "longitude" if params.longitude is None else "latitude"
        raise invalid_parameter(missing, "longitude and latitude go together: give both, or neither")
    geometries = _geometries(params.geometry, parse_geometry) if params.geometry else []
    near = []
    for name, asked, found in (
        ("geometry_entity", params.geometry_entity, lambda v: es.geometries_of(snapshot, entities=v)),
        ("geometry_reference", split(params.geometry_reference), lambda v: es.geometries_of(snapshot, references=v)),
        ("geometry_curie", geometry_curies, lambda v: es.geometries_of(snapshot, curies=v)),
    ):
        if asked:
            near.append(_held(snapshot, name, found(asked), asked))
    periods = [p.value for p in (params.period or [])] + [p.value for p in (params.entries or [])]
    all_curies = (curies or []) + (organisations or [])
    return es.SearchQuery(
        datasets=datasets,
        geometries=geometries,
        near=near,
        relation=params.geometry_relation.value,
        point=shapely.Point(params.longitude, params.latitude) if params.longitude is not None else None,
        entities=params.entity or None,
        references=split(params.reference),
        organisation_entities=params.organisation_entity or None,
        typologies=typologies,
        prefixes=split(params.prefix),
        qualities=split(params.quality),
        curies=all_curies or None,
        dates=_date_filters(params),
        periods=periods or None,
        limit=params.limit,
        offset=params.offset,
    )
