"""Benchmark of the constraints check against a naive geopandas baseline, in the same run.

    python -m benchmarks.check --scale 1 --sites 1000

1. The synthetic national layers for (scale, seed) are generated once and kept as a LayerCache
   under ``.redline-bench/`` (``REDLINE_BENCH_DIR``); so are the query sites.
2. A fresh Python process builds the index from that cache (``ConstraintIndex.from_cache``) so that
   whatever the index persists at first build (reprojected, subdivided pieces) is on disk.
3. A second fresh process measures ``load_s``: cold start from the on-disk cache to a ready index,
   imports of redline's core included. It then times ``index.check(site)`` for every site (every
   key, overlap areas included), records the resident memory, and runs the baseline: for each site,
   one geopandas ``sjoin`` per layer (layers reprojected to EPSG:27700 with OSTN15 and their spatial
   index built beforehand, untimed), plus the intersection area of every intersecting feature: the
   same entities and overlaps the check computes. The baseline runs on the first
   ``--baseline-sites`` sites or until ``--baseline-seconds`` have passed, whichever comes first.

It prints ONE JSON line::

    {"scale", "features", "load_s", "load_cpu_s", "rss_mb", "check_p50_us", "check_p99_us", "check_max_us",
     "checks_per_s", "baseline": "geopandas-sjoin", "baseline_p50_us", "speedup_p50", ...}

``speedup_p50`` compares the two on the same sites (those the baseline ran); ``baseline_agreement``
is the share of those sites where the check and the baseline found exactly the same entities
(the check's ``entities`` and ``nearby`` together against the baseline's DE-9IM intersects) with
the same overlap areas.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import emit, log, peak_rss_mb, rss_mb, summarise_us

WARMUP = 10


def sites_path(cache_root: Path, n: int, seed: int) -> Path:
    return cache_root / f"sites-n{n}-seed{seed}.wkb.txt"


def ensure_sites(cache_root: Path, n: int, seed: int) -> Path:
    """The query sites for this cache, one hex WKB polygon (EPSG:4326) a line; made on first use."""
    path = sites_path(cache_root, n, seed)
    if path.exists():
        return path
    import shapely

    from benchmarks.synth import generate_sites
    from datasets.cache import LayerCache

    cache = LayerCache(cache_root)
    layers = {name: cache.read(name) for name in cache.datasets()}
    sites = generate_sites(n, layers, seed)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text("\n".join(shapely.to_wkb(sites, hex=True).tolist()) + "\n")
    os.replace(tmp, path)
    return path


def read_sites(path: Path) -> list:
    import shapely

    return list(shapely.from_wkb([line for line in path.read_text().split() if line]))


# -- the measuring child process ------------------------------------------------------------------


def _overlaps_in(answer: dict) -> dict[int, float]:
    """Entity -> overlap m² of every entity the check met (``entities`` and ``nearby`` of all keys)."""
    found = {}
    for constraint in answer["constraints"]:
        for item in constraint["entities"] + constraint["nearby"]:
            if item.get("entity") is not None:
                found[int(item["entity"])] = float(item.get("overlap_m2") or 0.0)
    return found


def _same(check: dict[int, float], baseline: dict[int, float]) -> bool:
    """Same entities, and overlaps equal to the check's rounding (1e-3 m²) or 1e-6 relative."""
    if check.keys() != baseline.keys():
        return False
    return all(abs(check[e] - baseline[e]) <= max(2e-3, 1e-6 * baseline[e]) for e in check)


def _baseline(cache, sites, max_sites: int, budget_s: float) -> tuple[list[int], list[dict[int, float]]]:
    """The naive way: one geopandas ``sjoin`` per layer, then intersection areas, per site."""
    import geopandas as gpd
    from pyproj import Geod

    from datasets.crs import to_bng

    started = time.perf_counter()
    layers = {}
    for name in cache.datasets():
        frame = cache.read(name, columns=["entity", "geometry"])
        frame = gpd.GeoDataFrame(
            {"entity": frame["entity"].to_numpy()}, geometry=to_bng(frame.geometry.to_numpy()), crs=27700
        )
        _ = frame.sindex  # built once here, not per check: the baseline is naive, not careless
        layers[name] = frame
    log(f"baseline layers ready in {time.perf_counter() - started:.1f} s")
    geod = Geod(ellps="WGS84")
    durations, found = [], []
    budget_end = time.perf_counter() + budget_s
    for i, site in enumerate(sites[:max_sites]):
        if i >= 5 and time.perf_counter() > budget_end:
            break
        t0 = time.perf_counter_ns()
        site_bng = to_bng(site)
        site_frame = gpd.GeoDataFrame(geometry=[site_bng], crs=27700)
        abs(geod.geometry_area_perimeter(site)[0])  # the site's geodesic area, as the check gives
        overlaps: dict[int, float] = {}
        for frame in layers.values():
            # the site on the left, so that sjoin queries the layer's (prebuilt) spatial index
            joined = gpd.sjoin(site_frame, frame, how="inner", predicate="intersects")
            if len(joined):
                matched = frame.iloc[joined["index_right"].to_numpy()]
                overlap = matched.geometry.intersection(site_bng).area.to_numpy()
                overlaps.update(zip(matched["entity"].tolist(), overlap.tolist(), strict=True))
        durations.append(time.perf_counter_ns() - t0)
        found.append(overlaps)
    return durations, found


