"""The in-memory constraint index and the check.

Every cached layer is reprojected to the British National Grid (OSTN15), and polygons with many
vertices are cut into pieces of at most ``MAX_PIECE_VERTICES`` (like PostGIS ``ST_Subdivide``), so a
check costs the same whether it lands on a listed-building outline or on a 100,000-vertex national park.
The pieces of all layers are held as flat arrays (:class:`constraints.pieces.PieceStore`), not as
GEOS objects, and share one packed R-tree over their boxes (:class:`constraints.pieces.PieceTree`):
one compiled query answers every layer at once, for one site or a whole batch. GEOS geometries of
the few pieces a check must ask GEOS about are built from the arrays on demand.

Usage::

    index = ConstraintIndex.from_cache(LayerCache(".redline"), load_catalogue())
    answer = index.check({"type": "Point", "coordinates": [-0.1151, 51.4745]})
    answer["constraints"][0]["status"]
    # 'clear'
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from shapely.geometry.base import BaseGeometry

from datasets.cache import BASE_COLUMNS, CacheError, LayerCache, atomic_path, now_iso
from datasets.catalogue import Catalogue
from datasets.compiled import compiled
from datasets.coverage import describe, unstated
from datasets.crs import OutsideGridError, ostn15_grid, to_bng
from datasets.england import OUTSIDE_ENGLAND, PARTLY_OUTSIDE_ENGLAND, england_part
from datasets.sync import is_stale

from .pieces import (
    NODE_SIZE,
    STRTREE_NODE_CAPACITY,
    PieceStore,
    PieceTree,
    give_back_freed_memory,
    query_into,
    strtree_rank,
)
from .polygon_overlay import (
    DISJOINT,
    UNDECIDED,
    piece_offsets,
    ring_area,
    site_pairs,
    site_pairs_into,
)
from .site import Site, SiteLimits, parse_site
from .wkb_column import LINE, POINT, POLYGON, WkbColumn, joined_wkb, map_wkb_file, write_wkb_file  # noqa: F401 (kinds re-exported)

log = logging.getLogger("redline.index")

MAX_PIECE_VERTICES = 256
# v4: the pieces' ragged arrays as numpy files (the vertices mapped), with each piece's validity; v3 (the same pieces
# as WKB in Parquet) is read when v4 is missing and rewritten as v4. v3: layers reprojected by the OSTN15 grid read once from convertbng, both
# ways, as sites are (v2 mixed in convertbng calls).
DERIVED_FORMAT = "pieces-v4"
WKB_PIECES_FORMAT = "pieces-v3"
WGS84_FORMAT = "wgs84-wkb-v1.arrow"  # the layer's own geometries, for mapping into memory
# each piece's place in the order of an STRtree over all the layers' pieces together (see strtree_rank)
RANK_FORMAT = "strtree-rank-v1.npz"
RANK_FILES_KEPT = 3  # a service reloading while batch workers still build the snapshot before finds its own
RELATIVE_EPS = 1e-9


_TODAY: tuple[int, np.datetime64] = (-1, np.datetime64("NaT"))


def _today() -> np.datetime64:
    """Today's date for end-date checks, worked out once a minute rather than on every check."""
    global _TODAY
    minute = int(time.time() // 60)
    if _TODAY[0] != minute:
        _TODAY = (minute, np.datetime64(date.today(), "D"))
    return _TODAY[1]


_NOW: tuple[int, str] = (-1, "")


def _checked_at() -> str:
    """``now_iso()``, formatted once a second rather than on every check."""
    global _NOW
    second = int(time.time())
    if _NOW[0] != second:
        _NOW = (second, now_iso(second))
    return _NOW[1]


def is_current(end_date, today: np.datetime64 | None = None):
    """Whether an entity is current: it has no end date, or one after today (the platform's ``entries=current``).

    The one rule for "current": the check, the entity search and the widget's layers all ask it.
    ``end_date`` is a ``datetime64[D]`` value or array (``NaT`` for none); the answer has its shape.

    Examples
    --------
    >>> ends = np.array(["NaT", "2000-01-01", "2999-01-01"], dtype="datetime64[D]")
    >>> is_current(ends, np.datetime64("2026-12-01")).tolist()
    [True, False, True]
    """
    today = _today() if today is None else today
    return np.isnat(end_date) | (end_date > today)


@dataclass(frozen=True)
class Tolerance:
    """When an overlap is too small to count.

    An entity counts as intersecting when its overlap is at least ``m2`` square metres *and* at least
    ``pct`` per cent of the site; below either it is a sliver from a shared boundary and is listed
    under ``nearby`` instead. ``Tolerance.strict()`` (both 0) is DE-9IM intersects, as PostGIS ``ST_Intersects``.
    """

    m2: float = 0.5
    pct: float = 0.1

    @classmethod
    def strict(cls) -> Tolerance:
        return cls(0.0, 0.0)

    @property
    def is_strict(self) -> bool:
        return self.m2 <= 0 and self.pct <= 0

    def as_dict(self) -> dict:
        return {"m2": self.m2, "pct": self.pct}


@dataclass
class Layer:
    """One dataset's current entities, as columns, in cache row order."""

    name: str
    entry: dict
    entity: np.ndarray  # int64
    columns: dict[str, np.ndarray]  # attribute name -> object array of str
    geometry: WkbColumn  # EPSG:4326, indexed like an array of shapely geometries; for output
    kind: np.ndarray  # POINT / LINE / POLYGON per row
    area: np.ndarray  # BNG area per row (0 for points and lines)
    end_date: np.ndarray  # datetime64[D], NaT when none
    coverage: BaseGeometry | None = None  # EPSG:27700, prepared; None means all of England

    def __len__(self) -> int:
        return len(self.entity)

    def properties(self, row: int) -> dict:
        props = {"entity": int(self.entity[row])}
        for name, values in self.columns.items():
            props[name] = values[row]
        return props


@dataclass
class SnapshotCaches:
    """Work derived from one snapshot's data and kept with it, so a reload (a new snapshot) drops it.

    Each cache is only ever a copy of what could be worked out again from the snapshot; none changes
    an answer. Filled lazily by the checks (and the entity search) that read the snapshot.
    """

    # The answer of each catalogue key for a site that meets none of its datasets: it depends only on
    # which datasets this snapshot holds, so the common "nothing here" answer is copied, not rebuilt.
    unmet_answers: dict[str, dict] = field(default_factory=dict)
    stock_answers: dict[str, dict] | None = None  # those of every key not derived from others, in catalogue order
    # Per-dataset provenance and the minute it was worked out: its staleness is by the clock, so it
    # is redone once a minute rather than on every check.
    provenance: tuple[int, dict] | None = None
    # Structures built on demand from one layer (the entity search's EPSG:4326 trees and parsed date
    # columns), by (kind, layer name): a search pays for them once per snapshot, not per request.
    per_layer: dict[tuple[str, str], object] = field(default_factory=dict)
    # What relating a site to its entities reads, as flat arrays (``_entity_facts``).
    entity_facts: _EntityFacts | None = None
    # The snapshot's arrays as the one-call matching of a site takes them (``_ring_arguments``), and
    # per set of datasets asked for, which layers are wanted
    ring_arguments: tuple | None = None
    wanted_layers: dict[frozenset, np.ndarray] = field(default_factory=dict)
    all_national: bool | None = None  # no layer has a coverage of its own (``coverage_gaps``)


@dataclass
class Snapshot:
    """An immutable, complete index: a check reads one snapshot from start to finish."""

    layers: dict[str, Layer]
    layer_list: list[Layer]
    tree: PieceTree | None  # over ``pieces``' boxes; None when there are none
    pieces: PieceStore  # every layer's pieces, a layer's together, in layer_list order
    piece_layer: np.ndarray  # int32 index into layer_list
    piece_row: np.ndarray  # int64 row within its layer
    generation: str
    built_at: str
    data_version: str
    build_seconds: float = 0.0
    caches: SnapshotCaches = field(default_factory=SnapshotCaches, repr=False, compare=False)

    @property
    def features(self) -> int:
        return sum(len(layer) for layer in self.layer_list)

    @property
    def piece_geometry(self) -> PieceStore:
        """The pieces, indexed like an object array of shapely geometries (built on demand)."""
        return self.pieces

    @property
    def piece_area(self) -> np.ndarray:
        return self.pieces.area


def subdivide(geometry: np.ndarray, max_vertices: int = MAX_PIECE_VERTICES) -> tuple[np.ndarray, np.ndarray]:
    """Cut polygons into pieces of at most ``max_vertices`` vertices, as PostGIS ``ST_Subdivide`` does.

    Returns the pieces and, for each, the index of the geometry it came from. The pieces of one
    geometry cover it exactly, without overlaps, so areas of intersection add up.

    Examples
    --------
    >>> pieces, source = subdivide(np.array([shapely.Point(0, 0).buffer(10, 2000)]), 64)
    >>> len(pieces) > 1, bool((shapely.get_num_coordinates(pieces) <= 64 + 8).all())
    (True, True)
    """
    return subdivide_batches([(0, geometry)], max_vertices)


def subdivide_batches(batches: Iterable[tuple[int, np.ndarray]], max_vertices: int = MAX_PIECE_VERTICES) -> tuple[np.ndarray, np.ndarray]:
    """:func:`subdivide` of a layer read a batch of geometries at a time: ``(offset, geometries)`` pairs,
    ``offset`` being the first geometry's index in the layer.

    The pieces come out in exactly the order one call over the whole layer gives (the order decides the
    tree's, and so the order answers list entities in), while only one batch's geometries and cuts are
    held at once: cutting a national flood layer whole held seven gigabytes at its peak.

    Examples
    --------
    >>> shapes = np.array([shapely.Point(i * 30, 0).buffer(10, 500) for i in range(5)])
    >>> whole, _ = subdivide(shapes, 64)
    >>> batched, _ = subdivide_batches([(0, shapes[:2]), (2, shapes[2:])], 64)
    >>> bool(shapely.equals_exact(whole, batched, tolerance=0).all())
    True
    """
    pieces, keys = [], []
    for offset, geometry in batches:
        for r, (cut, cut_keys) in enumerate(_cut_rounds(geometry, max_vertices, offset)):
            pieces.append(cut)
            keys.append((r, cut_keys))
    if not pieces:
        return np.array([], dtype=object), np.array([], dtype=np.int64)
    order, source = _cut_order(keys)
    return np.concatenate(pieces)[order], source


def _cut_order(chunks: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """For the chunks of pieces of several :func:`_cut_rounds` calls as ``(round, keys)``, one after
    the other: the order that puts them as one call over all the geometries would (round by round,
    each round by its keys), and each piece's source in that order."""
    starts = np.cumsum([0] + [len(keys) for _, keys in chunks])
    order, source = [], []
    for r in sorted({r for r, _ in chunks}):
        mine = [i for i, (round_, _) in enumerate(chunks) if round_ == r]
        keys = np.concatenate([chunks[i][1] for i in mine])
        at = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in mine])
        sorted_ = np.lexsort(keys.T[::-1])  # the first column is the primary key
        order.append(at[sorted_])
        source.append(keys[sorted_, 1])
    return np.concatenate(order), np.concatenate(source).astype(np.int64)


