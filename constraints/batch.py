"""Batch constraint checks: every site of a GIS file against every catalogue key, on a Dask cluster.

A GIS team's table of sites (hundreds of thousands to millions of land titles or past applications)
is checked with exactly the service's core: each site goes through ``parse_site`` (the same
validation, repair and limits), ``ConstraintIndex.match_many`` (the same index, relations and
tolerance rules, for a whole partition at once) and ``ConstraintIndex.evidence`` and ``answers``
(the status rules ``check`` answers with), so a row of the batch output says what ``POST /check``
would say for that site.

How a run goes:

1. The cluster is started (or reached) and every worker starts building its constraint index (step 3)
   while this process reads the sites: ``read_sites`` reads GeoParquet, GeoPackage, GeoJSON, Shapefile (or zip), FlatGeobuf or CSV with
   WKT in any CRS into EPSG:4326 (``datasets.loaders`` for the formats; British National Grid through
   OSTN15). Rows that cannot be sites at all (no geometry, off the OSTN15 grid) are set aside as errors.
2. The sites are sorted by the Hilbert distance of their centres and cut into partitions of
   ``partition_size``: neighbouring sites share a partition, so one task touches a compact region.
3. Each partition is one Dask task. A worker builds the constraint index once from the shared cache
   folder (``worker_index``, a module-level cache in the worker process, refreshed only when the
   cache's generation changes) and never receives it over the network: tasks carry only site WKB.
   The task writes its rows to ``<out>.parts/part-NNNNN.arrow`` (Arrow IPC, LZ4: a tenth of the CPU of
   Parquet to write and next to none to read back, since only the final file is kept) by temp file
   and rename, so a part on disk is always complete. Sites that fail ``parse_site`` are recorded in
   that part's metadata.
4. Parts are streamed, in order, into one GeoParquet (or CSV) file as soon as each and all before it
   are there (by the client, while the workers go on checking), written under a temporary name and
   renamed when the last is in: the result appears whole or not at all. Bad rows go to
   ``<out>.errors.csv`` (row, id, reason), written before the result.

A worker that dies mid-run is replaced (by its nanny, on a local cluster) and Dask reruns its task; a
run that fails leaves its finished parts, and ``resume=True`` skips them (when they were made from the
same input, options and layer data).

Output, one row per site and key: the site id (column named as ``id_field``, else ``row``, the
1-based row number in the file), ``key``, ``status`` (``intersects``/``clear``/``unknown``),
``reason`` (why, when ``unknown``; else empty), ``entities`` (ids), ``names``, ``overlap_m2`` (aligned
with ``entities``), ``nearby`` (ids of entities touched below the tolerance), ``site_area_m2``
(geodesic, as the service reports it) and, in GeoParquet, the checked site ``geometry`` (EPSG:4326).
Rows are grouped by partition (spatially), in input order within a partition.

Usage::

    report = run_batch("titles.gpkg", "results.parquet", cache_root=".redline", workers=2)
    report.sites, report.errors
    # (120000, 14)
"""

from __future__ import annotations

import contextlib
import csv
import gc
import hashlib
import io
import json
import logging
import os
import shutil
import threading
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import shapely

from datasets.cache import CacheError, atomic_path
from datasets.crs import GB_LAT, GB_LON

from .index import ConstraintIndex, Evidence, Tolerance
from .site import SiteError

log = logging.getLogger("redline.batch")

DEFAULT_PARTITION_SIZE = 2000
HILBERT_LEVEL = 16
PART_FORMAT = "redline-batch-part-2"  # Arrow IPC; -1 was Parquet
STATUSES = ("intersects", "clear", "unknown")
RESERVED_COLUMNS = ("key", "status", "reason", "entities", "names", "overlap_m2", "nearby", "site_area_m2", "geometry")
LIST_COLUMNS = ("entities", "names", "overlap_m2", "nearby")  # JSON arrays in a CSV result
READABLE = (".parquet", ".geoparquet", ".gpkg", ".geojson", ".json", ".shp", ".zip", ".fgb", ".csv")


class BatchError(ValueError):
    """The batch cannot start: bad input file, options or output path. The message says what to do."""


class BatchRunError(RuntimeError):
    """The run started but did not finish; finished parts are kept for ``resume``."""


# -- reading sites --------------------------------------------------------------------------------


@dataclass
class SiteTable:
    """Sites read from a file, in EPSG:4326, with the rows that could not be sites at all."""

    id_field: str  # the output column holding ``ids``
    ids: np.ndarray  # int64 or object (str), one per usable row
    rows: np.ndarray  # int64, 1-based row number in the file
    geometry: np.ndarray  # shapely, EPSG:4326
    errors: list[tuple[int, object, str]] = field(default_factory=list)  # (row, id, reason)

    def __len__(self) -> int:
        return len(self.rows)


def _read_rows(path: Path, layer: str | None, crs: str | int | None):
    from datasets.loaders import LoadError, read_rows

    try:
        return read_rows(path, layer, crs)
    except LoadError as err:
        raise BatchError(str(err)) from None


def read_sites(
    path: Path | str, *, id_field: str | None = None, layer: str | None = None, crs: str | int | None = None
) -> SiteTable:
    """Read the sites of a GIS file into EPSG:4326.

    Rows that cannot be sites at all (an empty or unreadable geometry cell, no geometry, coordinates
    off the OSTN15 grid) are reported in ``errors``, with the loader's words for them; everything
    else about a site (validity, range, limits) is judged later by ``parse_site``, as the service
    judges it.

    Raises
    ------
    BatchError
        The file is missing or unreadable, has no CRS, or has no column ``id_field``.
    """
    from datasets.loaders import kebab

    path = Path(path)
    _check_sites_path(path)
    read = _read_rows(path, layer, crs)
    frame = read.frame
    rows = np.arange(1, len(frame) + 1, dtype=np.int64)

    if id_field:
        column = id_field if id_field in frame.columns else kebab(id_field)
        if column not in frame.columns or column == frame.geometry.name:
            names = ", ".join(str(c) for c in frame.columns if c != frame.geometry.name)
            raise BatchError(f"--id-field {id_field!r} is not a column of {path.name}; columns: {names}")
        if id_field in RESERVED_COLUMNS:
            raise BatchError(
                f"--id-field {id_field!r} clashes with an output column; the output needs {', '.join(RESERVED_COLUMNS)}"
            )
        values = frame[column]
        if values.dtype.kind in "iu":
            ids = values.to_numpy(dtype=np.int64)
        else:
            ids = np.array(["" if v is None or v != v else str(v) for v in values.tolist()], dtype=object)
        out_name = id_field
    else:
        ids, out_name = rows.copy(), "row"

    geometry = np.array(frame.geometry.to_numpy(), dtype=object)
    keep = read.problems == None  # noqa: E711 - elementwise on an object array
    errors = [(int(rows[i]), _plain(ids[i]), str(read.problems[i])) for i in np.flatnonzero(~keep)]
    return SiteTable(out_name, ids[keep], rows[keep], geometry[keep], errors)


