"""The Planning Data Platform's entity search (``/entity.json``), answered from the in-memory snapshot.

The platform (digital-land.info) filters its PostGIS ``entity`` table; redline filters the same
columns held as numpy arrays in each :class:`~constraints.index.Layer`, and evaluates spatial
relations in EPSG:4326 as the platform does (``ST_<relation>(entity.geometry, query)``), with a
shapely ``STRtree`` per layer built on first use and kept for the life of the snapshot.

Semantics copied from the platform:

- ``geometry_relation`` defaults to ``within``: the *entity* lies within the query geometry.
  Several ``geometry`` values are OR-ed; so are the geometries taken from ``geometry_entity``,
  ``geometry_reference`` and ``geometry_curie``, each kind being a further condition.
  ``longitude``+``latitude`` finds entities whose area contains the point (a point entity never does);
  filters of different kinds are AND-ed, values of one kind OR-ed, except ``curie``: each must hold.
- ``period``: ``current`` (no end date, or one in the future), ``historical`` (ended), ``all``.
- Results are ordered by entity number; ``count`` is the number of matches before paging.

Usage::

    result = search(snapshot, SearchQuery(datasets=["conservation-area"], limit=5))
    result.count, [e["entity"] for e in result.page(snapshot)]
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import shapely
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from constraints.formats import PLANX_DATA_FIELDS
from constraints.index import POINT, Layer, Snapshot, is_current
from constraints.index import _end_dates as parse_dates

#: The platform's DE-9IM relations, as ``relation(entity, query)``.
RELATIONS = (
    "within",
    "intersects",
    "contains",
    "covers",
    "coveredby",
    "overlaps",
    "touches",
    "crosses",
    "equals",
    "disjoint",
)

# STRtree.query(query, predicate=p) evaluates p(query, entity): swap the relations that are not symmetric.
_TREE_PREDICATE = {
    "within": "contains",
    "contains": "within",
    "covers": "covered_by",
    "coveredby": "covers",
    "intersects": "intersects",
    "overlaps": "overlaps",
    "touches": "touches",
    "crosses": "crosses",
}

#: Fields of the platform's entity model, in its order; dataset fields follow.
ENTITY_FIELDS = (*PLANX_DATA_FIELDS, "geometry", "point", "quality")
# columns the cache keeps for its own bookkeeping, not platform fields
_INTERNAL = {"source", "source-row"}
# what the platform shows when a column is empty, for the columns whose value it derives
_DEFAULTS = {"typology": "geography"}

#: How a date filter compares the entity's date with the one asked for ("empty": the entity has none).
DATE_OPERATORS = ("match", "before", "since", "empty")


@dataclass(frozen=True)
class DateFilter:
    """One date condition: ``column`` (``entry-date``, ``start-date``, ``end-date``) ``operator`` ``value``."""

    column: str
    operator: str
    value: date | None = None


@dataclass
class SearchQuery:
    """The platform's search parameters, already split and validated."""

    datasets: list[str] | None = None
    geometries: list[BaseGeometry] = field(default_factory=list)
    # geometries taken from held entities (geometry_entity, geometry_reference, geometry_curie): one list each
    near: list[list[BaseGeometry]] = field(default_factory=list)
    relation: str = "within"
    point: BaseGeometry | None = None
    entities: list[int] | None = None
    references: list[str] | None = None
    organisation_entities: list[int] | None = None
    typologies: list[str] | None = None
    prefixes: list[str] | None = None
    qualities: list[str] | None = None
    curies: list[tuple[str, str]] | None = None  # every one must hold, as on the platform
    dates: list[DateFilter] = field(default_factory=list)
    periods: list[str] | None = None
    limit: int = 10
    offset: int = 0


@dataclass
class SearchResult:
    count: int
    hits: list[tuple[Layer, int]]  # the page: (layer, row), ordered by entity


_cache_lock = threading.Lock()


def _per_snapshot(snapshot: Snapshot, kind: str, key: str, build):
    """Something derived from one layer, built once per snapshot (a reload makes a new snapshot)."""
    with _cache_lock:
        # kept on the snapshot itself (SnapshotCaches.per_layer), so it goes when a reload replaces it
        store = snapshot.caches.per_layer
        value = store.get((kind, key))
        if value is None:
            value = store[(kind, key)] = build()
        return value


def layer_tree(snapshot: Snapshot, layer: Layer) -> shapely.STRtree:
    """A 4326 STRtree of one layer."""
    return _per_snapshot(snapshot, "trees", layer.name, lambda: shapely.STRtree(layer.geometry))


def shown(layer: Layer, name: str) -> np.ndarray:
    """A column as the platform shows it: ``""`` (or the platform's default) where the layer has none."""
    values = layer.columns.get(name)
    default = _DEFAULTS.get(name, layer.name if name == "prefix" else "")
    if values is None or not len(values):
        return np.full(len(layer), default, dtype=object)
    values = np.where(values == "", default, values) if default else values
    return values.astype(str)