def prepare(args) -> int:
    """Runs in its own process, so the driver does not keep the generated layers' memory."""
    from benchmarks.synth import cached_layers

    t0 = time.perf_counter()
    root = cached_layers(args.scale, args.seed)
    log(f"layers in {root} ({time.perf_counter() - t0:.1f} s)")
    sites_file = ensure_sites(root, args.sites + WARMUP, args.seed)
    print(json.dumps({"cache": str(root), "sites_file": str(sites_file)}), flush=True)
    return 0


def child(args) -> int:
    """Runs in a fresh interpreter: cold start, checks, memory, baseline."""
    if args.mode == "prepare":
        return prepare(args)
    started, started_cpu = time.perf_counter(), time.process_time()
    from constraints.index import ConstraintIndex
    from datasets.cache import LayerCache
    from datasets.catalogue import load_catalogue

    cache = LayerCache(args.cache)
    index = ConstraintIndex.from_cache(cache, load_catalogue())
    load_s = time.perf_counter() - started
    # CPU seconds of the cold start: on a shared machine the wall clock also counts other people's work
    load_cpu_s = time.process_time() - started_cpu
    if args.mode == "prime":
        print(json.dumps({"load_s": load_s}), flush=True)
        return 0

    sites = read_sites(Path(args.sites_file))
    warm, timed = sites[:WARMUP], sites[WARMUP:]
    for site in warm:  # first calls pay for lazy imports and caches; not what a service sees
        index.check(site)
    # each answer cut to what the agreement compares once its check is timed: a thousand whole answers
    # kept alive would have Python's cyclic collector walk them during later checks (pauses up to
    # 0.7 ms, in the p99), and count in the resident memory as the index's
    durations, answers = [], []
    cutting_ns = 0  # the cutting is the harness's work: not in checks_per_s
    t_all = time.perf_counter()
    for site in timed:
        t0 = time.perf_counter_ns()
        answer = index.check(site)
        t1 = time.perf_counter_ns()
        durations.append(t1 - t0)
        answers.append(_overlaps_in(answer))
        cutting_ns += time.perf_counter_ns() - t1
    wall = time.perf_counter() - t_all - cutting_ns / 1e9
    resident = rss_mb()
    peak = peak_rss_mb()
    stats = summarise_us(durations)
    log(
        f"{len(timed)} checks: p50 {stats['p50']} us, p99 {stats['p99']} us, max {stats['max']} us, rss {resident:.0f} MB"
    )

    base_durations, base_found = _baseline(cache, timed, args.baseline_sites, args.baseline_seconds)
    k = len(base_durations)
    base = summarise_us(base_durations)
    same_sites = summarise_us(durations[:k])
    agree = sum(_same(answers[i], base_found[i]) for i in range(k))
    worst = max(range(len(durations)), key=durations.__getitem__)
    result = {
        "scale": args.scale,
        "features": int(index.snapshot.features),
        "load_s": round(load_s, 2),
        "load_cpu_s": round(load_cpu_s, 2),
        "rss_mb": round(resident, 1),
        "check_p50_us": stats["p50"],
        "check_p99_us": stats["p99"],
        "check_max_us": stats["max"],
        "checks_per_s": round(len(timed) / wall, 1) if wall > 0 else None,
        "baseline": "geopandas-sjoin",
        "baseline_p50_us": base["p50"],
        "speedup_p50": round(base["p50"] / same_sites["p50"], 1) if k and same_sites["p50"] > 0 else None,
        "sites": len(timed),
        "baseline_sites": k,
        "baseline_agreement": round(agree / k, 4) if k else None,
        "check_p50_us_baseline_sites": same_sites["p50"],
        "rss_peak_mb": round(peak, 1),
        "loadavg": [round(v, 2) for v in os.getloadavg()],  # the machine's load: the figures' context
        "pieces": int(len(index.snapshot.piece_geometry)),
        "slowest_site_vertices": int(len(timed[worst].exterior.coords) - 1),
        "slowest_site_entities": len(answers[worst]),
    }
    print(json.dumps(result), flush=True)
    return 0


# -- the driver ------------------------------------------------------------------------------------


def _run_child(argv: list[str], timeout: float) -> dict:
    command = [sys.executable, "-m", "benchmarks.check", *argv]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed with exit code {done.returncode}: {' '.join(command)}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError("benchmark child printed no result")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    from benchmarks.synth import benchmark_parser

    parser = benchmark_parser("benchmarks.check", __doc__)
    parser.add_argument("--sites", type=int, default=200, help="number of timed checks (default 200)")
    parser.add_argument("--baseline-sites", type=int, default=200, help="at most this many baseline checks")
    parser.add_argument("--baseline-seconds", type=float, default=90.0, help="time budget of the baseline")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed to each child process")
    parser.add_argument(
        "--child", choices=["prepare", "prime", "measure"], dest="mode", help=argparse.SUPPRESS
    )
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--sites-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:
        return child(args)
    if args.sites < 1 or args.baseline_sites < 0:
        print("error: --sites must be at least 1 and --baseline-sites not negative", file=sys.stderr)
        return 2
    where = ["--scale", repr(args.scale), "--seed", str(args.seed), "--sites", str(args.sites)]
    ready = _run_child(["--child", "prepare", *where], args.timeout)
    common = ["--scale", repr(args.scale), "--cache", ready["cache"], "--sites-file", ready["sites_file"]]
    common += ["--baseline-sites", str(args.baseline_sites), "--baseline-seconds", str(args.baseline_seconds)]
    first = _run_child(["--child", "prime", *common], args.timeout)
    log(f"first index build (persists derived files when absent): {first['load_s']:.1f} s")
    result = _run_child(["--child", "measure", *common], args.timeout)
    result["first_load_s"] = round(first["load_s"], 2)
    result["seed"] = args.seed
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