def _check_sites_path(path: Path) -> None:
    """Refuse a sites path that cannot be read at all, before anything starts."""
    if not path.exists():
        raise BatchError(f"{path} does not exist")
    if path.is_dir():
        raise BatchError(f"{path} is a folder; give a file ({', '.join(READABLE)})")
    if path.suffix.lower() not in READABLE:
        raise BatchError(
            f"{path.name}: unsupported file type {path.suffix!r}; give one of {', '.join(READABLE)}"
        )


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


# -- spatial partitioning -------------------------------------------------------------------------


def hilbert_distance(
    x: np.ndarray, y: np.ndarray, bounds: tuple[float, float, float, float], level: int = HILBERT_LEVEL
) -> np.ndarray:
    """Distance along a Hilbert curve of order ``level`` over ``bounds`` (vectorised, uint64).

    Points close on the curve are close on the ground, so consecutive runs of sorted sites make
    compact partitions. Coordinates outside ``bounds`` (or NaN) are clamped onto its edge.

    Examples
    --------
    >>> hilbert_distance(np.array([0.0, 1.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0, 1.0]), (0, 0, 1, 1), 1).tolist()
    [0, 3, 2, 1]
    """
    side = (1 << level) - 1
    xmin, ymin, xmax, ymax = bounds
    fx = np.nan_to_num((np.asarray(x, dtype=np.float64) - xmin) / (xmax - xmin), nan=0.0)
    fy = np.nan_to_num((np.asarray(y, dtype=np.float64) - ymin) / (ymax - ymin), nan=0.0)
    xi = np.clip(np.round(fx * side), 0, side).astype(np.int64)
    yi = np.clip(np.round(fy * side), 0, side).astype(np.int64)
    d = np.zeros(len(xi), dtype=np.int64)
    s = 1 << (level - 1)
    while s > 0:
        rx = (xi & s) > 0
        ry = (yi & s) > 0
        d += s * s * ((3 * rx) ^ ry)
        # rotate the quadrant so the curve stays continuous
        flip = ~ry & rx
        xi = np.where(flip, side - xi, xi)
        yi = np.where(flip, side - yi, yi)
        swap = ~ry
        xi, yi = np.where(swap, yi, xi), np.where(swap, xi, yi)
        s >>= 1
    return d.astype(np.uint64)


def partition(geometry: np.ndarray, size: int) -> list[np.ndarray]:
    """Positions of ``geometry`` cut into Hilbert-ordered runs of at most ``size`` (deterministic)."""
    if len(geometry) == 0:
        return []
    bounds = shapely.bounds(geometry)
    cx = (bounds[:, 0] + bounds[:, 2]) / 2
    cy = (bounds[:, 1] + bounds[:, 3]) / 2
    order = np.argsort(hilbert_distance(cx, cy, (GB_LON[0], GB_LAT[0], GB_LON[1], GB_LAT[1])), kind="stable")
    return [np.sort(order[i : i + size]) for i in range(0, len(order), size)]


# -- the per-partition work (runs on a worker) ----------------------------------------------------


@dataclass(frozen=True)
class IndexSpec:
    """Where a worker finds the layers and catalogue: paths on a folder every worker shares."""

    cache_root: str
    local_catalogue: str | None = None
    article4_dir: str | None = None

    def build(self) -> ConstraintIndex:
        from datasets.cache import LayerCache
        from datasets.catalogue import load_catalogue

        return ConstraintIndex.from_cache(
            LayerCache(self.cache_root), load_catalogue(self.local_catalogue, self.article4_dir)
        )


_WORKER_INDEXES: dict[IndexSpec, ConstraintIndex] = {}
_WORKER_LOCK = threading.Lock()


def worker_index(spec: IndexSpec) -> ConstraintIndex:
    """The index for ``spec`` in this process: built on first use, rebuilt only if the cache changed.

    Module-level on purpose: a Dask worker process keeps it between tasks, so the layers are read
    from the shared cache once per worker rather than shipped with every task.
    """
    with _WORKER_LOCK:
        index = _WORKER_INDEXES.get(spec)
        if index is None:
            index = _WORKER_INDEXES[spec] = spec.build()
        else:
            index.reload_if_changed()
        return index


def worker_data_version(spec: IndexSpec) -> str:
    """Build (or reuse) this worker's index and say which layer data it holds."""
    return worker_index(spec).data_version


def result_schema(id_field: str, id_type: pa.DataType) -> pa.Schema:
    return pa.schema(
        [
            (id_field, id_type),
            ("key", pa.dictionary(pa.int32(), pa.string())),
            ("status", pa.dictionary(pa.int8(), pa.string())),
            ("reason", pa.dictionary(pa.int32(), pa.string())),
            ("entities", pa.list_(pa.int64())),
            ("names", pa.list_(pa.string())),
            ("overlap_m2", pa.list_(pa.float64())),
            ("nearby", pa.list_(pa.int64())),
            ("site_area_m2", pa.float64()),
            # one WKB per site, repeated on each of its keys: dictionary-encoded, it costs one copy
            ("geometry", pa.dictionary(pa.int32(), pa.binary())),
        ]
    )