def _part_number(index: np.ndarray) -> np.ndarray:
    """For ``shapely.get_parts(..., return_index=True)``'s index: each part's number within its geometry."""
    return np.arange(len(index)) - np.searchsorted(index, index)


def _cut_rounds(geometry: np.ndarray, max_vertices: int, offset: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The pieces each round of halving leaves small enough, with each piece's place in that round.

    Round r's pieces are ordered by their key rows ``[halves, source, part_0, ..., part_r]``: ``halves``
    holds which half was kept at each cut, the latest cut as the highest bit (a round lists all first
    halves before all second halves, each in the previous round's order), ``source`` the geometry's
    index plus ``offset``, ``part_k`` the piece's part number after the k-th cut. Keys so formed order
    the pieces of separate batches as one call over all of them would.
    """
    parts, source = shapely.get_parts(geometry, return_index=True)
    keys = np.column_stack([np.zeros(len(parts), dtype=np.int64), source.astype(np.int64) + offset, _part_number(source)])
    rounds = []
    cut = 0
    while len(parts):
        small = shapely.get_num_coordinates(parts) <= max_vertices
        rounds.append((parts[small], keys[small]))
        big, big_keys = parts[~small], keys[~small]
        if not len(big):
            break
        bounds = shapely.bounds(big)
        xmin, ymin, xmax, ymax = bounds.T
        wide = (xmax - xmin) >= (ymax - ymin)
        xmid, ymid = (xmin + xmax) / 2, (ymin + ymax) / 2
        first = shapely.box(xmin, ymin, np.where(wide, xmid, xmax), np.where(wide, ymax, ymid))
        second = shapely.box(np.where(wide, xmid, xmin), np.where(wide, ymin, ymid), xmax, ymax)
        halves = shapely.intersection(np.concatenate([big, big]), np.concatenate([first, second]))
        halves_keys = np.concatenate([big_keys, big_keys])
        halves_keys[len(big) :, 0] |= np.int64(1) << cut
        cut += 1
        # a clip can return collections with slivers of line or point: keep the areas
        parts, index = shapely.get_parts(halves, return_index=True)
        keys = np.column_stack([halves_keys[index], _part_number(index)])
        keep = (shapely.get_type_id(parts) == 3) & ~shapely.is_empty(parts)
        parts, keys = parts[keep], keys[keep]
    return rounds


def _end_dates(values: np.ndarray) -> np.ndarray:
    out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[D]")
    has = values != ""
    if has.any():
        parsed = []
        for v in values[has]:
            try:
                parsed.append(np.datetime64(str(v)[:10], "D"))
            except ValueError:
                parsed.append(np.datetime64("NaT"))
        out[has] = parsed
    return out


def _interned(column: pa.ChunkedArray) -> np.ndarray:
    """A string column as an object array in which equal values share one Python object.

    Most attribute columns repeat a few values (dataset, organisation, dates, grade) over hundreds of
    thousands of rows: one object per distinct value rather than per row.
    """
    encoded = column.combine_chunks().dictionary_encode()
    dictionary = encoded.dictionary
    values = np.fromiter([*dictionary.to_pylist(), None], dtype=object, count=len(dictionary) + 1)
    return values[encoded.indices.fill_null(len(dictionary)).to_numpy()]


def _row_major(table: pa.Table, names: list[str]) -> dict[str, np.ndarray]:
    """The attribute columns ``names`` of ``table`` (interned), as views of one row-major array.

    A check shows the few entities a site meets, each a random row of its layer: with each column an
    array of its own, every attribute of such a row is a cache miss in memory of its own (half the
    time of showing an entity, measured on a national layer); side by side, a row's values share a
    cache line or two. The same pointers as separate columns, so no more memory; filled a column at
    a time, so no more than one extra column is ever held while the layer is read.
    """
    rows = np.empty((table.num_rows, len(names)), dtype=object)
    for j, c in enumerate(names):
        rows[:, j] = _interned(table.column(c))
    return {c: rows[:, j] for j, c in enumerate(names)}


def _read_pieces(path, batch: int = 8_192) -> tuple[PieceStore, np.ndarray, np.ndarray]:
    """A layer's derived pieces (as a store, their rows, and each entity's area) from its Parquet file,
    decoded a batch at a time as the file is read: neither the whole WKB column, nor a Python bytes
    object per row for it, nor a GEOS object per piece is ever held at once."""
    # a buffered stream, not the whole column chunk at once: a layer's pieces are one row group
    parquet = pq.ParquetFile(path, buffer_size=8 << 20, pre_buffer=False)
    area = np.frombuffer(parquet.schema_arrow.metadata[b"entity_area"], dtype=np.float64)
    rows = parquet.read(columns=["row"]).column("row").to_numpy()
    parts = []
    at = 0
    for wkb in parquet.iter_batches(batch_size=batch, columns=["wkb"]):
        parts.append(PieceStore.from_geometries(shapely.from_wkb(wkb.column(0).to_numpy(zero_copy_only=False))))
        at += wkb.num_rows
        del wkb
        pa.default_memory_pool().release_unused()  # Arrow's allocator would keep each batch's memory
    if at != parquet.metadata.num_rows or len(rows) != at:
        raise ValueError(f"{path}: {at} pieces read of {parquet.metadata.num_rows}")
    return PieceStore.concatenate(parts), rows, area


def _cut_pieces(layer: Layer, batch_bytes: int = 64 << 20) -> tuple[PieceStore, np.ndarray, np.ndarray]:
    """A layer's pieces cut from its geometries: polygons subdivided, points and lines whole; with
    each piece's row and each entity's area (all on the grid).

    The layer is decoded, reprojected and cut ``batch_bytes`` of its WKB at a time: a national flood
    layer decoded whole, reprojected and cut held several copies of itself at once (7 GB at the peak).
    Each batch's pieces go into arrays as soon as they are cut (GEOS objects would hold the whole
    layer's vertices half as big again), and from those straight into one cut's order at the end, so
    the cut vertices are held once."""
    starts = layer.geometry.batches(batch_bytes)
    areas, point_parts, point_rows = [], [], []
    stores, keys = [], []
    for lo, hi in zip(starts[:-1], starts[1:], strict=True):
        bng = to_bng(layer.geometry[lo:hi])
        # the mapped WKB's pages just decoded are not read again: out of the process's memory
        layer.geometry.drop_resident_pages()
        areas.append(shapely.area(bng))
        point_like = np.flatnonzero(layer.kind[lo:hi] != POLYGON)
        point_parts.append(bng[point_like])
        point_rows.append(point_like + lo)
        for r, (cut, cut_keys) in enumerate(_cut_rounds(bng, MAX_PIECE_VERTICES, lo)):
            stores.append(PieceStore.from_geometries(cut))
            keys.append((r, cut_keys))
            del cut
        del bng
        give_back_freed_memory()  # the batch's decoded and halved geometries, between the pieces kept
    points = PieceStore.from_geometries(np.concatenate(point_parts)) if point_parts else PieceStore.empty()
    del point_parts
    if stores:
        order, rows = _cut_order(keys)
        order = np.concatenate([order, np.arange(len(order), len(order) + len(points))])
        stores.append(points)
        del points
        store = PieceStore.gather(stores, order)  # empties stores as it goes
    else:
        rows, store = np.zeros(0, dtype=np.int64), points
    rows = np.concatenate([rows, *point_rows]).astype(np.int64)
    area = np.concatenate(areas) if areas else np.zeros(0)
    return store, rows, area


def _read_attributes(cache: LayerCache, name: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A cached layer's entity numbers and attribute columns (row-major, see :func:`_row_major`)."""
    table = cache.read_table(name, [c for c in cache.read_schema(name).names if c != "geometry"])
    names = [
        c
        for c in table.column_names
        # a struct is GeoParquet's covering bounding box, which geopandas hides too
        if c not in ("entity", "source-row") and not pa.types.is_struct(table.schema.field(c).type)
    ]
    columns = _row_major(table, names)
    entity = table.column("entity").to_numpy().astype(np.int64, copy=False)
    del table
    pa.default_memory_pool().release_unused()  # Arrow's allocator would keep what the table held
    return entity, columns


def _mapped_geometry(cache: LayerCache, name: str, entry: dict, rows: int) -> WkbColumn:
    """A cached layer's own (EPSG:4326) geometries, mapped from their derived Arrow file, which is
    written first from the layer's WKB when it is missing, damaged or not of ``rows`` rows."""
    mapped = cache.derived_path(name, entry["version"], WGS84_FORMAT)
    if mapped.exists():
        try:
            geometry = map_wkb_file(mapped)
            if len(geometry) == rows:
                return geometry
        except (OSError, pa.ArrowException) as err:  # a damaged derived file is only a cache of work: redo it
            log.warning("rewriting the mapped geometry of %s: %s", name, err)
    # read a batch at a time: a national layer's WKB is 600 MB, read whole it was held two or three times
    wkb = joined_wkb(batch.column(0) for batch in cache.read_batches(name, ["geometry"]))
    write_wkb_file(wkb, mapped)
    del wkb
    return map_wkb_file(mapped)


def _load_layer(cache: LayerCache, name: str, entry: dict) -> tuple[Layer, PieceStore, np.ndarray]:
    """Read one cached dataset and its pieces, deriving and persisting them on first use.

    The layer's EPSG:4326 geometries stay WKB in a derived Arrow file mapped into memory
    (:mod:`constraints.wkb_column`); the grid pieces the check works on are a :class:`PieceStore`.
    """
    entity, columns = _read_attributes(cache, name)
    geometry = _mapped_geometry(cache, name, entry, len(entity))
    layer = Layer(
        name=name,
        entry=entry,
        entity=entity,
        columns=columns,
        geometry=geometry,
        kind=geometry.kinds(),
        area=np.zeros(len(entity)),
        end_date=_end_dates(columns.get("end-date", np.full(len(entity), "", dtype=object))),
    )
    geometry.drop_resident_pages()  # every header was read for the kinds: a national layer's whole file
    derived = cache.derived_path(name, entry["version"], f"{DERIVED_FORMAT}.npz")
    derived_xy = cache.derived_path(name, entry["version"], f"{DERIVED_FORMAT}.xy.npy")
    pieces = rows = area = None
    if derived.exists():
        try:
            pieces, (rows, area) = PieceStore.load(derived, derived_xy, ("row", "entity_area"))
        except Exception as err:  # a damaged derived file is only a cache of work: redo it
            log.warning("rebuilding derived index for %s: %s", name, err)
            pieces = None
    if pieces is None or len(area) != len(layer):
        wkb_pieces = cache.derived_path(name, entry["version"], f"{WKB_PIECES_FORMAT}.parquet")
        pieces = None
        if wkb_pieces.exists():  # a cache derived before v4: its pieces, not cut again
            try:
                pieces, rows, area = _read_pieces(wkb_pieces)
            except Exception as err:
                log.warning("rebuilding derived index for %s: %s", name, err)
                pieces = None
        if pieces is None or len(area) != len(layer):
            pieces, rows, area = _cut_pieces(layer)
        pieces.save(derived, derived_xy, row=rows.astype(np.int64), entity_area=np.asarray(area, dtype=np.float64))
        # from here on the saved file is the vertices, as on a cold start: the layers' cut vertices
        # (825 MB at scale 1) are not all held until the snapshot's copy of them is made
        pieces, _ = PieceStore.load(derived, derived_xy)
    layer.area = area
    geometry.drop_resident_pages()
    coverage = cache.coverage(name, entry)
    if coverage is None and unstated(entry):
        coverage = shapely.Polygon()  # a council file is complete nowhere unless somebody said where
    if coverage is not None:
        layer.coverage = to_bng(coverage) if not coverage.is_empty else coverage
        shapely.prepare(layer.coverage)
    return layer, pieces, rows


def _piece_rank(cache: LayerCache, layers: list[Layer], bounds: np.ndarray) -> np.ndarray:
    """Each piece's :func:`strtree_rank`, from the derived file of these layers' versions when it is
    there and whole, else worked out (~5 s and ~300 MB at scale 1) and written for the next build.

    The rank depends on every layer's pieces together, so the file belongs to no one layer: it is keyed
    by the layers' names and versions (in the order their pieces are joined), and it holds a digest
    of the pieces' boxes, which must be the boxes it was worked out for (the rank follows from them
    alone) before it is used. A missing, damaged or stale file is worked out again.
    """
    bounds = np.ascontiguousarray(bounds, dtype=np.float64)
    versions = "|".join(f"{layer.name}={layer.entry.get('version')}" for layer in layers)
    key = hashlib.sha256(f"{versions}|{DERIVED_FORMAT}|{STRTREE_NODE_CAPACITY}".encode()).hexdigest()[:16]
    path = cache.derived_path("all-layers", key, RANK_FORMAT)
    digest = np.frombuffer(hashlib.blake2b(bounds, digest_size=16).digest(), dtype=np.uint8)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as arrays:
                rank, stored = arrays["rank"], arrays["bounds_digest"]
            if rank.dtype == np.int64 and rank.shape == (len(bounds),) and np.array_equal(stored, digest):
                return rank
            log.warning("reworking the pieces' rank: %s was worked out for other pieces", path.name)
        except Exception as err:  # a damaged derived file is only a cache of work: redo it
            log.warning("reworking the pieces' rank: %s", err)
    rank = strtree_rank(bounds)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            np.savez(file, rank=rank, bounds_digest=digest)
        older = sorted(cache.derived_dir.glob(f"all-layers.*.{RANK_FORMAT}"), key=_mtime, reverse=True)
        for stale in older[RANK_FILES_KEPT:]:
            stale.unlink(missing_ok=True)
    except OSError as err:  # a read-only cache: the next build works it out again
        log.warning("the pieces' rank could not be kept: %s", err)
    return rank


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:  # gone meanwhile (another process's prune): oldest
        return 0


def build_snapshot(cache: LayerCache, datasets: list[str] | None = None, previous: Snapshot | None = None) -> Snapshot:
    """Index every cached dataset (or those named) into a new snapshot.

    Layers whose cached version is unchanged since ``previous`` are reused rather than read again.
    """
    started = time.perf_counter()
    ostn15_grid()  # built once per process, here rather than inside the first check
    generation = cache.generation()
    manifest = cache.manifest()
    names = [n for n in (datasets or sorted(manifest)) if manifest.get(n, {}).get("file")]
    layers: list[Layer] = []
    piece_parts: list[PieceStore] = []
    row_parts = []
    reuse = {}
    if previous is not None:
        for index, layer in enumerate(previous.layer_list):
            ids = np.flatnonzero(previous.piece_layer == index)
            reuse[(layer.name, layer.entry.get("version"))] = (layer, previous.pieces.take(ids), previous.piece_row[ids])
    for name in names:
        entry = manifest[name]
        key = (name, entry.get("version"))
        if key in reuse:
            layer, pieces, rows = reuse[key]
            layer = replace(layer, entry=entry)
        else:
            try:
                layer, pieces, rows = _load_layer(cache, name, entry)
            except (CacheError, OutsideGridError, OSError) as err:
                log.error("dataset %s could not be indexed: %s", name, err)
                continue
        layers.append(layer)
        piece_parts.append(pieces)
        row_parts.append(rows)
    if piece_parts:
        piece_row = np.concatenate(row_parts).astype(np.int64)
        piece_layer = np.concatenate([np.full(len(p), i, dtype=np.int32) for i, p in enumerate(piece_parts)])
    else:
        piece_row, piece_layer = np.array([], dtype=np.int64), np.array([], dtype=np.int32)
    pa.default_memory_pool().release_unused()  # what Arrow kept of the files read, back to the system
    # Each query's pieces in the order the index's STRtree gave them, so that answers list entities as
    # before. Worked out before the vertices are copied together, so that its throwaway tree and theirs
    # are never in memory at once.
    rank = _piece_rank(cache, layers, np.concatenate([p.bounds for p in piece_parts])) if piece_parts else None
    give_back_freed_memory()
    pieces = PieceStore.concatenate(piece_parts)
    del piece_parts, reuse
    tree = PieceTree(pieces.bounds, rank, pieces) if len(pieces) else None
    give_back_freed_memory()
    versions = "|".join(f"{layer.name}={layer.entry.get('version')}" for layer in layers)
    return Snapshot(
        layers={layer.name: layer for layer in layers},
        layer_list=layers,
        tree=tree,
        pieces=pieces,
        piece_layer=piece_layer,
        piece_row=piece_row,
        generation=generation,
        built_at=now_iso(),
        data_version=hashlib.sha256(versions.encode()).hexdigest()[:12],
        build_seconds=time.perf_counter() - started,
    )


_POWERS_OF_TEN = tuple(10.0**n for n in range(16))


def rounded(x: float, ndigits: int) -> float:
    """``round(x, ndigits)`` (``ndigits`` 0 to 15), to the bit, at half its cost.

    Python's ``round`` goes through a decimal string (two digit conversions, half a microsecond here),
    and each entity shown rounds twice. Away from a tie, the nearest integer to ``x * scale`` (computed
    with an error of at most 2**-22 while it is below 2**31) is the correctly rounded one, and
    dividing it by ``scale`` gives the double nearest that decimal, as ``round`` does; near a tie, for
    large or non-finite values, ``round`` itself decides. A zero keeps the sign of ``x`` (as ``round``'s).

    Examples
    --------
    >>> rounded(2.675, 2), round(2.675, 2), rounded(-0.0001, 3)
    (2.67, 2.67, -0.0)
    """
    scale = _POWERS_OF_TEN[ndigits]
    y = x * scale
    if -2147483648.0 < y < 2147483648.0:
        n = round(y)
        if abs(abs(y - n) - 0.5) > 1e-6:
            return n / scale if n else x * 0.0
    return round(x, ndigits)


@dataclass(slots=True)
class Match:
    """An entity the site meets: where it is, and by how much (one per entity met: slotted, as a
    check makes a handful and a batch millions)."""

    layer: Layer
    row: int
    relation: str
    overlap_m2: float
    overlap_pct: float
    material: bool
    # the entity's answer dict, built on first use: a match is shown by every key of its dataset
    shown: dict | None = field(default=None, init=False, repr=False, compare=False)

    def as_dict(self) -> dict:
        """The entity as answers show it (a fresh dict each time: callers may add to it)."""
        return dict(self.shown_dict())

    def shown_dict(self) -> dict:
        """The entity as answers show it, read-only: the one dict :meth:`as_dict` copies."""
        shown = self.shown
        if shown is None:
            shown = self.layer.properties(self.row)
            shown["relation"] = self.relation
            shown["overlap_m2"] = rounded(self.overlap_m2, 3)
            shown["overlap_pct"] = rounded(self.overlap_pct, 4)
            self.shown = shown
        return shown


@dataclass(slots=True)
class _Pairs:
    """The site-piece pairs of one :meth:`ConstraintIndex.match_many` call, narrowed stage by stage.

    A single site (the service's case) stays a scalar that each GEOS operation broadcasts; with many,
    ``site_of`` names each pair's site, the pairs grouped by site and each site's in the tree's order.

    Every pair is first put to :func:`polygon_overlay.site_pairs`, one compiled call that says how each
    site meets each of its pieces and what area they share: a polygon site and a polygon piece as
    :func:`polygon_overlay.pair_overlaps` does, a point piece against a polygon site and an address
    (point) site against a polygon piece as :func:`polygon_overlay.points_in_polygons` does. GEOS is
    asked only about the pairs it leaves undecided (boundaries that touch or run together, a point on
    or next to an edge) and about line pieces, whose shapely geometries are built from the store for
    those pairs alone; most checks have none, and then nothing else is asked of their pairs.
    """

    one: bool
    sites: np.ndarray  # the sites' BNG geometries (prepared when GEOS is first asked)
    parsed: Sequence[Site]
    site_areas: np.ndarray
    site_of: np.ndarray  # per pair: the position of its site
    hits: np.ndarray  # per pair: the piece
    store: PieceStore
    piece_area: np.ndarray
    pieces: np.ndarray | None = None  # per pair: the piece's shapely geometry once built (``_geometries``), else None
    built: np.ndarray | None = None  # per pair: whether ``pieces`` holds it
    prepared: bool = False
    # set by keep_meeting, per pair: site_pairs' relation (UNDECIDED where GEOS decided), and the area
    # the piece shares with its site wherever that is known (the rest are GEOS's, in overlap_areas)
    relation: np.ndarray | None = None
    area: np.ndarray | None = None
    # where GEOS was asked (None when site_pairs decided every pair): those pairs, whether each is a
    # polygon piece of an area site, and whether GEOS said the site holds the piece properly
    undecided: np.ndarray | None = None
    pair_poly: np.ndarray | None = None
    inside: np.ndarray | None = None

    @classmethod
    def candidates(cls, snap: Snapshot, sites: Sequence[Site], datasets: set[str] | None) -> _Pairs | None:
        """The pieces whose boxes meet each site's box (one tree query), of the datasets asked for; None if none."""
        one = len(sites) == 1
        geoms = np.empty(len(sites), dtype=object)
        geoms[:] = [site.bng for site in sites]
        site_of, hits = snap.tree.query_boxes(shapely.bounds(geoms))  # by site, each site's in the tree's order
        if datasets is not None and len(hits):
            wanted = np.array([i for i, layer in enumerate(snap.layer_list) if layer.name in datasets], dtype=np.int32)
            keep = np.isin(snap.piece_layer[hits], wanted)
            site_of, hits = site_of[keep], hits[keep]
        if not len(hits):
            return None
        store = snap.pieces
        return cls(one, geoms, sites, shapely.area(geoms), site_of, hits, store, store.area[hits])

    def per_site(self, values, mask=None):
        """A per-site value for each pair (or those in ``mask``); the scalar for one site."""
        if self.one:
            return values[0]
        return values[self.site_of] if mask is None else values[self.site_of[mask]]

    def _sites(self, mask):
        """The sites of the pairs in ``mask``, prepared, for GEOS (the scalar for one site)."""
        if not self.prepared:
            shapely.prepare(self.sites)
            self.prepared = True
        return self.per_site(self.sites, mask)

    def _geometries(self, mask) -> np.ndarray:
        """The shapely geometries of the pieces of the pairs in ``mask``, built from the store once."""
        if self.pieces is None:
            self.pieces, self.built = np.empty(len(self.hits), dtype=object), np.zeros(len(self.hits), dtype=bool)
        todo = mask & ~self.built
        if todo.any():
            self.pieces[todo] = self.store.geometries(self.hits[todo])
            self.built |= todo
        return self.pieces[mask]

    def keep_meeting(self) -> bool:
        """Keep the pairs whose piece really meets its site (not only its box); whether any are left."""
        arrays = _SiteArrays.of(self.sites, self.parsed)
        area, relation = site_pairs(arrays.xy, arrays.ring_offsets, arrays.part_rings, arrays.polygon, arrays.area, arrays.area_rings,
                                    arrays.point_xy, self.site_areas, self.store, self.site_of, self.hits)
        return self.keep(area, relation)

    def keep(self, area: np.ndarray, relation: np.ndarray) -> bool:
        """:meth:`keep_meeting` from site_pairs' ``area`` and ``relation`` of the pairs."""
        self.area, self.relation = area, relation
        undecided = self.relation == UNDECIDED
        meets = self._ask_geos(undecided) if undecided.any() else self.relation != DISJOINT
        if not meets.all():
            self.site_of, self.hits, self.piece_area = self.site_of[meets], self.hits[meets], self.piece_area[meets]
            self.relation, self.area = self.relation[meets], self.area[meets]
            if self.pieces is not None:
                self.pieces, self.built = self.pieces[meets], self.built[meets]
            if self.undecided is not None:
                self.undecided, self.pair_poly, self.inside = self.undecided[meets], self.pair_poly[meets], self.inside[meets]
        return len(self.hits) > 0

    def _ask_geos(self, undecided: np.ndarray) -> np.ndarray:
        """Whether each pair meets, GEOS deciding those site_pairs left undecided (as it did every pair
        before the kernels): does the site hold the piece properly, else do they meet at all?"""
        pair_poly = (self.piece_area > 0) & (self.per_site(self.site_areas) > 0)
        inside = np.zeros(len(self.hits), dtype=bool)
        held = undecided & pair_poly
        if held.any():
            inside[held] = shapely.contains_properly(self._sites(held), self._geometries(held))
        meets = ~undecided & (self.relation != DISJOINT)
        meets[inside] = True
        rest = undecided & ~inside
        if rest.any():
            meets[rest] = shapely.intersects(self._sites(rest), self._geometries(rest))  # the prepared site first
        self.area[inside] = self.piece_area[inside]
        self.undecided, self.pair_poly, self.inside = undecided, pair_poly, inside
        return meets

    def overlap_areas(self) -> np.ndarray:
        """The area each polygon piece shares with its site (0 for points, lines and address sites)."""
        area = self.area
        if self.undecided is None:
            return area
        rest = self.undecided & self.pair_poly & ~self.inside
        if rest.any():
            # GEOS: the pieces that hold the whole site, then the others cut to the site's bounding box
            # (cheap, no topology) so that the exact intersection has less to do
            partial, partial_site = self._geometries(rest), self._sites(rest)
            whole = shapely.contains_properly(partial, partial_site)
            overlap = np.full(len(partial), self.site_areas[0]) if self.one else self.site_areas[self.site_of[rest]]
            if not whole.all():
                cut = partial[~whole]
                if self.one:
                    cut_site = partial_site
                    clipped = shapely.clip_by_rect(cut, *partial_site.bounds)
                else:
                    cut_site, cut_of = partial_site[~whole], self.site_of[rest][~whole]
                    clipped = np.empty(len(cut), dtype=object)
                    starts = np.flatnonzero(np.r_[True, cut_of[1:] != cut_of[:-1]]).tolist() + [len(cut)]
                    for lo, hi in zip(starts[:-1], starts[1:], strict=True):  # clip_by_rect takes one rectangle
                        clipped[lo:hi] = shapely.clip_by_rect(cut[lo:hi], *cut_site[lo].bounds)
                overlap[~whole] = shapely.area(shapely.intersection(clipped, cut_site))
            area[rest] = overlap
        return area

    def reach_interior(self) -> np.ndarray:
        """Whether each pair's piece reaches into its site, not only its edge: what a point or line
        entity, or any entity against an address (point) site, needs to count."""
        interior = np.ones(len(self.hits), dtype=bool)
        if self.undecided is None:
            return interior  # a decided pair that is not two areas is a point in the other's interior
        # GEOS says whether the others (points and lines it decided, address sites) only touch
        edge_only = self.undecided & ~self.pair_poly
        if edge_only.any():
            interior[edge_only] = ~shapely.touches(self._geometries(edge_only), self._sites(edge_only))
        return interior


# shapely's type ids as plain integers: comparing an array with the enum costs microseconds a time
_POINT_TYPE, _POLYGON_TYPE, _MULTIPOLYGON_TYPE = (int(t) for t in (shapely.GeometryType.POINT, shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON))


@dataclass(frozen=True, slots=True)
class _SiteArrays:
    """The sites in the kernels' layout (:func:`polygon_overlay.site_pairs`): the polygonal sites' parts'
    rings in ``xy``/``ring_offsets``, each part's rings from ``part_rings``, and the address sites' points."""

    xy: np.ndarray
    ring_offsets: np.ndarray
    part_rings: np.ndarray
    polygon: np.ndarray  # per site: its part, when it is a single polygon (pair_overlaps' polygon); else -1
    area: np.ndarray  # per site: its place in ``area_rings`` when it is polygonal; else -1
    area_rings: np.ndarray  # where each polygonal site's rings (all its parts') start, and where the last ends
    point_xy: np.ndarray  # per site: its coordinates when it is a point, else NaN

    @classmethod
    def of(cls, sites: np.ndarray, parsed: Sequence[Site]) -> _SiteArrays:
        """The arrays of the sites (their BNG geometries, and the parsed sites they are of)."""
        rings = [site.bng_ring for site in parsed]
        if len(rings) == 1 and rings[0] is not None:
            # the usual check: one site of one ring, whose vertices the parse kept (nothing asked of shapely)
            return cls(rings[0], np.array([0, len(rings[0])], dtype=np.int64), _FIRST, _ZERO, _ZERO, _FIRST, _NO_POINT)
        if all(ring is not None for ring in rings):
            counts = np.fromiter((len(r) for r in rings), dtype=np.int64, count=len(rings))
            ring_offsets = np.zeros(len(rings) + 1, dtype=np.int64)
            np.cumsum(counts, out=ring_offsets[1:])
            each = np.arange(len(rings) + 1, dtype=np.int64)
            return cls(np.concatenate(rings), ring_offsets, each, each[:-1], each[:-1], each, np.full((len(rings), 2), np.nan))
        type_id = shapely.get_type_id(sites)
        point_xy = np.full((len(sites), 2), np.nan)
        point = type_id == _POINT_TYPE
        if point.any():
            point_xy[point] = shapely.get_coordinates(sites[point])
        polygonal = (type_id == _POLYGON_TYPE) | (type_id == _MULTIPOLYGON_TYPE)
        area = np.full(len(sites), -1, dtype=np.int64)
        area[polygonal] = np.arange(int(polygonal.sum()))
        if not polygonal.any():
            none = np.zeros(1, np.int64)
            return cls(np.zeros((0, 2)), none, none, np.full(len(sites), -1, dtype=np.int64), area, none, point_xy)
        which = np.flatnonzero(polygonal)
        parts, part_of = shapely.get_parts(sites[which], return_index=True)
        _, xy, (ring_offsets, part_rings) = shapely.to_ragged_array(parts, include_z=False)
        ring_offsets, part_rings = ring_offsets.astype(np.int64, copy=False), part_rings.astype(np.int64, copy=False)
        first_part = np.searchsorted(part_of, np.arange(len(which) + 1))  # where each polygonal site's parts start
        polygon = np.full(len(sites), -1, dtype=np.int64)
        single = type_id[which] == _POLYGON_TYPE
        polygon[which[single]] = first_part[:-1][single]
        return cls(np.ascontiguousarray(xy, dtype=np.float64), ring_offsets, part_rings, polygon, area, part_rings[first_part], point_xy)


# one site of one ring: its polygon is part 0, its rings 0:1, and it is no point (never written to)
_FIRST, _ZERO, _NO_POINT = np.array([0, 1], dtype=np.int64), np.zeros(1, dtype=np.int64), np.full((1, 2), np.nan)


@dataclass(frozen=True, slots=True)
class _Live:
    """What the live platform said for the catalogue's datasets that are not held here."""

    datasets: Sequence[str]  # asked of the platform
    results: dict[str, list[dict]]  # dataset -> entities the site meets
    error: str | None  # why the platform could not answer; those keys are unknown, never clear


_NO_LIVE = _Live((), {}, None)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What one site's answer is made from (:meth:`ConstraintIndex.evidence`); with the snapshot and the
    options, it decides every key's answer (:meth:`ConstraintIndex.answers`)."""

    by_dataset: dict[str, list[Match]]  # the entities the site meets, by dataset
    uncovered: dict[str, str]  # layers that cannot answer "not" for the site: why (``coverage_gaps``)
    outside: bool  # wholly outside England, and that decides keys (some layer does not cover it, or none is held)
    live: _Live

    @property
    def meets_nothing(self) -> bool:
        """No entity met and no live platform asked: the answers then depend on ``uncovered`` and ``outside`` alone."""
        return not self.by_dataset and not self.live.datasets


def _by_dataset(matches: list[Match]) -> dict[str, list[Match]]:
    by_dataset: dict[str, list[Match]] = {}
    for m in matches:
        by_dataset.setdefault(m.layer.name, []).append(m)
    return by_dataset


@dataclass(frozen=True, slots=True)
class _EntityFacts:
    """What relating a site to the entities its pieces belong to reads, as flat arrays for
    :func:`_relate_entities`: each piece's layer and row, and every layer's entities one after the
    other (layer ``i``'s from ``layer_base[i]``): kind, area, and end date (days since 1970, NaT as
    int64's least; empty when no entity has one, so that most snapshots hold no copy of them)."""

    piece_layer: np.ndarray  # int32, per piece
    piece_row: np.ndarray  # int64, per piece
    layer_base: np.ndarray  # int64, per layer
    kind: np.ndarray  # int8, per entity
    area: np.ndarray  # float64, per entity
    end: np.ndarray  # int64, per entity, or empty


def _entity_facts(snap: Snapshot) -> _EntityFacts:
    """The snapshot's :class:`_EntityFacts`, built on its first check and kept with it."""
    facts = snap.caches.entity_facts
    if facts is None:
        layers = snap.layer_list
        base = np.zeros(len(layers) + 1, dtype=np.int64)
        np.cumsum([len(layer) for layer in layers], out=base[1:])
        some_end = any(not np.isnat(layer.end_date).all() for layer in layers)
        end = (np.concatenate([layer.end_date.astype("datetime64[D]").astype(np.int64) for layer in layers]) if some_end and layers
               else np.zeros(0, dtype=np.int64))
        facts = _EntityFacts(
            np.ascontiguousarray(snap.piece_layer, dtype=np.int32), np.ascontiguousarray(snap.piece_row, dtype=np.int64), base,
            np.concatenate([np.asarray(layer.kind, dtype=np.int8) for layer in layers]) if layers else np.zeros(0, np.int8),
            np.concatenate([np.asarray(layer.area, dtype=np.float64) for layer in layers]) if layers else np.zeros(0),
            end,
        )
        snap.caches.entity_facts = facts
    return facts


def _ring_arguments(snap: Snapshot) -> tuple:
    """The snapshot's tree, pieces and entity facts, in :func:`_match_ring`'s order (kept with it)."""
    arguments = snap.caches.ring_arguments
    if arguments is None:
        tree, store, facts = snap.tree, snap.pieces, _entity_facts(snap)
        ring_offsets, polygon_offsets = piece_offsets(store)
        arguments = (tree.boxes, tree.ref, tree.end, tree.leaves, tree.rank,
                     store.xy, ring_offsets, polygon_offsets, store.point_xy, store.kind, np.ascontiguousarray(store.slot, dtype=np.int64), store.valid, store.area,
                     facts.piece_layer, facts.piece_row, facts.layer_base, facts.kind, facts.area, facts.end)
        snap.caches.ring_arguments = arguments
    return arguments


_ALL_LAYERS = np.zeros(0, dtype=np.bool_)


def _wanted_layers(snap: Snapshot, datasets: set[str] | None) -> np.ndarray:
    """Per layer, whether it is one of ``datasets``; empty for every layer (``datasets`` None)."""
    if datasets is None:
        return _ALL_LAYERS
    key = frozenset(datasets)
    wanted = snap.caches.wanted_layers.get(key)
    if wanted is None:
        wanted = np.array([layer.name in key for layer in snap.layer_list], dtype=np.bool_)
        if len(snap.caches.wanted_layers) < 256:  # a bounded memo: callers name a handful of sets
            snap.caches.wanted_layers[key] = wanted
    return wanted


_DAYS: tuple[object, int] = (None, 0)


def _today_days() -> int:
    """``_today()`` as days since 1970, as the kernels compare end dates (converted when it gives a new value)."""
    global _DAYS
    today = _today()
    if _DAYS[0] is not today:
        _DAYS = (today, int(np.datetime64(today, "D").astype(np.int64)))
    return _DAYS[1]


def _matches(snap: Snapshot, layer, row, relation, overlap, percent, material) -> list[Match]:
    """The Match of each entity in :func:`_relate_all`'s arrays."""
    layers, names = snap.layer_list, _RELATIONS
    return [Match(layers[li], r, names[rc], ov, pc, mt)
            for li, r, rc, ov, pc, mt in zip(layer.tolist(), row.tolist(), relation.tolist(), overlap.tolist(), percent.tolist(), material.tolist(), strict=True)]


_RELATIONS = ("touches", "within", "contains", "overlaps")  # by _relate_entities' codes
_TOUCHES, _WITHIN, _CONTAINS, _OVERLAPS = range(4)
_NAT_DAYS = np.iinfo(np.int64).min  # NaT as an int64


@numba.njit(inline="always")
def _relate_site(lo, hi, hits, area, interior, site_area, piece_layer, piece_row, layer_base, entity_kind, entity_area, entity_end,
                 today, m2, pct, strict, slot, keys, out_layer, out_row, out_relation, out_overlap, out_pct, out_material, count):
    """One site's pairs ``lo:hi`` added up by entity, related, and written from ``count`` on; the new count.

    An entity's overlap is the sum of its pieces' areas in pair order, from 0.0 (as ``np.bincount`` adds).
    Entities come in the order their pieces first come for a handful of pairs (up to 64), else in the
    order of (layer, row); an entity whose end date has passed is left out."""
    n = hi - lo
    entities = 0
    first = count
    if n <= 64:
        for i in range(lo, hi):
            key = layer_base[piece_layer[hits[i]]] + piece_row[hits[i]]
            k = 0
            while k < entities and keys[k] != key:
                k += 1
            if k == entities:
                keys[k] = key
                entities += 1
            slot[i - lo] = k
    else:
        for i in range(lo, hi):
            keys[i - lo] = layer_base[piece_layer[hits[i]]] + piece_row[hits[i]]
        order = np.argsort(keys[:n], kind="mergesort")
        previous = -1
        for j in range(n):
            key = keys[order[j]]
            if j == 0 or key != previous:
                entities += 1
                previous = key
            slot[order[j]] = entities - 1
        unique = np.empty(entities, dtype=np.int64)
        for j in range(n):
            unique[slot[j]] = keys[j]
        keys[:entities] = unique
    for k in range(entities):
        out_overlap[first + k] = 0.0
        out_material[first + k] = False  # any interior, until related below
    for i in range(lo, hi):
        k = first + slot[i - lo]
        out_overlap[k] += area[i]
        if interior[i]:
            out_material[k] = True
    polygon_site = site_area > 0
    threshold = 0.0 if strict else max(m2, pct / 100 * site_area)
    within_at = site_area * (1 - RELATIVE_EPS)
    for k in range(entities):
        entity = keys[k]
        if entity_end.shape[0] > 0:
            end = entity_end[entity]
            if end != _NAT_DAYS and not end > today:
                continue
        layer = 0
        while layer_base[layer + 1] <= entity:
            layer += 1
        ov = out_overlap[first + k]
        any_interior = out_material[first + k]
        if not polygon_site:  # an address (point) site
            relation = _WITHIN if any_interior else _TOUCHES
            material = strict or any_interior
        elif entity_kind[entity] == POLYGON:
            if ov <= 0:
                relation = _TOUCHES
            elif ov >= within_at:
                relation = _WITHIN
            elif ov >= entity_area[entity] * (1 - RELATIVE_EPS):
                relation = _CONTAINS
            else:
                relation = _OVERLAPS
            material = strict or (relation != _TOUCHES and ov >= threshold)
        else:  # a point or line entity and an area site
            relation = _CONTAINS if any_interior else _TOUCHES
            material = strict or any_interior
        out_layer[count] = layer
        out_row[count] = entity - layer_base[layer]
        out_relation[count] = relation
        out_overlap[count] = ov
        out_pct[count] = 100 * ov / site_area if polygon_site else 0.0
        out_material[count] = material
        count += 1
    return count


@numba.njit
def _relate_all(pair_ends, hits, area, interior, site_area, piece_layer, piece_row, layer_base, entity_kind, entity_area, entity_end,
                today, m2, pct, strict):
    """Each site's matches from its pairs (those of site ``s`` end at ``pair_ends[s]``), as arrays:
    where each site's entities end, and per entity its layer, row, relation code (``_RELATIONS``),
    overlap, per cent of the site, and whether it counts (the tolerance's rule)."""
    pairs = hits.shape[0]
    most = 1
    lo = 0
    for s in range(pair_ends.shape[0]):
        most = max(most, pair_ends[s] - lo)
        lo = pair_ends[s]
    slot = np.empty(most, dtype=np.int64)
    keys = np.empty(most, dtype=np.int64)
    out_layer = np.empty(pairs, dtype=np.int64)
    out_row = np.empty(pairs, dtype=np.int64)
    out_relation = np.empty(pairs, dtype=np.int8)
    out_overlap = np.empty(pairs)
    out_pct = np.empty(pairs)
    out_material = np.empty(pairs, dtype=np.bool_)
    site_ends = np.empty(pair_ends.shape[0], dtype=np.int64)
    count = 0
    lo = 0
    for s in range(pair_ends.shape[0]):
        hi = pair_ends[s]
        if hi > lo:
            count = _relate_site(lo, hi, hits, area, interior, site_area[s], piece_layer, piece_row, layer_base, entity_kind, entity_area,
                                 entity_end, today, m2, pct, strict, slot, keys, out_layer, out_row, out_relation, out_overlap, out_pct,
                                 out_material, count)
        site_ends[s] = count
        lo = hi
    return site_ends, out_layer[:count], out_row[:count], out_relation[:count], out_overlap[:count], out_pct[:count], out_material[:count]


_IDS = numba.int64[::1]
_ENTITIES = (_IDS, _IDS, _IDS, numba.int8[::1], numba.float64[::1], numba.float64[::1], numba.boolean[::1])  # _relate_all's
_FACTS = (numba.int32[::1], _IDS, _IDS, numba.int8[::1], numba.float64[::1], _IDS)  # an _EntityFacts
_RULES = (numba.int64, numba.float64, numba.float64, numba.boolean)  # today, m2, pct, strict


@compiled(numba.types.Tuple(_ENTITIES)(_IDS, _IDS, numba.float64[::1], numba.boolean[::1], numba.float64[::1], *_FACTS, *_RULES))
def _relate_entities(pair_ends, hits, area, interior, site_area, piece_layer, piece_row, layer_base, entity_kind, entity_area, entity_end,
                     today, m2, pct, strict):
    """:func:`_relate_all` for the pairs of :meth:`ConstraintIndex.match_many` (GEOS's answers among them)."""
    return _relate_all(pair_ends, hits, area, interior, site_area, piece_layer, piece_row, layer_base, entity_kind, entity_area, entity_end,
                       today, m2, pct, strict)


def _match_ring_signatures():
    signatures = []
    for offsets in (numba.int32[::1], numba.int64[::1]):
        store = (numba.float64[:, ::1], offsets, offsets, numba.float64[:, ::1], numba.int8[::1], _IDS, numba.boolean[::1], numba.float64[::1])
        tree = (numba.float64[:, ::1], _IDS, _IDS, numba.int64, _IDS)
        result = numba.types.Tuple((numba.boolean, _IDS, numba.float64[::1], numba.int8[::1], *_ENTITIES))
        signatures.append(result(numba.float64[:, ::1], *tree, *store, *_FACTS, numba.boolean[::1], *_RULES))
    return signatures


@compiled(_match_ring_signatures())
def _match_ring(ring, tree_boxes, tree_ref, tree_end, leaves, rank,
                piece_xy, piece_ring_offsets, piece_rings, piece_point_xy, piece_kind, piece_slot, piece_valid, piece_area,
                piece_layer, piece_row, layer_base, entity_kind, entity_area, entity_end, wanted, today, m2, pct, strict):
    """The whole matching of a site of one ring (``ring``, closed) in one call, as
    :meth:`ConstraintIndex.match_many` does it stage by stage: the pieces whose boxes meet the site's, of
    the layers ``wanted`` (all when empty), how each meets the site (:func:`polygon_overlay.site_pairs_into`),
    and, the pairs that meet, by entity (:func:`_relate_all`).

    Returns whether every pair was decided, the candidate pieces and their site_pairs area and relation,
    and _relate_all's arrays: when a pair is undecided those are empty, and GEOS is asked as for any site.
    """
    site_area = ring_area(ring)
    x0 = x1 = ring[0, 0]
    y0 = y1 = ring[0, 1]
    for j in range(1, ring.shape[0]):
        x0, x1, y0, y1 = min(x0, ring[j, 0]), max(x1, ring[j, 0]), min(y0, ring[j, 1]), max(y1, ring[j, 1])
    stack = np.empty(64 * NODE_SIZE, dtype=np.int64)
    hits, count = query_into(tree_boxes, tree_ref, tree_end, leaves, rank, x0, y0, x1, y1, stack, np.empty(64, dtype=np.int64), 0)
    if wanted.shape[0] > 0:
        kept = 0
        for i in range(count):
            if wanted[piece_layer[hits[i]]]:
                hits[kept] = hits[i]
                kept += 1
        count = kept
    hits = hits[:count]
    # the site in the layout of site_pairs_into: one polygon of one ring, no point
    ring_offsets = np.array([0, ring.shape[0]], dtype=np.int64)
    first = np.array([0, 1], dtype=np.int64)
    zero = np.zeros(1, dtype=np.int64)
    areas = np.full(1, site_area)
    area = np.empty(count)
    relation = np.empty(count, dtype=np.int8)
    site_pairs_into(ring, ring_offsets, first, zero, zero, first, np.full((1, 2), np.nan), areas,
                    piece_xy, piece_ring_offsets, piece_rings, piece_point_xy, piece_kind, piece_slot, piece_valid, piece_area,
                    np.zeros(count, dtype=np.int64), hits, area, relation)
    meeting = 0
    for i in range(count):
        if relation[i] == UNDECIDED:
            none = np.zeros(0, dtype=np.int64)
            return (False, hits, area, relation, none, none, none, np.zeros(0, dtype=np.int8), np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.bool_))
        if relation[i] != DISJOINT:
            meeting += 1
    met = np.empty(meeting, dtype=np.int64)
    met_area = np.empty(meeting)
    k = 0
    for i in range(count):
        if relation[i] != DISJOINT:
            met[k] = hits[i]
            met_area[k] = area[i]
            k += 1
    # a decided pair that is not two areas is a point in the other's interior (reach_interior)
    site_ends, layer, row, code, overlap, percent, material = _relate_all(
        np.full(1, meeting), met, met_area, np.ones(meeting, dtype=np.bool_), areas, piece_layer, piece_row, layer_base,
        entity_kind, entity_area, entity_end, today, m2, pct, strict)
    return True, hits, area, relation, site_ends, layer, row, code, overlap, percent, material


