"""The Planning Data Platform's entity search (``/entity.json``), answered from the in-memory snapshot.

The platform (digital-land.info) filters its PostGIS ``entity`` table; redline filters the same
columns held as numpy arrays in each :class:`~constraints.index.Layer`, and evaluates spatial
relations in EPSG:4326 as the platform does (``ST_<relation>(entity.geometry, query)``), with a
shapely ``STRtree`` per layer built on first use and kept for the life of the snapshot.

Semantics copied from the platform:

- ``geometry_relation`` defaults to ``within``: the *entity* lies within the query geometry.
  Several ``geometry`` values are OR-ed; ``longitude``+``latitude`` finds entities whose geometry
  contains the point; filters of different kinds are AND-ed.
- ``period``: ``current`` (no end date, or one in the future), ``historical`` (ended), ``all``.
- Results are ordered by entity number; ``count`` is the number of matches before paging.

Examples
--------
>>> result = search(snapshot, SearchQuery(datasets=["conservation-area"], limit=5))  # doctest: +SKIP
>>> result.count, [e["entity"] for e in result.page(snapshot)]  # doctest: +SKIP
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
from constraints.index import POINT, Layer, Snapshot

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
ENTITY_FIELDS = (*PLANX_DATA_FIELDS, "geometry", "point")
# columns the cache keeps for its own bookkeeping, not platform fields
_INTERNAL = {"source", "source-row"}


@dataclass
class SearchQuery:
    """The platform's search parameters, already split and validated."""

    datasets: list[str] | None = None
    geometries: list[BaseGeometry] = field(default_factory=list)
    relation: str = "within"
    point: BaseGeometry | None = None
    entities: list[int] | None = None
    references: list[str] | None = None
    organisation_entities: list[str] | None = None
    periods: list[str] | None = None
    limit: int = 10
    offset: int = 0


@dataclass
class SearchResult:
    count: int
    hits: list[tuple[Layer, int]]  # the page: (layer, row), ordered by entity


_trees_lock = threading.Lock()


def layer_tree(snapshot: Snapshot, layer: Layer) -> shapely.STRtree:
    """A 4326 STRtree of one layer, built once per snapshot (a reload makes a new snapshot)."""
    with _trees_lock:
        # kept on the snapshot itself, so the trees go when a reload replaces it
        per_snapshot = snapshot.__dict__.setdefault("_entity_search_trees", {})
        tree = per_snapshot.get(layer.name)
        if tree is None:
            tree = shapely.STRtree(layer.geometry)
            per_snapshot[layer.name] = tree
        return tree


def _spatial_rows(snapshot: Snapshot, layer: Layer, query: SearchQuery) -> np.ndarray | None:
    """Rows matching the spatial filters, or None when there are none."""
    rows = None
    if query.geometries:
        tree = layer_tree(snapshot, layer)
        found = []
        for geom in query.geometries:
            if query.relation == "disjoint":
                near = tree.query(geom, predicate="intersects")
                mask = np.ones(len(layer), dtype=bool)
                mask[near] = False
                found.append(np.flatnonzero(mask))
            elif query.relation == "equals":
                near = tree.query(geom)
                found.append(near[shapely.equals(layer.geometry[near], geom)])
            else:
                found.append(tree.query(geom, predicate=_TREE_PREDICATE[query.relation]))
        rows = np.unique(np.concatenate(found)) if found else np.array([], dtype=np.int64)
    if query.point is not None:
        # the platform: ST_Contains(entity.geometry, point); a point entity contains only itself
        tree = layer_tree(snapshot, layer)
        inside = tree.query(query.point, predicate="within")
        if len(inside):
            inside = inside[
                (layer.kind[inside] != POINT) | shapely.equals(layer.geometry[inside], query.point)
            ]
        rows = inside if rows is None else np.intersect1d(rows, inside)
    return rows


def _comparable(values: list[str]) -> np.ndarray:
    """Values to match exactly. numpy drops trailing NUL characters from its strings, so "\\x00" would
    match an empty value and "A1\\x00" would match "A1"; no stored value holds a NUL, so those match nothing."""
    return np.asarray([v for v in values if "\x00" not in v], dtype=object)


def _attribute_mask(layer: Layer, query: SearchQuery, today: np.datetime64) -> np.ndarray:
    mask = np.ones(len(layer), dtype=bool)
    if query.entities is not None:
        mask &= np.isin(layer.entity, np.asarray(query.entities, dtype=np.int64))
    if query.references is not None:
        mask &= np.isin(layer.columns["reference"].astype(str), _comparable(query.references))
    if query.organisation_entities is not None:
        mask &= np.isin(layer.columns["organisation-entity"].astype(str), _comparable(query.organisation_entities))
    if query.periods and "all" not in query.periods:
        ended = ~np.isnat(layer.end_date) & (layer.end_date <= today)
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
    names = query.datasets if query.datasets else list(snapshot.layers)
    entity_parts, layer_parts, row_parts = [], [], []
    layers = [snapshot.layers[n] for n in names if n in snapshot.layers]
    for index, layer in enumerate(layers):
        if not len(layer):
            continue
        mask = _attribute_mask(layer, query, today)
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


def _wkt(geom) -> str:
    return (
        shapely.to_wkt(geom, rounding_precision=6, trim=True)
        if geom is not None and not geom.is_empty
        else ""
    )


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
        elif name == "typology":
            out[name] = _text(columns.get("typology", {}), row) or "geography"
        elif name == "prefix":
            out[name] = _text(columns.get("prefix", {}), row) or layer.name
        elif name == "dataset":
            out[name] = layer.name
        elif name == "geometry":
            out[name] = "" if layer.kind[row] == POINT else _wkt(geom)
        elif name == "point":
            out[name] = _wkt(geom if layer.kind[row] == POINT else shapely.point_on_surface(geom))
        else:
            out[name] = _text(columns.get(name, {}), row)
    for name, values in columns.items():
        if name not in out and name not in _INTERNAL:
            out[name] = _text(values, row)
    return out


def _text(values, row: int) -> str:
    if not len(values):
        return ""
    value = values[row]
    return "" if value is None else str(value)


def select_fields(entity: dict, fields: list[str] | None, exclude: list[str] | None) -> dict:
    """The platform's ``field`` (keep only these, and always ``entity``) and ``exclude_field``.

    The platform accepts snake_case and kebab-case names alike.
    """
    if fields:
        wanted = {f.replace("_", "-") for f in fields} | {"entity"}
        return {k: v for k, v in entity.items() if k in wanted}
    if exclude:
        unwanted = {f.replace("_", "-") for f in exclude}
        return {k: v for k, v in entity.items() if k not in unwanted}
    return entity


def entity_feature(layer: Layer, row: int, properties: dict) -> dict:
    """A GeoJSON Feature as the platform's ``/entity.geojson`` gives it (geometry, type, properties)."""
    geom = layer.geometry[row]
    props = {k: v for k, v in properties.items() if k not in ("geometry", "point")}
    return {"geometry": mapping(geom) if geom is not None else None, "type": "Feature", "properties": props}