def _dates(snapshot: Snapshot, layer: Layer, column: str) -> np.ndarray:
    if column == "end-date":
        return layer.end_date
    return _per_snapshot(snapshot, column, layer.name, lambda: parse_dates(shown(layer, column)))


def _related_rows(snapshot: Snapshot, layer: Layer, geoms: list[BaseGeometry], relation: str) -> np.ndarray:
    """Rows whose geometry stands in ``relation`` to any of ``geoms``."""
    tree = layer_tree(snapshot, layer)
    found = []
    for geom in geoms:
        if relation == "disjoint":
            near = tree.query(geom, predicate="intersects")
            mask = ~shapely.is_missing(layer.geometry)
            mask[near] = False
            found.append(np.flatnonzero(mask))
        elif relation == "equals":
            near = tree.query(geom)
            found.append(near[shapely.equals(layer.geometry[near], geom)])
        else:
            found.append(tree.query(geom, predicate=_TREE_PREDICATE[relation]))
    return np.unique(np.concatenate(found)) if found else np.array([], dtype=np.int64)


def _spatial_rows(snapshot: Snapshot, layer: Layer, query: SearchQuery) -> np.ndarray | None:
    """Rows matching every spatial filter, or None when there are none."""
    rows = None
    for group in ([query.geometries] if query.geometries else []) + query.near:
        matched = _related_rows(snapshot, layer, group, query.relation)
        rows = matched if rows is None else np.intersect1d(rows, matched)
    if query.point is not None:
        # the platform: ST_Contains(entity.geometry, point) over entities with an area; a point entity has none
        inside = layer_tree(snapshot, layer).query(query.point, predicate="within")
        inside = inside[layer.kind[inside] != POINT]
        rows = inside if rows is None else np.intersect1d(rows, inside)
    return rows


def _date_mask(snapshot: Snapshot, layer: Layer, condition: DateFilter) -> np.ndarray:
    dates = _dates(snapshot, layer, condition.column)
    if condition.operator == "empty":
        return np.isnat(dates)
    value = np.datetime64(condition.value, "D")
    if condition.operator == "before":
        return ~np.isnat(dates) & (dates < value)
    if condition.operator == "since":
        return ~np.isnat(dates) & (dates > value)
    return dates == value


def _comparable(values: list[str]) -> np.ndarray:
    """Values to match exactly. numpy drops trailing NUL characters from its strings, so "\\x00" would
    match an empty value and "A1\\x00" would match "A1"; no stored value holds a NUL, so those match nothing."""
    return np.asarray([v for v in values if "\x00" not in v], dtype=object)


def _attribute_mask(snapshot: Snapshot, layer: Layer, query: SearchQuery, today: np.datetime64) -> np.ndarray:
    mask = np.ones(len(layer), dtype=bool)
    if query.entities is not None:
        mask &= np.isin(layer.entity, np.asarray(query.entities, dtype=np.int64))
    if query.organisation_entities is not None:
        wanted = [str(n) for n in query.organisation_entities]
        mask &= np.isin(shown(layer, "organisation-entity"), wanted)
    for name, wanted in (
        ("reference", query.references),
        ("typology", query.typologies),
        ("prefix", query.prefixes),
        ("quality", query.qualities),
    ):
        if wanted is not None:
            mask &= np.isin(shown(layer, name), _comparable(wanted))
    for prefix, reference in query.curies or ():
        same = (shown(layer, "prefix") == prefix) & (shown(layer, "reference") == reference)
        mask &= same if "\x00" not in prefix + reference else False
    for condition in query.dates:
        mask &= _date_mask(snapshot, layer, condition)
    if query.periods and "all" not in query.periods:
        ended = ~is_current(layer.end_date, today)
        period = np.zeros(len(layer), dtype=bool)
        if "current" in query.periods:
            period |= ~ended
        if "historical" in query.periods:
            period |= ended
        mask &= period
    return mask


def search(snapshot: Snapshot, query: SearchQuery) -> SearchResult:
    """Every entity matching ``query``, counted, and the page ``offset:offset+limit`` by entity number."""
    today = np.datetime64(date.today(), "D")
    names = query.datasets if query.datasets is not None else list(snapshot.layers)
    entity_parts, layer_parts, row_parts = [], [], []
    layers = [snapshot.layers[n] for n in names if n in snapshot.layers]
    for index, layer in enumerate(layers):
        if not len(layer):
            continue
        mask = _attribute_mask(snapshot, layer, query, today)
        spatial = _spatial_rows(snapshot, layer, query)
        if spatial is not None:
            keep = np.zeros(len(layer), dtype=bool)
            keep[spatial] = True
            mask &= keep
        rows = np.flatnonzero(mask)
        if len(rows):
            entity_parts.append(layer.entity[rows])
            layer_parts.append(np.full(len(rows), index, dtype=np.int32))
            row_parts.append(rows)
    if not entity_parts:
        return SearchResult(0, [])
    entity = np.concatenate(entity_parts)
    layer_of = np.concatenate(layer_parts)
    row_of = np.concatenate(row_parts)
    order = np.lexsort((row_of, layer_of, entity))
    page = order[query.offset : query.offset + query.limit]
    return SearchResult(len(entity), [(layers[int(layer_of[i])], int(row_of[i])) for i in page])


