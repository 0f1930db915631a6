"""Keeping cached layers in step with the Planning Data Platform, and never losing the last good copy.

One sync of one dataset:

1. ``/dataset/{name}.json`` metadata (licence, attribution, entity count), kept in the manifest so
   answers carry attribution without a call per request; a failure here is noted, not fatal.
2. A conditional GET of the bulk file (``If-None-Match`` / ``If-Modified-Since`` from the manifest).
   304: nothing is downloaded or rebuilt; the check time is recorded (the copy is confirmed current).
3. 200: the body streams to a temporary file beside the cache (progress bar on a terminal), is parsed
   (:mod:`datasets.flatten`) and checked for plausibility unless forced: not empty, its rows within
   ``count_tolerance`` of the platform's own published entity count for the dataset (a file cut at a
   row boundary parses cleanly; only the count shows it), and not below ``min_fraction`` of the cached
   copy's features (a half-built nightly file must not wipe a layer). The download itself has an
   overall deadline (``PlatformClient(download_deadline=...)``), so a server that drips bytes cannot
   hold the sync forever.
4. :meth:`LayerCache.write` swaps it in atomically (new file, fsync, manifest rename last).

Any failure leaves the previous copy current and records ``last_error`` in its manifest entry. A copy
not confirmed for ``stale_after_hours`` is marked ``stale`` so answers built on it can say so.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .cache import CacheError, LayerCache, now_iso, process_alive
from .flatten import PlatformFileError, read_platform_file
from .pdp import Download, NotModified, PlatformClient, PlatformError, ProgressFactory, entity_count

log = logging.getLogger("redline.sync")

UPDATED, NOT_MODIFIED, FAILED, REFUSED = "updated", "not-modified", "failed", "refused"
SWAP_HOOK_ENV = "REDLINE_SYNC_BEFORE_SWAP"  # test hook: a file to create, then pause, just before a swap


@dataclass
class SyncResult:
    """What happened to one dataset in one sync run."""

    dataset: str
    status: str  # updated | not-modified | failed | refused
    message: str
    features: int | None = None  # in the cache after the run
    previous_features: int | None = None
    bytes: int = 0
    seconds: float = 0.0
    url: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (UPDATED, NOT_MODIFIED)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def confirmed_at(entry: dict) -> datetime | None:
    """When the copy was last known to be the platform's current one (loaded, or confirmed by a 304)."""
    times = [t for t in (parse_time(entry.get("loaded_at")), parse_time(entry.get("checked_at"))) if t]
    return max(times) if times else None


def is_stale(entry: dict | None, *, stale_after_hours: float = 48.0, now: datetime | None = None) -> bool:
    """A platform copy not confirmed current for ``stale_after_hours``. Local loads are never stale:
    nobody else publishes them."""
    if not entry or not entry.get("file"):
        return False
    source = entry.get("source")
    if not (isinstance(source, dict) and source.get("type") == "platform"):
        return False
    when = confirmed_at(entry)
    now = now or datetime.now(UTC)
    return when is None or now - when > timedelta(hours=stale_after_hours)


def tqdm_progress(stream=None) -> ProgressFactory | None:
    """A byte progress bar (size, rate, time left) when ``stream`` is a terminal; None otherwise."""
    from .progress import on_terminal, progress_bar

    stream = stream or sys.stderr
    if not on_terminal(stream):
        return None

    def factory(desc: str, total: int | None):
        return progress_bar(total, desc=desc, unit="B", stream=stream, unit_scale=True, unit_divisor=1024, leave=False)

    return factory