def check_sites(
    index: ConstraintIndex,
    ids: np.ndarray,
    rows: np.ndarray,
    geometry: Iterable,
    *,
    id_field: str,
    id_type: pa.DataType,
    keys: list[str] | None = None,
    tolerance: Tolerance = Tolerance(),
) -> tuple[pa.Table, list[tuple[int, object, str]]]:
    """Check each site as the service does; one row per site and key, and the sites refused.

    Every site goes through ``parse_site`` with the index's limits, and its answers are the index's
    (``ConstraintIndex.evidence`` and ``answers``, what ``check`` answers with) at ``tolerance``: the
    statuses, entities and overlaps are the service's, copied, not recomputed.
    """
    with _collector_paused():
        return _check_sites(index, ids, rows, geometry, id_field=id_field, id_type=id_type, keys=keys, tolerance=tolerance)


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off for a partition's checks, and back as it was after.

    A partition makes hundreds of thousands of objects (sites, matches, answer dicts) that live until
    its table is built, so the collector, started every 700 allocations, walks them again and again
    and finds nothing to free. Paused, a check costs ~20 us a site less at scale 1 (of ~170); what a
    partition leaves behind is collected once the collector runs again.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check_sites(
    index: ConstraintIndex,
    ids: np.ndarray,
    rows: np.ndarray,
    geometry: Iterable,
    *,
    id_field: str,
    id_type: pa.DataType,
    keys: list[str] | None,
    tolerance: Tolerance,
) -> tuple[pa.Table, list[tuple[int, object, str]]]:
    from .site import parse_sites

    errors: list[tuple[int, object, str]] = []
    geometry = np.asarray(geometry, dtype=object)
    try:
        parsed = parse_sites(geometry, index.limits)
    except (ValueError, shapely.errors.GEOSException):  # one geometry spoils the array: read them one by one
        parsed = [_parse_one(geom, index) for geom in geometry]
    good = [i for i, site in enumerate(parsed) if not isinstance(site, Exception)]
    snapshot = index.snapshot
    if snapshot is None and good:
        raise CacheError("the index is not loaded yet")
    # one tree query and one call of each GEOS operation for the whole partition; answers per site
    try:
        found = index.match_many([parsed[i] for i in good], tolerance, snapshot)
    except (ValueError, shapely.errors.GEOSException):
        found = [None] * len(good)  # each site matched alone below, so the one at fault is named
    matched = dict(zip(good, found, strict=True))
    out = _Rows(index, snapshot, keys)
    checked: list[int] = []  # positions of the sites checked
    areas: list[float] = []
    for i, site in enumerate(parsed):
        try:
            if isinstance(site, Exception):
                raise site
            matches = matched[i]
            if matches is None:
                matches = index.match(site, tolerance, snapshot)
            site_rows = out.rows_of(index.evidence(site, snapshot, matches))
        except SiteError as err:
            errors.append((int(rows[i]), _plain(ids[i]), err.message))
            continue
        except (ValueError, shapely.errors.GEOSException) as err:  # a geometry GEOS or OSTN15 cannot take
            errors.append((int(rows[i]), _plain(ids[i]), f"the geometry cannot be checked: {err}"))
            continue
        checked.append(i)
        areas.append(site.reported_area_m2)
        out.add(site_rows)
    geoms = np.empty(len(checked), dtype=object)
    geoms[:] = [parsed[i].geometry for i in checked]
    ids_checked = pa.array([_plain(ids[i]) for i in checked], type=id_type)
    return out.table(id_field, ids_checked, np.asarray(areas, dtype=np.float64), shapely.to_wkb(geoms)), errors


