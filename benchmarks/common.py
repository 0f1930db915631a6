"""Helpers shared by the benchmarks: timing, percentiles, memory and the one-line JSON report.

Every benchmark prints exactly one JSON line on stdout; progress goes to stderr so that
``python -m benchmarks.X | jq`` works.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

#: Where benchmark artefacts (generated layers, sites) are kept between runs.
#: ``REDLINE_BENCH_DIR`` overrides it, e.g. to put them on a bigger disk.
BENCH_DIR = Path(os.environ.get("REDLINE_BENCH_DIR", ".redline-bench"))


def log(message: str) -> None:
    """Print a progress line on stderr (stdout is reserved for the JSON result)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(result: dict) -> None:
    """Print the benchmark's single JSON result line on stdout."""
    print(json.dumps(result, separators=(", ", ": ")), flush=True)


def rss_mb() -> float:
    """Current resident set size of this process in MiB (``VmRSS``), peak RSS where /proc is absent."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def percentile(values, q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linear interpolation; NaN when empty."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return float("nan")
    return float(np.percentile(array, q))


def summarise_us(durations_ns) -> dict[str, float]:
    """p50, p99, max and mean of durations given in nanoseconds, returned in microseconds."""
    us = np.asarray(durations_ns, dtype=float) / 1e3
    return {
        "p50": round(percentile(us, 50), 1),
        "p99": round(percentile(us, 99), 1),
        "max": round(float(us.max()), 1) if us.size else float("nan"),
        "mean": round(float(us.mean()), 1) if us.size else float("nan"),
    }


@contextmanager
def stopwatch() -> Iterator[dict]:
    """``with stopwatch() as t: ...`` then ``t["s"]`` holds the elapsed wall seconds."""
    timing: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield timing
    finally:
        timing["s"] = time.perf_counter() - start


def scale_tag(scale: float) -> str:
    """A filesystem-safe, exact tag for a scale (``0.1`` -> ``0.1``, ``1`` -> ``1``)."""
    return repr(float(scale)).rstrip("0").rstrip(".").replace(".", "p")