def _unknown_outside_england(answers: dict[str, dict]) -> None:
    """A site wholly outside England: no layer here can rule a key out, so each key not met is unknown."""
    for key, answer in answers.items():
        if answer["status"] != "intersects":
            reasons = [OUTSIDE_ENGLAND] + [r for r in (answer["reason"] or "").split("; ") if r and r != OUTSIDE_ENGLAND]
            answers[key] = {**answer, "status": "unknown", "reason": "; ".join(reasons), "text": f"could not be checked: {OUTSIDE_ENGLAND}"}


@dataclass
class ConstraintIndex:
    """The constraint layers of a cache, indexed for checks, and swapped atomically when data changes.

    ``live``: an optional object with ``lookup(site_wkt, datasets) -> {dataset: [entity dicts]}`` used for
    datasets that are not cached (the platform's live API); when it fails those keys are ``unknown``.
    """

    cache: LayerCache
    catalogue: Catalogue
    live: object | None = None
    stale_after_hours: float = 48.0
    limits: SiteLimits = field(default_factory=SiteLimits)
    snapshot: Snapshot | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @classmethod
    def from_cache(cls, cache: LayerCache, catalogue: Catalogue, **options) -> ConstraintIndex:
        index = cls(cache, catalogue, **options)
        index.reload()
        return index

    # -- data refresh ---------------------------------------------------------------------------

    def reload(self, force: bool = False) -> bool:
        """Rebuild from the cache if it changed; the new snapshot replaces the old in one assignment,
        so a check in flight finishes on the layers it started with. Returns whether it rebuilt."""
        with self._lock:
            if not force and self.snapshot is not None and self.snapshot.generation == self.cache.generation():
                return False
            snapshot = build_snapshot(self.cache, previous=None if force else self.snapshot)
            self.snapshot = snapshot
            # Millions of long-lived geometries would otherwise be walked by every full garbage
            # collection (133 ms at national scale), a pause that lands on some unlucky check.
            gc.freeze()
            log.info("index ready: %d datasets, %d features, %d pieces in %.1f s", len(snapshot.layers), snapshot.features, len(snapshot.piece_geometry), snapshot.build_seconds)
            return True

    def reload_if_changed(self) -> bool:
        if self.snapshot is not None and self.snapshot.generation == self.cache.generation():
            return False
        return self.reload()

    @property
    def data_version(self) -> str:
        return self.snapshot.data_version if self.snapshot else "none"

    # -- the check ------------------------------------------------------------------------------

    def match(self, site: Site, tolerance: Tolerance = Tolerance(), snapshot: Snapshot | None = None, datasets: set[str] | None = None) -> list[Match]:
        """Every current entity the site meets, with its relation and overlap (vectorised)."""
        return self.match_many([site], tolerance, snapshot, datasets)[0]

    def match_many(self, sites: list[Site], tolerance: Tolerance = Tolerance(), snapshot: Snapshot | None = None, datasets: set[str] | None = None) -> list[list[Match]]:
        """:meth:`match` for many sites at once: one tree query and one call of each GEOS operation
        for all of them, so a batch pays the fixed cost of each array operation once, not per site.
        Each site's matches are exactly (and in the same order as) what it would get alone."""
        snap = snapshot or self.snapshot
        if snap is None or snap.tree is None or not sites:
            return [[] for _ in sites]
        if len(sites) == 1 and sites[0].bng_ring is not None:
            return [self._match_ring(snap, sites[0], tolerance, datasets)]
        pairs = _Pairs.candidates(snap, sites, datasets)
        if pairs is None or not pairs.keep_meeting():
            return [[] for _ in sites]
        return self._per_entity(snap, pairs, pairs.overlap_areas(), pairs.reach_interior(), len(sites), tolerance)

    @classmethod
    def _match_ring(cls, snap: Snapshot, site: Site, tolerance: Tolerance, datasets: set[str] | None) -> list[Match]:
        """:meth:`match` for a site of one ring (the usual check) in one compiled call (:func:`_match_ring`),
        unless a pair is one only GEOS can decide: then its candidates go on as any site's do."""
        decided, hits, area, relation, *entities = _match_ring(
            site.bng_ring, *_ring_arguments(snap), _wanted_layers(snap, datasets), _today_days(), float(tolerance.m2), float(tolerance.pct), tolerance.is_strict)
        if decided:
            return _matches(snap, *entities[1:])
        geoms = np.empty(1, dtype=object)
        geoms[0] = site.bng
        pairs = _Pairs(True, geoms, [site], shapely.area(geoms), np.zeros(len(hits), dtype=np.int64), hits, snap.pieces, snap.pieces.area[hits])
        if not pairs.keep(area, relation):
            return []
        return cls._per_entity(snap, pairs, pairs.overlap_areas(), pairs.reach_interior(), 1, tolerance)[0]

    @classmethod
    def _per_entity(cls, snap: Snapshot, pairs: _Pairs, area: np.ndarray, interior: np.ndarray, sites: int, tolerance: Tolerance) -> list[list[Match]]:
        """Each site's matches: its pairs added up by entity (the pieces of one entity add up), with
        their relations, in one compiled call for every site (:func:`_relate_entities`)."""
        facts = _entity_facts(snap)
        if pairs.one:
            pair_ends = np.array([len(pairs.hits)], dtype=np.int64)
        else:
            pair_ends = np.searchsorted(pairs.site_of, np.arange(1, sites + 1)).astype(np.int64)
        site_ends, *entities = _relate_entities(
            pair_ends, pairs.hits, area, interior, pairs.site_areas, facts.piece_layer, facts.piece_row, facts.layer_base, facts.kind, facts.area,
            facts.end, _today_days(), float(tolerance.m2), float(tolerance.pct), tolerance.is_strict,
        )
        every = _matches(snap, *entities)
        if pairs.one:
            return [every]
        out: list[list[Match]] = []
        lo = 0
        for hi in site_ends.tolist():
            out.append(every[lo:hi])
            lo = hi
        return out

    def check(
        self,
        site,
        *,
        tolerance: Tolerance = Tolerance(),
        datasets: list[str] | None = None,
        council: str | None = None,
        keys: list[str] | None = None,
        snapshot: Snapshot | None = None,
        matches: list[Match] | None = None,
    ) -> dict:
        """The native answer for a site: every catalogue key with its status and evidence.

        ``site`` is GeoJSON (bytes, str or dict) or a shapely geometry in EPSG:4326, or a parsed ``Site``.
        ``datasets`` restricts the check to those datasets (other keys are ``unknown``); ``council``
        adds that council's granular article 4 keys; ``keys`` restricts the answer to those keys.
        ``snapshot`` pins the data to check against (the current one by default). ``matches``: the
        site's matches when :meth:`match_many` already found them (same tolerance, snapshot, datasets).
        """
        if not isinstance(site, Site):
            site = parse_site(site, self.limits)
        snap = snapshot or self.snapshot
        if snap is None:
            raise CacheError("the index is not loaded yet")
        allowed = set(datasets) if datasets is not None else None
        if matches is None:
            matches = self.match(site, tolerance, snap, allowed)
        evidence = self.evidence(site, snap, matches, allowed)
        return self._assemble(site, snap, self.answers(evidence, snap, allowed, council), keys, evidence.live, tolerance)

    def evidence(self, site: Site, snap: Snapshot, matches: list[Match], allowed: set[str] | None = None) -> Evidence:
        """All that a site's answer depends on besides the snapshot and the options: its matches,
        the layers that cannot answer "not" for it, whether it lies outside England, the live platform's word."""
        uncovered = coverage_gaps(site, snap)
        outside = bool(uncovered or not snap.layers) and england_part(site.geometry) == "outside"
        return Evidence(_by_dataset(matches), uncovered, outside, self._live_answers(site, snap, allowed))

    def answers(self, evidence: Evidence, snap: Snapshot, allowed: set[str] | None = None, council: str | None = None) -> dict[str, dict]:
        """Every key's answer (catalogue order, then article 4's) from the evidence: the one place the
        status rules are applied, for the service's answers and the batch's rows alike.

        The answers are read-only: a key the site does not meet has the snapshot's stock answer for it
        (one object shared by every such site), and :meth:`_assemble` hands out copies.
        """
        answers = self._answer_keys(snap, evidence.by_dataset, evidence.uncovered, allowed, evidence.live)
        self._combine_any_of(answers, snap)
        answers.update(self._article4(answers, council))
        if evidence.outside:
            _unknown_outside_england(answers)
        return answers

    def stock_answer(self, key: str, snap: Snapshot) -> dict | None:
        """The shared answer of ``key`` for a site that meets none of its datasets (see :meth:`answers`), if any yet."""
        return snap.caches.unmet_answers.get(key)

    def _live_answers(self, site: Site, snap: Snapshot, allowed: set[str] | None) -> _Live:
        """Ask the live platform about the catalogue's datasets not held here (when there is one to ask)."""
        if self.live is None:
            return _NO_LIVE
        wanted = [d for d in self.catalogue.datasets() if d not in snap.layers and (allowed is None or d in allowed)]
        if not wanted:
            return _NO_LIVE
        try:
            return _Live(wanted, self.live.lookup(site.geometry.wkt, wanted), None)
        except Exception as err:  # any failure of the platform makes those keys unknown, never clear
            return _Live(wanted, {}, f"the live Planning Data query failed: {err}")

    def _answer_keys(self, snap: Snapshot, by_dataset: dict[str, list[Match]], uncovered: dict[str, str], allowed: set[str] | None, live: _Live) -> dict[str, dict]:
        """Every catalogue key not derived from others, in catalogue order, answered from the evidence."""
        if allowed is None and not live.datasets:
            # With every dataset asked for and none live, a key whose datasets the site neither meets nor
            # falls outside of has the snapshot's stock answer (the common case): shared, not worked out.
            answers = dict(self._stock_answers(snap))
            for constraint in self.catalogue.direct_keys(by_dataset.keys() | uncovered.keys()):
                answers[constraint.key] = self._answer(constraint, snap, by_dataset, uncovered, allowed, live)
            return answers
        return {c.key: self._answer(c, snap, by_dataset, uncovered, allowed, live) for c in self.catalogue.constraints if not c.any_of}

    def _stock_answers(self, snap: Snapshot) -> dict[str, dict]:
        """Every key not derived from others with its stock answer, in catalogue order (kept on the snapshot)."""
        stock = snap.caches.stock_answers
        if stock is None:
            unmet = snap.caches.unmet_answers
            stock = {c.key: unmet.get(c.key) or self._unmet_answer(c, snap) for c in self.catalogue.constraints if not c.any_of}
            snap.caches.stock_answers = stock
        return stock

    def _unmet_answer(self, constraint, snap: Snapshot) -> dict:
        """A key's answer for a site that meets none of its datasets, each covering the site: clear when
        every one is loaded, else unknown. It is what :meth:`_answer` would say, kept on the snapshot."""
        missing = [f"the {name} dataset is not loaded" for name in constraint.datasets if name not in snap.layers]
        status, reason = ("unknown", "; ".join(missing)) if missing else ("clear", None)
        template = self._shape(constraint.key, constraint.category, constraint.positive, constraint.negative, status, [], [], list(constraint.datasets), reason)
        snap.caches.unmet_answers[constraint.key] = template
        return template

    def _combine_any_of(self, answers: dict[str, dict], snap: Snapshot) -> None:
        """Answer the keys made of others (``any_of``): met when any part is, clear when all are, else unknown."""
        unmet = snap.caches.unmet_answers
        for constraint in self.catalogue.derived_keys:
            # made of stock answers only: so is this one (a key has a stock answer only once each of its
            # parts has had one, so no part's ``unmet.get`` is None here)
            known = unmet.get(constraint.key)
            if known is not None:
                for k in constraint.any_of:  # a loop, not all(generator): this runs on every check
                    if answers.get(k) is not unmet.get(k):
                        break
                else:
                    answers[constraint.key] = known
                    continue
            parts = [answers[k] for k in constraint.any_of if k in answers]
            stock = all(answers.get(k) is not None and answers[k] is unmet.get(k) for k in constraint.any_of)
            if any(p["status"] == "intersects" for p in parts):
                status = "intersects"
            elif all(p["status"] == "clear" for p in parts):
                status = "clear"
            else:
                status = "unknown"
            answers[constraint.key] = self._shape(
                constraint.key, constraint.category, constraint.positive, constraint.negative, status,
                [e for p in parts for e in p["entities"]], [], [],
                None if status != "unknown" else "a designation behind it could not be checked: " + "; ".join(p["reason"] for p in parts if p["status"] == "unknown"),
            )
            if stock:
                unmet[constraint.key] = answers[constraint.key]

    def _assemble(self, site: Site, snap: Snapshot, answers: dict[str, dict], keys: list[str] | None, live: _Live, tolerance: Tolerance) -> dict:
        """The answer as returned: the keys asked for, and where each dataset's data came from."""
        constraints = []
        for key, answer in answers.items():
            if keys is None or key in keys:
                # a copy: the answers may be shared with other sites, and callers may change what they get
                out = answer.copy()
                out["datasets"] = [*answer["datasets"]]
                if answer["entities"] or answer["nearby"]:
                    out["entities"], out["nearby"] = [*answer["entities"]], [*answer["nearby"]]
                    if "_gaps" in out:
                        del out["_gaps"]
                else:  # most keys (their stock answers): nothing to copy, nor a "_gaps" (only kept beside entities)
                    out["entities"], out["nearby"] = [], []
                constraints.append(out)
        provenance = self._provenance(snap)
        if live.datasets:
            provenance = dict(provenance)
            for name in live.datasets:
                provenance[name] = {"source": "live", "error": live.error}
        return {
            "site": site.summary(),
            "constraints": constraints,
            "provenance": {
                "datasets": provenance,
                "data_version": snap.data_version,
                "checked_at": _checked_at(),
                "tolerance": tolerance.as_dict(),
            },
        }

    def _provenance(self, snap: Snapshot) -> dict:
        """Per-dataset provenance, worked out once a minute rather than on every check."""
        minute = int(time.time() // 60)
        cached = snap.caches.provenance
        if cached is not None and cached[0] == minute:
            return cached[1]
        provenance = {}
        for name in sorted({d for c in self.catalogue.constraints for d in c.datasets}):
            layer = snap.layers.get(name)
            if layer is None:
                continue
            entry = layer.entry
            provenance[name] = {
                "source": "cache",
                "origin": entry.get("source"),
                "loaded_at": entry.get("loaded_at"),
                "features": entry.get("features"),
                "etag": entry.get("etag"),
                "version": entry.get("version"),
                "stale": is_stale(entry, stale_after_hours=self.stale_after_hours),
                "checked_at": entry.get("checked_at"),
                "metadata": entry.get("metadata"),
            }
        snap.caches.provenance = (minute, provenance)
        return provenance

    @staticmethod
    def _shape(key, category, positive, negative, status, entities, nearby, datasets, reason) -> dict:
        return {
            "key": key,
            "status": status,
            "text": positive if status == "intersects" else negative if status == "clear" else f"could not be checked: {reason}",
            "category": category,
            "datasets": datasets,
            "entities": entities,
            "nearby": nearby,
            "reason": reason,
        }

    def _answer(self, constraint, snap: Snapshot, by_dataset: dict[str, list[Match]], uncovered: dict[str, str], allowed: set[str] | None, live: _Live) -> dict:
        """One key's answer from the entities the site meets in its datasets, their coverage and the live platform."""
        entities, nearby, missing = [], [], []
        for name in constraint.datasets:
            if allowed is not None and name not in allowed:
                missing.append(f"{name} was left out of this check")
                continue
            if name not in snap.layers:
                if name in live.datasets:
                    if live.error:
                        missing.append(live.error)
                    else:
                        for found in live.results.get(name, []):
                            if self._selected(constraint, found):
                                entities.append({**found, "relation": "intersects", "overlap_m2": None, "overlap_pct": None, "provenance": "live"})
                    continue
                missing.append(f"the {name} dataset is not loaded")
                continue
            found = by_dataset.get(name)
            if found and not constraint.entities and not constraint.field:  # the key shows every entity of its datasets
                for m in found:
                    (entities if m.material else nearby).append(dict(m.shown_dict()))
            elif found:
                blank = 0
                for m in found:
                    props = m.shown_dict()
                    if not self._selected(constraint, props):
                        if m.material and constraint.field and self._unstated(constraint.field, props):
                            blank += 1  # it may be one of these: its record does not say
                        continue
                    (entities if m.material else nearby).append(dict(props))
                if blank:
                    fields = " or ".join(constraint.field)
                    missing.append(f"{blank} {name} entit{'y' if blank == 1 else 'ies'} the site meets ha{'s' if blank == 1 else 've'} no {fields}")
            gap = uncovered.get(name)
            if gap is not None:
                missing.append(gap)
        if entities:
            status, reason = "intersects", None
        elif missing:
            status, reason = "unknown", "; ".join(missing)
        else:
            status, reason = "clear", None
        shape = self._shape(constraint.key, constraint.category, constraint.positive, constraint.negative, status, entities, nearby, list(constraint.datasets), reason)
        if entities and missing:
            shape["_gaps"] = "; ".join(missing)  # what keys derived from this one cannot rule out (dropped before output)
        return shape

    @staticmethod
    def _unstated(fields, props: dict) -> bool:
        """Whether the entity's record leaves any of ``fields`` blank (a loop, not any(generator): it
        runs for every entity a field key passes over)."""
        for name in fields:
            if not str(props.get(name) or "").strip():
                return True
        return False

    @staticmethod
    def _selected(constraint, props: dict) -> bool:
        if constraint.entities and int(props.get("entity", -1)) not in constraint.entities:
            return False
        if constraint.field:
            for name, values in constraint.field.items():
                if str(props.get(name, "")).strip() not in values:
                    return False
        return True

    def _article4(self, answers: dict[str, dict], council: str | None) -> dict[str, dict]:
        """Granular article 4 keys, derived from the ``articleFour`` answer as PlanX derives them.

        With a council (a PlanX team slug, matched exactly) every key of that team is answered: true
        when an article 4 direction area the site meets identifies it, false only when ``articleFour``
        itself could check the whole site, else unknown with ``articleFour``'s reason; the central
        activities zone is answered again under the team's own key (``articleFour.lambeth.caz``), and,
        as in PlanX, makes ``articleFour`` true when it is. Without a council only the keys that apply
        are listed.
        """
        parent = answers.get("articleFour")
        team = self.catalogue.article4_council(council)
        if parent is None or (council is not None and team is None):
            return {}
        entities = parent["entities"] if parent["status"] == "intersects" else []
        if team is None and not entities:
            return {}  # without a council only the keys that apply are listed, and none can
        teams = [team] if team is not None else self.catalogue.article4_teams_for(entities)
        gaps = parent.get("_gaps") or (parent["reason"] if parent["status"] == "unknown" else None)
        out: dict[str, dict] = {}
        for each in teams:
            if not entities and team is None:
                break
            found = each.match(entities) if entities else {}
            for rule in each.rules:
                hits = found.get(rule.key, [])
                if not hits and team is None:
                    continue  # without a council, only the granular keys that apply are listed
                status = "intersects" if hits else "unknown" if gaps else "clear"
                out[rule.key] = self._shape(
                    rule.key, "General policy", f"is in the article 4 direction area '{rule.description}'",
                    f"is not in the article 4 direction area '{rule.description}'", status, hits, [],
                    list(parent["datasets"]), gaps if status == "unknown" else None,
                )
        caz = answers.get("articleFour.caz")
        if team is not None and caz is not None:
            own = out.get(team.caz_key)
            if own is None or own["status"] != "intersects" or caz["status"] == "intersects":
                out[team.caz_key] = {**caz, "key": team.caz_key}
            if caz["status"] == "intersects" and parent["status"] != "intersects":
                out["articleFour"] = {**parent, "status": "intersects", "text": self.catalogue.get("articleFour").positive,
                                      "entities": list(caz["entities"]), "reason": None}
        return out


def coverage_gaps(site: Site, snap: Snapshot) -> dict[str, str]:
    """The one rule for whether a layer can answer "not" for a site: for each layer that cannot, why.

    A layer answers for a site only when the area its copy is complete for holds the whole site: the
    coverage recorded when it was loaded (a council's district, a regional extract; empty when the
    operator named none) or, when none was recorded, England (the platform's national datasets).
    Layers that cover the site are not in the result. Every answer (native, PlanX, ODP, GeoJSON,
    batch rows, the widget) takes its "unknown" from here through :meth:`ConstraintIndex.check`.
    """
    if snap.caches.all_national is None:
        snap.caches.all_national = all(layer.coverage is None for layer in snap.layers.values())
    if snap.caches.all_national and snap.layers:  # the platform's layers only: England alone decides
        part = england_part(site.geometry)
        if part == "inside":
            return {}
        if part == "outside":
            return dict.fromkeys(snap.layers, OUTSIDE_ENGLAND)
    out: dict[str, str] = {}
    verdicts: dict[int, bool] = {}
    part = None
    for name, layer in snap.layers.items():
        if layer.coverage is None:
            if part is None:
                part = england_part(site.geometry)
            if part == "outside":
                out[name] = OUTSIDE_ENGLAND
            elif part == "partly":
                out[name] = PARTLY_OUTSIDE_ENGLAND.format(name=name)
            continue
        key = id(layer.coverage)
        if key not in verdicts:
            verdicts[key] = not layer.coverage.is_empty and layer.coverage.covers(site.bng)
        if not verdicts[key]:
            held = f" (it covers {describe(layer.entry)})"
            out[name] = f"the {name} layer held here does not cover the whole site{held}, so its absence proves nothing"
    return out


def geometry_of(answer_entity: dict, snapshot: Snapshot) -> BaseGeometry | None:
    """The EPSG:4326 geometry of an entity in an answer, for GeoJSON output."""
    layer = snapshot.layers.get(answer_entity.get("dataset", ""))
    if layer is None:
        return None
    rows = np.flatnonzero(layer.entity == int(answer_entity["entity"]))
    return layer.geometry[rows[0]] if len(rows) else None


__all__ = ["BASE_COLUMNS", "ConstraintIndex", "Evidence", "Match", "Snapshot", "Tolerance", "build_snapshot", "geometry_of", "subdivide", "subdivide_batches"]