class _Rows:
    """A partition's output rows, gathered as columns.

    A row is a key's answer for a site. The distinct answers are kept once each, and each output row
    names its distinct answer: a key's stock answer (the site meets none of its datasets) is one
    object shared by all the sites that have it (``ConstraintIndex.answers``), so it is one row for
    all of them, and so are all the rows of sites with the same evidence that meets nothing. The
    columns are made at the end, from the distinct answers, and taken per output row.
    """

    def __init__(self, index: ConstraintIndex, snapshot, keys: list[str] | None):
        self.index, self.snapshot = index, snapshot
        self.keys = None if keys is None else set(keys)
        self.answers: list[dict] = []  # the distinct answers (kept alive, so their ids stay theirs)
        self.stock: dict[int, int] = {}  # id of a stock answer -> its row
        self.held: list[dict] = []  # the stock answers in ``stock``
        self.empty: dict[tuple, int] = {}  # (key, status, reason) -> the row of answers that list no entity
        self.meeting_nothing: dict[tuple, list[int]] = {}  # (uncovered, outside) -> the rows of a site that meets nothing
        self.which = array("q")  # per output row: its distinct answer
        self.per_site: list[int] = []  # output rows of each site

    def rows_of(self, evidence: Evidence) -> list[int]:
        """The distinct answers of a site's keys (those asked for), in answer order."""
        if evidence.meets_nothing:  # then its answers are decided by these two alone
            memo = (tuple(evidence.uncovered.items()), evidence.outside)
            found = self.meeting_nothing.get(memo)
            if found is None:
                found = self.meeting_nothing[memo] = self._rows(self.index.answers(evidence, self.snapshot))
            return found
        return self._rows(self.index.answers(evidence, self.snapshot))

    def add(self, site_rows: list[int]) -> None:
        self.which.extend(site_rows)
        self.per_site.append(len(site_rows))

    def _rows(self, answers: dict[str, dict]) -> list[int]:
        keys, stock = self.keys, self.stock
        if keys is not None:
            answers = {key: answer for key, answer in answers.items() if key in keys}
        # most of a site's keys have their stock answer, already a row: look them all up at once
        out = [stock.get(id(answer)) for answer in answers.values()]
        if None in out:
            for n, (key, answer) in enumerate(answers.items()):
                if out[n] is None:
                    out[n] = stock.get(id(answer))  # a row made for an earlier key of this site
                    if out[n] is None:
                        out[n] = self._row(key, answer)
        return out

    def _row(self, key: str, answer: dict) -> int:
        """A new distinct answer's row; one that lists no entity is the row of any other like it."""
        empty = None
        row = None
        if not answer["entities"] and not answer.get("nearby"):
            empty = (answer["key"], answer["status"], answer.get("reason") if answer["status"] == "unknown" else None)
            row = self.empty.get(empty)
        if row is None:
            row = len(self.answers)
            self.answers.append(answer)
            if empty is not None:
                self.empty[empty] = row
        if self.index.stock_answer(key, self.snapshot) is answer:
            self.stock[id(answer)] = row
            self.held.append(answer)  # its id is its own while it lives
        return row

    def table(self, id_field: str, ids: pa.Array, areas: np.ndarray, wkbs: np.ndarray) -> pa.Table:
        """The output rows as a table: each column made from the distinct answers, taken per output row."""
        distinct = self.answers
        which = np.frombuffer(self.which, dtype=np.int64) if len(self.which) else np.zeros(0, dtype=np.int64)
        slots = np.repeat(np.arange(len(self.per_site), dtype=np.int32), self.per_site)
        found = [a["entities"] for a in distinct]
        flat = list(chain.from_iterable(found))
        # entities, names and overlaps are lists of the same lengths: their offsets and the positions
        # of their items are worked out once, and each column takes its items with them
        found_at, found_items = _taken_lists(found, which)
        near = [a.get("nearby") or () for a in distinct]
        near_at, near_items = _taken_lists(near, which)
        status = np.fromiter((STATUSES.index(a["status"]) for a in distinct), dtype=np.int8, count=len(distinct))
        return pa.table(
            {
                id_field: ids.take(pa.array(slots)),
                "key": _encoded([a["key"] for a in distinct], which),
                "status": pa.DictionaryArray.from_arrays(pa.array(status[which]), pa.array(STATUSES)),
                "entities": pa.ListArray.from_arrays(found_at, pa.array(_entity_ids(flat)[found_items])),
                "reason": _encoded([a.get("reason") if a["status"] == "unknown" else None for a in distinct], which),
                "names": pa.ListArray.from_arrays(found_at, pa.array([e.get("name") for e in flat], type=pa.string()).take(found_items)),
                "overlap_m2": pa.ListArray.from_arrays(
                    found_at, pa.array([e.get("overlap_m2") for e in flat], type=pa.float64()).take(found_items)
                ),
                "nearby": pa.ListArray.from_arrays(near_at, pa.array(_entity_ids(list(chain.from_iterable(near)))[near_items])),
                "site_area_m2": pa.array(areas[slots], type=pa.float64()),
                "geometry": pa.DictionaryArray.from_arrays(pa.array(slots, type=pa.int32()), pa.array(wkbs, type=pa.binary())),
            },
            schema=result_schema(id_field, ids.type),
        )


def _entity_ids(entities: list[dict]) -> np.ndarray:
    return np.fromiter((e["entity"] for e in entities), dtype=np.int64, count=len(entities))