def find_entity(snapshot: Snapshot, entity: int) -> tuple[Layer, int] | None:
    """The layer and row of one entity number, or None."""
    for layer in snapshot.layer_list:
        rows = np.flatnonzero(layer.entity == entity)
        if len(rows):
            return layer, int(rows[0])
    return None


def entities_with_curie(snapshot: Snapshot, prefix: str, reference: str) -> list[int]:
    """The numbers of the held entities whose CURIE is ``prefix:reference``, in order."""
    found = []
    for layer in snapshot.layer_list:
        mask = (shown(layer, "prefix") == prefix) & (shown(layer, "reference") == reference)
        found.extend(int(n) for n in layer.entity[mask])
    return sorted(found)


def geometries_of(
    snapshot: Snapshot,
    *,
    entities: list[int] | None = None,
    references: list[str] | None = None,
    curies: list[tuple[str, str]] | None = None,
) -> list[BaseGeometry]:
    """The geometries of the held entities named by number, by reference, or by ``prefix:reference``."""
    out = []
    for layer in snapshot.layer_list:
        mask = np.zeros(len(layer), dtype=bool)
        if entities:
            mask |= np.isin(layer.entity, np.asarray(entities, dtype=np.int64))
        if references:
            mask |= np.isin(shown(layer, "reference"), references)
        for prefix, reference in curies or ():
            mask |= (shown(layer, "prefix") == prefix) & (shown(layer, "reference") == reference)
        mask &= ~shapely.is_missing(layer.geometry)
        out.extend(layer.geometry[mask])
    return out


def _wkt(geom) -> str:
    return (
        shapely.to_wkt(geom, rounding_precision=6, trim=True)
        if geom is not None and not geom.is_empty
        else ""
    )


def _organisation_entity(value: str) -> int | str:
    # an integer on the platform; a council's own file may hold something else, shown as it is
    return int(value) if value.isdigit() else value


def entity_json(layer: Layer, row: int) -> dict:
    """One entity as the platform's ``/entity.json`` shows it: every field, ``""`` for none, WKT geometry.

    A point entity (a listed building) has ``geometry: ""`` and its ``point``; an area has both,
    ``point`` being a point on its surface (the platform keeps one per entity).
    """
    geom = layer.geometry[row]
    columns = layer.columns
    out = {}
    for name in ENTITY_FIELDS:
        if name == "entity":
            out[name] = int(layer.entity[row])
        elif name == "prefix":
            out[name] = _text(columns.get("prefix", {}), row) or layer.name
        elif name == "dataset":
            out[name] = layer.name
        elif name == "organisation-entity":
            out[name] = _organisation_entity(_text(columns.get(name, {}), row))
        elif name == "geometry":
            out[name] = "" if layer.kind[row] == POINT else _wkt(geom)
        elif name == "point":
            out[name] = _wkt(geom if layer.kind[row] == POINT or geom is None else shapely.point_on_surface(geom))
        else:
            out[name] = _text(columns.get(name, {}), row) or _DEFAULTS.get(name, "")
    for name, values in columns.items():
        if name not in out and name not in _INTERNAL:
            out[name] = _text(values, row)
    return out


def _text(values, row: int) -> str:
    if not len(values):
        return ""
    value = values[row]
    return "" if value is None else str(value)


def _names(fields: list[str]) -> set[str]:
    # the platform accepts snake_case and kebab-case names alike
    return {f.replace("_", "-") for f in fields}


def select_fields(entity: dict, fields: list[str] | None, exclude: list[str] | None) -> dict:
    """The platform's ``field`` (keep only these, and always ``entity``) and ``exclude_field``.

    ``field`` wins when both are given, as on the platform.
    """
    if fields:
        wanted = _names(fields) | {"entity"}
        return {k: v for k, v in entity.items() if k in wanted}
    if exclude:
        unwanted = _names(exclude)
        return {k: v for k, v in entity.items() if k not in unwanted}
    return entity


def entity_feature(layer: Layer, row: int, properties: dict) -> dict:
    """A GeoJSON Feature as the platform's ``/entity.geojson`` gives it (geometry, type, properties)."""
    geom = layer.geometry[row]
    props = {k: v for k, v in properties.items() if k not in ("geometry", "point")}
    return {"geometry": mapping(geom) if geom is not None else None, "type": "Feature", "properties": props}