class Syncer:
    """Sync datasets from the platform into a :class:`LayerCache`.

    Parameters
    ----------
    cache
        The layer cache to fill.
    client
        A :class:`PlatformClient` (it carries the URLs, timeouts and retry policy).
    min_fraction
        A new file with fewer than this fraction of the cached copy's features is refused unless forced.
    count_tolerance
        A new file whose rows differ from the platform's published ``entity-count`` by more than this
        fraction of it is refused unless forced (not checked when the metadata could not be fetched).
    stale_after_hours
        A copy not confirmed current for this long is marked ``stale`` in the manifest.
    on_updated
        Called with the list of datasets swapped in, once per run that swapped any (e.g. the
        service's ``ConstraintIndex.reload``). An exception there is logged, not raised: the data
        on disk is already good and the next generation poll will pick it up.
    progress
        A progress-bar factory for downloads (see :func:`tqdm_progress`).
    """

    def __init__(
        self,
        cache: LayerCache,
        client: PlatformClient,
        *,
        min_fraction: float = 0.5,
        count_tolerance: float = 0.01,
        stale_after_hours: float = 48.0,
        on_updated: Callable[[list[str]], object] | None = None,
        progress: ProgressFactory | None = None,
    ):
        if not 0.0 <= min_fraction <= 1.0:
            raise ValueError(f"min_fraction must be between 0 and 1, got {min_fraction}")
        if not 0.0 <= count_tolerance:
            raise ValueError(f"count_tolerance must not be negative, got {count_tolerance}")
        self.cache, self.client = cache, client
        self.min_fraction, self.stale_after_hours = min_fraction, stale_after_hours
        self.count_tolerance = count_tolerance
        self.on_updated, self.progress = on_updated, progress

    # -- one run ---------------------------------------------------------------------------------
    def sync(self, datasets: Iterable[str], *, force: bool = False) -> list[SyncResult]:
        """Sync each dataset in turn; one failing never stops the others."""
        self.cache.root.mkdir(parents=True, exist_ok=True)
        self._sweep_downloads()
        results = [self.sync_one(name, force=force) for name in dict.fromkeys(datasets)]
        self.mark_stale()
        updated = [r.dataset for r in results if r.status == UPDATED]
        if updated and self.on_updated is not None:
            try:
                self.on_updated(updated)
            except Exception:  # the cache is good; a failed reload must not fail the sync
                log.exception("on_updated(%s) failed", updated)
        return results

    def sync_one(self, name: str, *, force: bool = False) -> SyncResult:
        started = time.perf_counter()
        previous = self.cache.entry(name) or {}
        prev_features = previous.get("features") if previous.get("file") else None
        metadata = self._metadata(name, previous)
        source = previous.get("source") if isinstance(previous.get("source"), dict) else {}
        held = (
            {
                "url": source.get("url"),
                "etag": previous.get("etag"),
                "last_modified": previous.get("last_modified"),
            }
            if previous.get("file") and source.get("type") == "platform"
            else None
        )
        tmpdir = Path(tempfile.mkdtemp(prefix=f".sync-{os.getpid()}-", dir=self.cache.root))
        try:
            try:
                got = self.client.download(name, tmpdir, previous=held, progress=self.progress)
            except PlatformError as exc:
                return self._fail(name, FAILED, f"download failed: {exc}", prev_features, started)
            if isinstance(got, NotModified):
                fields = {"checked_at": now_iso(), "last_error": None}
                if metadata is not None:
                    fields["metadata"] = metadata
                self.cache.update_entry(name, **fields)
                return SyncResult(
                    name,
                    NOT_MODIFIED,
                    f"{name}: not modified since {got.last_modified or got.etag} (nothing downloaded)",
                    prev_features,
                    prev_features,
                    0,
                    time.perf_counter() - started,
                    got.url,
                )
            return self._swap_in(name, got, metadata, prev_features, force, started)
        except (OSError, CacheError) as exc:  # disk full, permissions: this dataset fails, the others go on
            return self._fail(name, FAILED, f"could not write the new copy: {exc}", prev_features, started)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def _swap_in(
        self, name: str, got: Download, metadata: dict | None, prev: int | None, force: bool, started: float
    ) -> SyncResult:
        try:
            report = read_platform_file(got.path, name, got.format)
        except PlatformFileError as exc:
            return self._fail(
                name, FAILED, f"{got.url} ({got.bytes} bytes) is not usable: {exc}", prev, started
            )
        n = len(report.frame)
        if n == 0:
            return self._fail(
                name, REFUSED, f"{got.url} has no usable features ({report.summary()})", prev, started
            )
        expected = entity_count(metadata) if metadata else None
        if expected is not None and not force and abs(report.rows - expected) > self.count_tolerance * expected:
            return self._fail(
                name,
                REFUSED,
                f"{got.url} has {report.rows} rows but the platform publishes {expected} entities for {name} "
                f"(more than {self.count_tolerance:.0%} apart): the file looks cut short or mid-rebuild; "
                "kept the cached copy (rerun later, or with --force to accept it)",
                prev,
                started,
            )
        if prev and not force and n < self.min_fraction * prev:
            return self._fail(
                name,
                REFUSED,
                f"{got.url} has {n} features, fewer than {self.min_fraction:.0%} of the {prev} in the cached copy; "
                "kept the cached copy (rerun with --force to accept it)",
                prev,
                started,
            )
        self._before_swap_hook(name)
        source = {"type": "platform", "url": got.url, "format": got.format, "bytes": got.bytes}
        self.cache.write(
            name,
            report.frame,
            source=source,
            etag=got.etag,
            last_modified=got.last_modified,
            metadata=metadata,
        )
        self.cache.update_entry(name, checked_at=now_iso(), stale=False, parse_report=report.summary())
        seconds = time.perf_counter() - started
        rate = got.bytes / max(got.seconds, 1e-6)
        return SyncResult(
            name,
            UPDATED,
            f"{name}: {report.summary()}; {human_bytes(got.bytes)} {got.format} at {human_bytes(rate)}/s"
            + (f" after {got.attempts} attempts" if got.attempts > 1 else ""),
            n,
            prev,
            got.bytes,
            seconds,
            got.url,
        )

    def _fail(self, name: str, status: str, message: str, prev: int | None, started: float) -> SyncResult:
        log.warning("%s: %s", name, message)
        try:
            self.cache.record_failure(name, message)
        except OSError as exc:  # the disk that refused the copy may refuse the manifest too
            log.error("%s: could not record the failure in the manifest: %s", name, exc)
        kept = (
            f"; serving the last good copy ({prev} features)"
            if prev
            else "; no copy cached, checks say unknown"
        )
        return SyncResult(
            name, status, f"{name}: {message}{kept}", prev, prev, 0, time.perf_counter() - started
        )

    def _metadata(self, name: str, previous: dict) -> dict | None:
        try:
            return self.client.dataset_metadata(name)
        except PlatformError as exc:
            log.warning("%s: metadata not refreshed (%s); keeping what the manifest has", name, exc)
            return None

    def _before_swap_hook(self, name: str) -> None:
        """Tests kill the process here (and inside the swap) to prove the cache survives it."""
        marker = os.environ.get(SWAP_HOOK_ENV)
        if marker:
            Path(marker).write_text(name)
            time.sleep(float(os.environ.get(SWAP_HOOK_ENV + "_SECONDS", "30")))

    def _sweep_downloads(self) -> None:
        """Remove temporary download folders left by syncs that were killed (their process is gone)."""
        for stale in self.cache.root.glob(".sync-*"):
            try:
                pid = int(stale.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if pid != os.getpid() and not process_alive(pid):
                shutil.rmtree(stale, ignore_errors=True)

    # -- staleness -------------------------------------------------------------------------------
    def mark_stale(self, now: datetime | None = None) -> list[str]:
        """Write each platform dataset's ``stale`` flag where it changed; returns the stale ones."""
        stale = []
        for name, entry in self.cache.manifest().items():
            flag = is_stale(entry, stale_after_hours=self.stale_after_hours, now=now)
            if flag:
                stale.append(name)
            if entry.get("file") and bool(entry.get("stale")) != flag:
                self.cache.update_entry(name, stale=flag)
        return stale

    # -- watch -----------------------------------------------------------------------------------
    def watch(
        self,
        datasets: Iterable[str],
        interval: float,
        *,
        force: bool = False,
        stop: threading.Event | None = None,
        max_runs: int | None = None,
        report: Callable[[list[SyncResult]], object] | None = None,
    ) -> int:
        """Sync, wait ``interval`` seconds, repeat until ``stop`` is set or ``max_runs`` is reached.

        Returns the number of runs. A run that raises (say, the disk is full) is logged and the loop
        goes on: a scheduler must not die on one bad night.
        """
        if interval <= 0:
            raise ValueError("the watch interval must be a positive number of seconds")
        names = list(datasets)
        stop = stop or threading.Event()
        runs = 0
        while not stop.is_set():
            try:
                results = self.sync(names, force=force)
                if report is not None:
                    report(results)
            except Exception:
                log.exception("sync run failed; trying again in %s s", interval)
            runs += 1
            if max_runs is not None and runs >= max_runs:
                break
            stop.wait(interval)
        return runs


class BackgroundSync:
    """The service's own sync scheduler (off by default): :meth:`Syncer.watch` in a daemon thread.

    Usage::

        bg = BackgroundSync(syncer, ["conservation-area"], interval=3600)
        bg.start(); ...; bg.stop()
    """

    def __init__(self, syncer: Syncer, datasets: Iterable[str], interval: float, *, force: bool = False):
        if interval <= 0:
            raise ValueError("the sync interval must be a positive number of seconds")
        self.syncer, self.datasets, self.interval, self.force = syncer, list(datasets), interval, force
        self.runs = 0
        self.last_results: list[SyncResult] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _report(self, results: list[SyncResult]) -> None:
        self.runs += 1
        self.last_results = results
        for r in results:
            (log.info if r.ok else log.warning)("%s", r.message)

    def start(self) -> BackgroundSync:
        self._thread = threading.Thread(
            target=self.syncer.watch,
            args=(self.datasets, self.interval),
            kwargs={"force": self.force, "stop": self._stop, "report": self._report},
            name="redline-sync",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the dataset being synced (a download in flight runs to its timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.syncer.client.close()


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover
