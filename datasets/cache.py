"""The on-disk layer cache: one GeoParquet file per dataset and a manifest that says which is current.

Layout under the data folder (``REDLINE_DATA_DIR``, default ``datasets.data_dir.default_data_dir()``)::

    manifest.json                       which file is current for each dataset, and where it came from
    layers/{dataset}.{version}.parquet  GeoParquet, EPSG:4326, the platform's entity fields
    derived/{dataset}.{version}.*       load-time work the index persists (reprojected, subdivided pieces)
    derived/all-layers.{key}.*          what the index derives from all layers together (the pieces' rank),
                                        keyed by their versions; the newest few are kept

Why versioned file names: a new copy is written beside the old one under a name nobody reads yet,
fsynced, and only then named in the manifest (itself replaced by an atomic rename). A process killed
at any moment leaves the manifest pointing at a complete file, and readers holding the old version
keep a readable file until the next write sweeps it away.

Usage::

    cache = LayerCache("/tmp/redline-doctest")
    cache.write("conservation-area", frame, source={"type": "local", "path": "ca.gpkg"})
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from shapely.geometry.base import BaseGeometry

MANIFEST = "manifest.json"


BASE_COLUMNS = [
    "entity",
    "name",
    "reference",
    "dataset",
    "organisation-entity",
    "entry-date",
    "start-date",
    "end-date",
]


class CacheError(RuntimeError):
    """The cache cannot be read or written (missing dataset, corrupt file)."""


# A dataset name becomes part of file names: no slashes, dots or leading dashes (platform names are kebab-case).
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


def now_iso(at: float | None = None) -> str:
    """UTC now (or the Unix time ``at``) as ``2026-11-27T12:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; on success it is fsynced and renamed over ``path``.

    Readers see the old content or the new, never a part; on failure (or a kill) the temporary file
    is removed (or left as ``.NAME.PID.*.tmp`` for a sweep: :func:`sweep_temporary`), and ``path`` is
    untouched.

    Usage::

        with atomic_path(Path("/tmp/answer.parquet")) as tmp:
            table.to_parquet(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid in the name: a sweep removes the file as soon as that process is gone.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


ABANDONED_AFTER_S = 3600  # a temporary file whose writer cannot be told (no pid in its name, or pid reused)


def sweep_temporary(folder: Path, pattern: str = ".*.tmp") -> int:
    """Remove temporary files of :func:`atomic_path` writes whose process has died; returns how many.

    A file whose writer is alive is kept (it is being written); one without a pid in its name, or whose
    pid is now some other live process, goes once it is ``ABANDONED_AFTER_S`` old.
    """
    removed = 0
    cutoff = time.time() - ABANDONED_AFTER_S
    for stray in folder.glob(pattern):
        parts = stray.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        with contextlib.suppress(FileNotFoundError):
            dead = pid is not None and pid != os.getpid() and not process_alive(pid)
            if dead or stray.stat().st_mtime < cutoff:
                stray.unlink()
                removed += 1
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old content or the new, never a part."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def normalise_frame(frame: gpd.GeoDataFrame, dataset: str) -> gpd.GeoDataFrame:
    """Platform columns first, as the platform names them; every attribute a string ('' for none)."""
    frame = frame.copy()
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        raise CacheError(f"{dataset}: the cache holds EPSG:4326 only, got {frame.crs}")
    frame = frame.set_crs(4326, allow_override=True)
    frame["dataset"] = dataset
    for column in BASE_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    frame["entity"] = pd.to_numeric(frame["entity"], errors="raise").astype("int64")
    extra = [c for c in frame.columns if c not in BASE_COLUMNS and c != frame.geometry.name]
    for column in BASE_COLUMNS[1:] + extra:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
    frame = frame.rename_geometry("geometry") if frame.geometry.name != "geometry" else frame
    return frame[BASE_COLUMNS + extra + ["geometry"]]


class LayerCache:
    """Constraint layers kept on disk, one atomic GeoParquet file per dataset."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.layers_dir = self.root / "layers"
        self.derived_dir = self.root / "derived"
        self.manifest_path = self.root / MANIFEST

    # -- manifest -------------------------------------------------------------------------------

    def _ensure(self) -> None:
        self.layers_dir.mkdir(parents=True, exist_ok=True)
        self.derived_dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise manifest read-modify-write across processes (sync jobs, replicas)."""
        self._ensure()
        with open(self.root / ".manifest.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def manifest(self) -> dict[str, dict]:
        """Every dataset's manifest entry, keyed by dataset name."""
        try:
            raw = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as err:  # only a hand edit can do this: writes are atomic
            raise CacheError(f"{self.manifest_path} is not valid JSON ({err}); restore it or delete the folder") from None
        return raw.get("datasets", {})

    def generation(self) -> str:
        """Changes whenever the manifest does; cheap enough to poll."""
        try:
            stat = self.manifest_path.stat()
        except FileNotFoundError:
            return "empty"
        return f"{stat.st_mtime_ns:x}-{stat.st_size:x}-{stat.st_ino:x}"

    def _write_manifest(self, datasets: dict[str, dict]) -> None:
        body = {"format": 1, "written_at": now_iso(), "datasets": dict(sorted(datasets.items()))}
        atomic_write_bytes(self.manifest_path, json.dumps(body, indent=1, sort_keys=False).encode())

    def entry(self, dataset: str) -> dict | None:
        return self.manifest().get(dataset)

    def datasets(self) -> list[str]:
        """Datasets with a good copy on disk."""
        return [name for name, entry in self.manifest().items() if entry.get("file")]

    def update_entry(self, dataset: str, **fields) -> dict:
        with self._locked():
            manifest = self.manifest()
            entry = manifest.setdefault(dataset, {"dataset": dataset})
            entry.update(fields)
            self._write_manifest(manifest)
            return entry

    def record_failure(self, dataset: str, message: str) -> dict:
        """Note a failed refresh; the last good copy stays current."""
        return self.update_entry(dataset, last_error={"at": now_iso(), "message": message})

    # -- layers ---------------------------------------------------------------------------------

    def path(self, dataset: str) -> Path:
        entry = self.entry(dataset)
        if not entry or not entry.get("file"):
            raise CacheError(f"dataset {dataset!r} is not in the cache; load or sync it first")
        return self.layers_dir / entry["file"]

    def read(self, dataset: str, columns: list[str] | None = None) -> gpd.GeoDataFrame:
        return self._read_with(gpd.read_parquet, dataset, columns)

    def read_table(self, dataset: str, columns: list[str] | None = None) -> pa.Table:
        """The cached copy as an Arrow table: attribute columns as strings, ``geometry`` as WKB."""
        return self._read_with(pq.read_table, dataset, columns)

    def read_batches(self, dataset: str, columns: list[str], rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The cached copy's ``columns``, ``rows`` rows at a time, decoded as the file is read (a buffered
        stream): a column half a gigabyte big is never held whole, nor with its compressed pages."""
        parquet = self._read_with(lambda path, columns: pq.ParquetFile(path, buffer_size=8 << 20, pre_buffer=False), dataset, None)
        return parquet.iter_batches(batch_size=rows, columns=columns)

    def read_schema(self, dataset: str) -> pa.Schema:
        """The cached copy's columns and their types, read without reading the data."""
        return self._read_with(lambda path, columns: pq.read_schema(path), dataset, None)

    def _read_with(self, reader, dataset: str, columns: list[str] | None):
        path = self.path(dataset)
        try:
            return reader(path, columns=columns)
        except FileNotFoundError:
            raise CacheError(f"{path} named by the manifest is missing") from None

    def write(
        self,
        dataset: str,
        frame: gpd.GeoDataFrame,
        *,
        source: dict,
        etag: str | None = None,
        last_modified: str | None = None,
        metadata: dict | None = None,
        coverage: BaseGeometry | None = None,
        coverage_note: str | None = None,
    ) -> dict:
        """Make ``frame`` the current copy of ``dataset``, atomically. Returns the manifest entry.

        ``coverage`` (EPSG:4326) is the area the copy is complete for: a council's district, or the
        region of an extract. Outside it a check cannot say "not", so it says "unknown". ``None``
        means the whole of England, as for the platform's national datasets. ``coverage_note`` says in
        words what the coverage is and where it came from (shown by ``datasets list`` and in answers).
        """
        if not DATASET_NAME.fullmatch(dataset):
            raise CacheError(f"{dataset!r} is not a usable dataset name: use letters, digits and dashes, e.g. conservation-area")
        self._ensure()
        frame = normalise_frame(frame, dataset)
        version = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        final = self.layers_dir / f"{dataset}.{version}.parquet"
        with atomic_path(final) as tmp:
            frame.to_parquet(tmp, index=False, compression="zstd", write_covering_bbox=True)
        if coverage is not None:
            atomic_write_bytes(self.layers_dir / f"{dataset}.{version}.coverage.wkb", shapely.to_wkb(coverage))
        bounds = [float(v) for v in frame.total_bounds] if len(frame) else None
        entry_dates = frame["entry-date"][frame["entry-date"] != ""]
        with self._locked():
            if not final.exists():  # a concurrent write of the same dataset finished first and swept it
                raise CacheError(f"a concurrent write of {dataset} replaced this one before it was recorded; run it again")
            manifest = self.manifest()
            previous = manifest.get(dataset, {})
            entry = {
                "dataset": dataset,
                "file": final.name,
                "version": version,
                "source": source,
                "features": int(len(frame)),
                "bounds": bounds,
                "loaded_at": now_iso(),
                "etag": etag,
                "last_modified": last_modified,
                "entry_date": str(entry_dates.max()) if len(entry_dates) else None,
                "metadata": metadata if metadata is not None else previous.get("metadata"),
                "last_error": None,
                "coverage": f"{dataset}.{version}.coverage.wkb" if coverage is not None else None,
                "coverage_note": coverage_note,
            }
            manifest[dataset] = entry
            self._write_manifest(manifest)
            self._sweep(dataset, current=final, previous=previous.get("file"))
        return entry

    def remove(self, dataset: str) -> None:
        with self._locked():
            manifest = self.manifest()
            if manifest.pop(dataset, None) is not None:
                self._write_manifest(manifest)
            self._sweep(dataset, current=None, previous=None)

    def _sweep(self, dataset: str, current: Path | None, previous: str | None) -> None:
        """Delete superseded copies (and what was derived from them). Called under the manifest lock.

        Kept: the current copy, the one the previous manifest named (a reader that opened it still finds
        its file), and anything newer than the current copy (a concurrent write not yet recorded). So an
        orphan left by a write killed between its rename and its manifest update goes at the next write,
        and never the copy a reader may hold.
        """
        newest = current.stat().st_mtime_ns if current is not None else None
        keep = {current.name if current is not None else None, previous}
        for old in self.layers_dir.glob(f"{dataset}.*.parquet"):
            if old.name.rsplit(".", 2)[0] != dataset or old.name in keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                if newest is not None and old.stat().st_mtime_ns > newest:
                    continue
                version = old.name[len(dataset) + 1 : -len(".parquet")]
                old.unlink()
                with contextlib.suppress(FileNotFoundError):
                    (self.layers_dir / f"{dataset}.{version}.coverage.wkb").unlink()
                for derived in self.derived_dir.glob(f"{dataset}.{version}.*"):
                    with contextlib.suppress(FileNotFoundError):
                        derived.unlink()
        # temporary files of writes killed part way, of any dataset: a load killed at night goes at the next
        for folder in (self.root, self.layers_dir, self.derived_dir):
            sweep_temporary(folder)

    def coverage(self, dataset: str, entry: dict | None = None) -> BaseGeometry | None:
        """The area a dataset's copy is complete for (EPSG:4326), or ``None`` for all of England."""
        entry = entry if entry is not None else self.entry(dataset)
        if not entry or not entry.get("coverage"):
            return None
        try:
            return shapely.from_wkb((self.layers_dir / entry["coverage"]).read_bytes())
        except FileNotFoundError:
            raise CacheError(f"the coverage file of {dataset} named by the manifest is missing") from None

    def derived_path(self, dataset: str, version: str, suffix: str) -> Path:
        """Where the index persists what it derived from one version of one dataset."""
        self._ensure()
        return self.derived_dir / f"{dataset}.{version}.{suffix}"