def _taken_lists(groups: list, which: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """For rows that are ``groups[which]``: their list offsets, and where each of their items lies
    in the groups laid end to end (what a list column's ``take(which)`` works out, once for several
    columns of the same lengths)."""
    lengths = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
    starts = np.zeros(len(groups) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    row_lengths = lengths[which]
    offsets = np.zeros(len(which) + 1, dtype=np.int32)
    np.cumsum(row_lengths, out=offsets[1:])
    # the k-th item of row r is item (k - offsets[r]) of group which[r]
    row_of_item = np.repeat(np.arange(len(which)), row_lengths)
    items = np.arange(offsets[-1], dtype=np.int64) + (starts[which] - offsets[:-1])[row_of_item]
    return pa.array(offsets), items


def _encoded(values: list[str | None], which: np.ndarray) -> pa.DictionaryArray:
    """``values[which]`` dictionary-encoded as ``dictionary_encode`` would (its dictionary in order of
    first appearance, a None a null), without making a string per output row first."""
    codes: dict[str | None, int] = {}
    code_of = np.fromiter((codes.setdefault(v, len(codes)) for v in values), dtype=np.int64, count=len(values))
    strings = list(codes)
    none = codes.get(None, -1)
    per_row = code_of[which]
    encoded = pa.array(per_row, mask=per_row == none if none >= 0 else None).dictionary_encode()
    return pa.DictionaryArray.from_arrays(encoded.indices, pa.array(strings, type=pa.string()).take(encoded.dictionary))


def _parse_one(geom, index: ConstraintIndex):
    """``parse_site`` with its refusal returned rather than raised."""
    from .site import parse_site

    try:
        return parse_site(geom, index.limits)
    except (SiteError, ValueError, shapely.errors.GEOSException) as err:
        return err


def _write_part(table: pa.Table, path: Path) -> None:
    """Write a part as an Arrow IPC file, atomically: one record batch, LZ4-compressed."""
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink:
        options = pa.ipc.IpcWriteOptions(compression="lz4")
        with pa.ipc.new_file(sink, table.schema, options=options) as writer:
            writer.write_table(table.combine_chunks())


@contextlib.contextmanager
def _read_part(path: Path):
    """A part's rows, read from the file mapped in memory (valid inside the ``with`` only)."""
    with pa.memory_map(str(path)) as source:
        yield pa.ipc.open_file(source).read_all()


def run_partition(task: dict) -> dict:
    """One Dask task: check a partition's sites and write its part file atomically.

    ``task`` holds the part number and path, the sites (ids, rows, WKB in EPSG:4326), the options and
    the layer data version the run expects; a worker whose cache has moved on refuses, rather than
    mixing two versions of the layers in one result.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    index = worker_index(task["spec"])
    if index.data_version != task["data_version"]:
        raise BatchRunError(
            f"the layer cache changed during the run (data version {index.data_version}, the run began on "
            f"{task['data_version']}); rerun with --resume to redo only the parts checked on older data"
        )
    geometry = shapely.from_wkb(task["wkb"])
    tolerance = Tolerance(*task["tolerance"])
    table, errors = check_sites(
        index,
        task["ids"],
        task["rows"],
        geometry,
        id_field=task["id_field"],
        id_type=task["id_type"],
        keys=task["keys"],
        tolerance=tolerance,
    )
    meta = {
        "format": PART_FORMAT,
        "run": task["run"],
        "part": task["part"],
        "data_version": index.data_version,
        "sites": len(task["rows"]),
        "errors": [[r, i, m] for r, i, m in errors],
    }
    table = table.replace_schema_metadata({b"redline": orjson.dumps(meta)})
    _write_part(table, Path(task["path"]))
    return {
        "part": task["part"],
        "sites": len(task["rows"]),
        "rows": table.num_rows,
        "errors": len(errors),
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,  # the worker's, whatever else the machine runs
        "pid": os.getpid(),
    }


def read_part_meta(path: Path) -> dict | None:
    """A finished part's metadata, or None when the file is not a complete part."""
    try:
        with pa.memory_map(str(path)) as source:
            meta = pa.ipc.open_file(source).schema.metadata or {}
        info = orjson.loads(meta[b"redline"])
    except (OSError, KeyError, ValueError, pa.ArrowInvalid):
        return None
    return info if info.get("format") == PART_FORMAT else None


# -- the run --------------------------------------------------------------------------------------


@dataclass
class BatchReport:
    out: Path
    errors_path: Path
    sites: int  # sites in the input file
    checked: int  # sites checked (rows of the output / keys)
    errors: int  # bad rows
    rows: int  # output rows
    parts: int
    skipped_parts: int  # finished parts reused by --resume
    data_version: str
    seconds: float
    check_seconds: float  # from the first task submitted to the last part written
    cluster_seconds: float  # starting or connecting to the cluster and building the workers' indexes (the sites are read meanwhile)
    finalise_seconds: float  # from the last part written to the result in place (most parts are in by then)
    task_cpu_seconds: float = 0.0  # CPU the workers spent in this run's tasks (all attempts)

    def summary(self) -> str:
        rate = self.checked / self.check_seconds if self.check_seconds > 0 else float("nan")
        return (
            f"{self.checked:,} of {self.sites:,} sites checked ({self.rows:,} rows) in {self.seconds:.1f} s "
            f"({rate:,.0f} sites/s while checking); {self.errors:,} bad rows in {self.errors_path}; "
            f"{self.skipped_parts} of {self.parts} parts reused; layers {self.data_version}; results in {self.out}"
        )


def _out_kind(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix in (".parquet", ".geoparquet"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise BatchError(f"--out {out}: give a .parquet (GeoParquet) or .csv file name")


def auto_partition_size(sites: int, workers: int | None) -> int:
    """Sites per task when not given: about four tasks a worker (eight for a cluster of unknown
    size, taken as four workers), so work spreads evenly, between 100 and ``DEFAULT_PARTITION_SIZE``.

    It depends only on the input and options, so a resumed run cuts the same partitions (it also
    reuses the size recorded by the run it resumes).
    """
    tasks = 4 * (workers or 4)
    return int(min(DEFAULT_PARTITION_SIZE, max(100, -(-sites // tasks))))


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def errors_path(out: Path) -> Path:
    return out.with_name(out.name + ".errors.csv")


def _fingerprint(sites_path: Path, *, id_field, keys, tolerance, partition_size, layer, crs) -> dict:
    stat = sites_path.stat()
    return {
        "input": str(sites_path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "id_field": id_field,
        "keys": keys,
        "tolerance": list(tolerance),
        "partition_size": partition_size,
        "layer": layer,
        "crs": None if crs is None else str(crs),
    }


def _connect(scheduler: str | None, workers: int):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except OSError as err:
            raise BatchError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        host="127.0.0.1",
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    return Client(cluster), cluster


def _progress(total: int, parts: int, enabled: bool):
    from datasets.progress import progress_bar

    return progress_bar(
        total,
        desc="checking",
        unit="site",
        unit_scale=True,
        smoothing=0.1,
        postfix=f"tasks 0/{parts}",
        enabled=enabled,
    )


@dataclass(frozen=True)
class BatchOptions:
    """How a batch runs: where the layers are, what to answer, on which cluster. ``run_batch`` takes
    one of these, or its fields as keywords."""

    cache_root: Path | str  # the layer cache folder; every worker must see the same one
    local_catalogue: Path | str | None = None
    article4_dir: Path | str | None = None
    id_field: str | None = None  # the input column naming each site; else the 1-based row number
    keys: list[str] | None = None  # answer only these catalogue keys
    tolerance: Tolerance = Tolerance()
    scheduler: str | None = None  # a Dask scheduler's address; else a local cluster of ``workers``
    workers: int = 2
    resume: bool = False  # reuse the finished parts of a failed run of the same input and options
    partition_size: int | None = None  # sites per task; by default from the input's size and the workers
    layer: str | None = None  # the input file's layer, when it has several
    crs: str | int | None = None  # the input's CRS, when the file does not say
    progress: bool = True
    on_part: Callable[[dict], None] | None = None  # told of each part as it finishes

    def index_spec(self) -> IndexSpec:
        return IndexSpec(str(Path(self.cache_root).resolve()), _str(self.local_catalogue), _str(self.article4_dir))


@dataclass(frozen=True)
class _Run:
    """One run's inputs, read and settled: what the later stages work from."""

    out: Path
    kind: str  # of output: "parquet" or "csv"
    options: BatchOptions
    spec: IndexSpec
    keys: list[str] | None  # checked against the catalogue, without repeats
    table: SiteTable
    fingerprint: dict  # the input and options, as recorded for --resume
    resuming: bool  # the parts on disk are an earlier run's of this same input and options
    chunks: list[np.ndarray]  # the sites' positions, partition by partition

    @property
    def parts(self) -> Path:
        return parts_dir(self.out)

    @property
    def token(self) -> str:
        """Names this run's parts: a part made from other inputs or options is never taken for one of them."""
        return hashlib.sha256(json.dumps(self.fingerprint).encode()).hexdigest()[:12]

    @property
    def id_type(self) -> pa.DataType:
        return pa.int64() if self.table.ids.dtype.kind in "iu" else pa.string()

    def part_path(self, n: int) -> Path:
        return self.parts / f"part-{n:05d}.arrow"


@dataclass(frozen=True)
class _Checked:
    """What running the tasks on the cluster came to."""

    data_version: str  # the layer data every part was checked on
    skipped: int  # finished parts reused from the run resumed
    cluster_seconds: float
    check_seconds: float
    task_cpu_seconds: float
    finalise_seconds: float
    errors: int  # bad rows, in the errors file
    rows: int  # in the output file


def run_batch(sites: Path | str, out: Path | str, options: BatchOptions | None = None, **fields) -> BatchReport:
    """Check every site of ``sites`` against every catalogue key (or ``keys``) and write ``out``.

    ``options`` is a :class:`BatchOptions`; its fields may be given as keywords instead (or as well,
    to override some): ``run_batch("titles.gpkg", "out.parquet", cache_root=".redline", workers=4)``.

    Raises
    ------
    BatchError
        Bad input or options (nothing was written; a cluster started for the run is closed again).
    BatchRunError
        The run failed part way; finished parts are kept and ``resume=True`` reuses them.
    """
    started = time.perf_counter()
    options = BatchOptions(**fields) if options is None else replace(options, **fields)
    sites, out = Path(sites), Path(out)
    kind = _check_output_and_options(out, options)
    spec = options.index_spec()
    keys = _check_keys(spec, options.keys)
    _check_sites_path(sites)
    # The workers build their indexes (the longest fixed cost) while this process reads the sites.
    with _Cluster(options, spec) as cluster:
        table = read_sites(sites, id_field=options.id_field, layer=options.layer, crs=options.crs)
        run = _plan(sites, out, kind, options, spec, keys, table)
        _start_parts(run)
        checked = cluster.check(run)
    errors, rows = checked.errors, checked.rows
    return BatchReport(
        out=out,
        errors_path=errors_path(out),
        sites=len(table) + len(table.errors),
        checked=len(table) + len(table.errors) - errors,
        errors=errors,
        rows=rows,
        parts=len(run.chunks),
        skipped_parts=checked.skipped,
        data_version=checked.data_version,
        seconds=time.perf_counter() - started,
        check_seconds=checked.check_seconds,
        task_cpu_seconds=checked.task_cpu_seconds,
        cluster_seconds=checked.cluster_seconds,
        finalise_seconds=checked.finalise_seconds,
    )


def _check_output_and_options(out: Path, options: BatchOptions) -> str:
    """Refuse an output path or options the run cannot use, before anything is read; the output's kind."""
    kind = _out_kind(out)
    if out.is_dir():
        raise BatchError(f"--out {out} is a folder; give a file name")
    if not out.parent.is_dir():
        raise BatchError(f"--out {out}: the folder {out.parent} does not exist")
    if options.workers < 1:
        raise BatchError("--workers must be at least 1")
    if options.scheduler is not None and "://" not in options.scheduler:
        raise BatchError(f"--scheduler {options.scheduler!r}: give an address such as tcp://HOST:8786")
    if options.partition_size is not None and options.partition_size < 1:
        raise BatchError("--partition-size must be at least 1")
    return kind


def _plan(sites: Path, out: Path, kind: str, options: BatchOptions, spec: IndexSpec, keys: list[str] | None, table: SiteTable) -> _Run:
    """Fingerprint the input and options, hold a resumed run to the ones it began with, and cut the
    sites into partitions.

    A resumed run uses the partition size its first run recorded, so it cuts the same partitions.
    Nothing is written yet: a refused resume leaves the earlier run's parts as they were.
    """
    previous = _previous_fingerprint(out) if options.resume else None
    partition_size = options.partition_size
    if partition_size is None:
        partition_size = (previous or {}).get("partition_size") or auto_partition_size(
            len(table), None if options.scheduler else options.workers
        )
    fingerprint = _fingerprint(
        sites,
        id_field=options.id_field,
        keys=keys,
        tolerance=(options.tolerance.m2, options.tolerance.pct),
        partition_size=partition_size,
        layer=options.layer,
        crs=options.crs,
    )
    if previous is not None and previous != fingerprint:
        changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
        raise BatchError(
            f"--resume: the parts in {parts_dir(out)} were made from a different input or options ({', '.join(changed)} changed); "
            "run again without --resume to start afresh"
        )
    chunks = partition(table.geometry, partition_size)
    return _Run(out, kind, options, spec, keys, table, fingerprint, previous is not None, chunks)


def _previous_fingerprint(out: Path) -> dict | None:
    """What the run being resumed recorded of its input and options; None when there is none to read."""
    run_file = parts_dir(out) / "run.json"
    if run_file.exists():
        with contextlib.suppress(ValueError, OSError):
            return json.loads(run_file.read_text())
    return None


def _start_parts(run: _Run) -> None:
    """Make way for this run's parts: old results go, old parts too unless they are being resumed."""
    from datasets.cache import atomic_write_bytes

    # whatever was there is about to be replaced: an old result must not pass for this run's
    for stale in (run.out, errors_path(run.out)):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    if not run.resuming:
        shutil.rmtree(run.parts, ignore_errors=True)
    run.parts.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run.parts / "run.json", json.dumps(run.fingerprint, indent=1).encode())


class _Cluster:
    """The run's Dask cluster, started (or reached) in the background, with every worker building its
    index as its first task, so that reading the sites in this process overlaps both.

    Used as a context manager: leaving it closes the client, and the cluster if the run started one.
    """

    def __init__(self, options: BatchOptions, spec: IndexSpec):
        from concurrent.futures import ThreadPoolExecutor

        self.options, self.spec = options, spec
        self.started = time.perf_counter()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="redline-batch-cluster")
        self._starting = self._pool.submit(self._start)

    def _start(self):
        client, cluster = _connect(self.options.scheduler, self.options.workers)
        try:
            # a task, not ``client.run``: it runs in the worker's task thread, where the partitions
            # run after it, and leaves the worker's event loop free to answer the scheduler meanwhile
            workers = list(client.scheduler_info(n_workers=-1)["workers"])
            builds = [
                client.submit(worker_data_version, self.spec, workers=[w], allow_other_workers=True, pure=False)
                for w in workers
            ]
        except BaseException:
            client.close()
            if cluster is not None:
                cluster.close()
            raise
        return client, cluster, builds

    def __enter__(self) -> _Cluster:
        return self

    def __exit__(self, *exc) -> None:
        try:
            client, cluster, builds = self._starting.result()
        except Exception:
            if exc[0] is None:
                raise
            return  # the run failed anyway; its own error says why
        finally:
            self._pool.shutdown()
        for build in builds:
            build.cancel()
        client.close()
        if cluster is not None:
            cluster.close()

    def check(self, run: _Run) -> _Checked:
        """Wait for every worker's index, then run the parts still to do."""
        client, _, builds = self._starting.result()
        data_version = _one_data_version(client.gather(builds))
        cluster_seconds = time.perf_counter() - self.started
        todo, skipped = _tasks(run, data_version)
        output = _Output(run, data_version)
        try:
            for n in sorted(set(range(len(run.chunks))) - {task["part"] for task in todo}):
                output.part_done(n)  # finished by the run resumed
            t_check = time.perf_counter()
            cpu = _run_tasks(
                client, todo, len(run.chunks), skipped, self.options.progress, self.options.on_part, output.part_done
            )
            t_final = time.perf_counter()
            errors, rows = output.finish()
        except BaseException as err:
            output.abort(err)
            raise
        done = time.perf_counter()
        return _Checked(data_version, skipped, cluster_seconds, t_final - t_check, cpu, done - t_final, errors, rows)


def _one_data_version(versions: list[str]) -> str:
    """The one layer data version every worker holds. A worker that joins later builds its own index
    lazily, and each task checks it holds this version too."""
    if len(set(versions)) != 1:
        raise BatchRunError(
            f"the workers see different layer data ({', '.join(sorted(set(versions)))}): do they share one cache folder?"
        )
    return versions[0]


def _tasks(run: _Run, data_version: str) -> tuple[list[dict], int]:
    """One task per partition not already finished (by this run's token, on this layer data), and
    how many were. A task holds its sites' geometries until :func:`_payload` encodes them as it is
    sent, so the first tasks start without waiting for every site's WKB, and the rest are encoded
    while the workers check."""
    table = run.table
    tolerance = (run.options.tolerance.m2, run.options.tolerance.pct)
    token, id_type = run.token, run.id_type
    todo, skipped = [], 0
    for n, positions in enumerate(run.chunks):
        path = run.part_path(n)
        if run.resuming:
            meta = read_part_meta(path)
            if (
                meta is not None
                and meta["run"] == token
                and meta["data_version"] == data_version
                and meta["sites"] == len(positions)
            ):
                skipped += 1
                continue
        todo.append(
            {
                "part": n,
                "path": str(path),
                "run": token,
                "spec": run.spec,
                "data_version": data_version,
                "ids": table.ids[positions],
                "rows": table.rows[positions],
                "geometry": table.geometry[positions],
                "id_field": table.id_field,
                "id_type": id_type,
                "keys": run.keys,
                "tolerance": tolerance,
            }
        )
    return todo, skipped


class _Output:
    """The run's output file, written while the parts are checked: each part is appended as soon as
    it and every part before it are finished, so when the last task ends only the parts still to
    append, the errors file and the rename are left (and the client's core, idle while the workers
    check, does the writing).

    The file is written under a temporary name and renamed into place by :meth:`finish`, after the
    errors file: a result on disk always has its errors beside it. Every part must be this run's, on
    the same layer data, or nothing is written (:meth:`abort` removes the temporary file).
    """

    def __init__(self, run: _Run, data_version: str):
        self.run, self.data_version = run, data_version
        self.errors: list[tuple[int, object, str]] = list(run.table.errors)
        self.rows = 0
        self._finished: set[int] = set()
        self._next = 0  # the first part not yet appended
        self._file = atomic_path(run.out)
        self._writer = (_ParquetOutput if run.kind == "parquet" else _CsvOutput)(
            self._file.__enter__(), result_schema(run.table.id_field, run.id_type)
        )

    def part_done(self, n: int) -> None:
        """Part ``n`` is on disk: append it, and any after it that were waiting for it."""
        self._finished.add(n)
        while self._next in self._finished:
            self._append(self._next)
            self._finished.discard(self._next)
            self._next += 1

    def _append(self, n: int) -> None:
        path = self.run.part_path(n)
        meta = read_part_meta(path)
        if meta is None or meta["run"] != self.run.token:
            raise BatchRunError(f"part {n} is missing after the run; rerun with --resume")
        if meta["data_version"] != self.data_version:
            raise BatchRunError("parts were checked on different layer data; rerun with --resume to redo the old ones")
        self.errors.extend(tuple(e) for e in meta["errors"])
        with _read_part(path) as table:
            self.rows += self._writer.write(table)

    def finish(self) -> tuple[int, int]:
        """Append what is left, write the errors file, put the result in place; the bad rows and
        output rows there are."""
        for n in range(self._next, len(self.run.chunks)):
            self._append(n)
        self._next = len(self.run.chunks)
        self.errors.sort(key=lambda e: e[0])
        _write_errors(errors_path(self.run.out), self.run.table.id_field, self.errors)
        self._writer.close()
        self._file.__exit__(None, None, None)
        shutil.rmtree(self.run.parts, ignore_errors=True)
        return len(self.errors), self.rows

    def abort(self, err: BaseException) -> None:
        """Leave no output file behind: the run failed with ``err``."""
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(BaseException):
            self._file.__exit__(type(err), err, err.__traceback__)  # removes the temporary file


def _str(value) -> str | None:
    return None if value is None else str(Path(value).resolve())


def _check_keys(spec: IndexSpec, keys: list[str] | None) -> list[str] | None:
    if not keys:
        return None
    from datasets.catalogue import load_catalogue

    catalogue = load_catalogue(spec.local_catalogue, spec.article4_dir)
    known = [c.key for c in catalogue.constraints] + [r.key for r in catalogue.article4_rules()]
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise BatchError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; the catalogue's keys are: {', '.join(known)}"
        )
    return list(dict.fromkeys(keys))


TASK_ATTEMPTS = 3


def _run_tasks(client, todo: list[dict], parts: int, skipped: int, progress: bool, on_part, part_done) -> float:
    """Submit the partitions, a few ahead of the workers, and follow them to the end; the workers'
    CPU seconds in them. ``part_done(n)`` is told of each part written, before ``on_part``.

    A bounded window keeps the scheduler's memory to a few partitions of WKB however big the input.
    Dask reruns a task lost with a dead worker; a result lost *after* its task finished (the worker
    died before the client fetched it) can surface here as an error instead, so each partition is
    resubmitted up to ``TASK_ATTEMPTS`` times. Parts are written atomically, so a rerun is harmless.
    """
    from dask.distributed import as_completed

    workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    window = 2 * workers + 2
    pending = iter(todo)
    futures = as_completed()
    tasks: dict[str, tuple[dict, int]] = {}

    def submit(task: dict, attempt: int = 1) -> None:
        key = f"redline-batch-{task['run']}-{task['part']:05d}-{attempt}"
        tasks[key] = (task, attempt)
        futures.add(client.submit(run_partition, _payload(task), key=key, pure=False, retries=0))

    for submitted, task in enumerate(pending, start=1):
        submit(task)
        if submitted >= window:
            break
    done = skipped
    cpu = 0.0
    total_sites = sum(len(t["rows"]) for t in todo)
    with _progress(total_sites, parts, progress) as bar:
        bar.set_postfix_str(f"tasks {done}/{parts}")
        try:
            for future in futures:
                task, attempt = tasks.pop(future.key)
                try:
                    result = future.result()
                except BatchRunError:
                    raise
                except Exception:
                    if attempt >= TASK_ATTEMPTS:
                        raise
                    log.warning("partition %s failed on attempt %d; running it again", task["part"], attempt, exc_info=True)
                    submit(task, attempt + 1)
                    continue
                done += 1
                cpu += result["cpu_seconds"]
                part_done(result["part"])
                bar.update(result["sites"])
                bar.set_postfix_str(f"tasks {done}/{parts}")
                if on_part is not None:
                    on_part(result)
                task = next(pending, None)
                if task is not None:
                    submit(task)
        except Exception as err:
            for future in list(futures.futures):
                future.cancel()
            if isinstance(err, BatchRunError):
                raise
            raise BatchRunError(
                f"a batch task failed: {type(err).__name__}: {err}; finished parts are kept, rerun with --resume"
            ) from err
    return cpu


def _payload(task: dict) -> dict:
    """What is sent for a task: its sites as WKB (a shapely geometry would be pickled one by one)."""
    payload = {name: value for name, value in task.items() if name != "geometry"}
    payload["wkb"] = shapely.to_wkb(task["geometry"]) if len(task["geometry"]) else np.array([], dtype=object)
    return payload


def _write_errors(path: Path, id_field: str, errors: list[tuple[int, object, str]]) -> None:
    from datasets.cache import atomic_write_bytes

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if id_field == "row":  # no --id-field: the row number is the id, once
        writer.writerow(["row", "reason"])
        writer.writerows((row, reason) for row, _, reason in errors)
    else:
        writer.writerow(["row", id_field, "reason"])
        writer.writerows(errors)
    atomic_write_bytes(path, buffer.getvalue().encode())


def _geo_metadata() -> dict:
    from pyproj import CRS

    return {
        "version": "1.0.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": ["Polygon", "MultiPolygon", "Point"],
                "crs": CRS.from_epsg(4326).to_json_dict(),
            }
        },
    }


class _ParquetOutput:
    """GeoParquet, a part at a time."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.schema = schema
        # dictionary columns are written as such (one copy of each site's WKB per row group) but
        # read back as plain values: readers see ordinary GeoParquet
        self.writer = pq.ParquetWriter(path, schema, compression="zstd", store_schema=False)

    def write(self, table: pa.Table) -> int:
        self.writer.write_table(table.replace_schema_metadata(None).cast(self.schema))
        return table.num_rows

    def close(self) -> None:
        if self.writer.is_open:
            self.writer.add_key_value_metadata({"geo": json.dumps(_geo_metadata())})
            self.writer.close()


class _CsvOutput:
    """CSV, a part at a time: lists as JSON arrays, no geometry (the input file has it)."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.id_field = schema.field(0).name
        self.handle = open(path, "wb")  # noqa: SIM115 - closed by close(), after the last part
        self.header = True

    def write(self, table: pa.Table) -> int:
        flat = _csv_table(table, self.id_field)
        pacsv.write_csv(flat, self.handle, write_options=pacsv.WriteOptions(include_header=self.header))
        self.header = False
        return flat.num_rows

    def close(self) -> None:
        if self.handle.closed:
            return
        if self.header:  # no parts at all: still a CSV with its header
            names = [self.id_field, "key", "status", "reason", *LIST_COLUMNS, "site_area_m2"]
            self.handle.write((",".join(names) + "\n").encode())
        self.handle.close()


def _csv_table(table: pa.Table, id_field: str) -> pa.Table:
    """A part's rows as the CSV has them: plain strings, lists as JSON arrays, no geometry."""
    return pa.table(
        {
            id_field: table.column(id_field),
            "key": table.column("key").cast(pa.string()),
            "status": table.column("status").cast(pa.string()),
            "reason": table.column("reason").cast(pa.string()),
            **{
                name: pa.array([orjson.dumps(v).decode() for v in table.column(name).to_pylist()], type=pa.string())
                for name in LIST_COLUMNS
            },
            "site_area_m2": table.column("site_area_m2"),
        }
    )


__all__ = [
    "BatchError",
    "BatchOptions",
    "BatchReport",
    "BatchRunError",
    "IndexSpec",
    "SiteTable",
    "check_sites",
    "hilbert_distance",
    "partition",
    "read_sites",
    "run_batch",
    "run_partition",
    "worker_index",
]
