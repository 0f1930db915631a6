"""Benchmark of batch checks on Dask against a geopandas sjoin + overlay baseline, in the same run.

    python -m benchmarks.batch --scale 0.05 --sites 20000 --workers 2

1. The synthetic national layers for (scale, seed) are generated once into a LayerCache under
   ``.redline-bench/`` (``benchmarks.synth``), and so are the sites (``generate_sites``, written as
   GeoParquet with a ``site_id`` column). A fresh process builds the index once so that the derived
   files (reprojected, subdivided pieces) are on disk, as after any ``redline datasets sync``.
2. ``run_batch`` checks every site with ``--workers`` local worker processes (1 thread each) and
   writes GeoParquet. ``seconds`` is the whole run as a user sees it: reading the sites, starting the
   cluster, every worker building its index, the checks, and the final file.
3. The same with 1 worker, for the scaling (``scaling`` = the W-worker rate over the 1-worker rate),
   unless ``--no-single``.
4. The baseline, in this process, on the first ``--baseline-sites`` sites: the sites reprojected
   to EPSG:27700 with OSTN15 and their geodesic areas, one ``geopandas.sjoin`` per layer, and
   ``geopandas.overlay`` of the matched sites and features of every polygon layer for the overlap
   areas. Layers are read, reprojected and spatially indexed beforehand, untimed.

It prints ONE JSON line::

    {"sites", "workers", "seconds", "sites_per_s", "baseline": "geopandas-sjoin",
     "baseline_sites_per_s", "speedup", "one_worker_sites_per_s", "scaling", "agreement", ...}

``task_cpu_us_per_site`` is the CPU the workers spent in the check tasks (reading, matching, answering
and writing each partition's sites), per site: a figure a busy machine disturbs far less than the
rates. ``agreement`` is the share of ``--sample`` sites (spread evenly over the input) whose rows in the
W-worker result are exactly those the service's ``ConstraintIndex.check`` gives the same site.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import BENCH_DIR, emit, log, scale_tag


def ensure_sites(root: Path, scale: float, n: int, seed: int) -> Path:
    """``n`` query sites over the layers in ``root``, as GeoParquet; made on first use."""
    path = BENCH_DIR / f"batch-sites-s{scale_tag(scale)}-n{n}-seed{seed}.parquet"
    if path.exists():
        return path
    import geopandas as gpd

    from benchmarks.synth import generate_sites
    from datasets.cache import LayerCache

    cache = LayerCache(root)
    layers = {name: cache.read(name) for name in cache.datasets()}
    sites = generate_sites(n, layers, seed)
    frame = gpd.GeoDataFrame({"site_id": [f"S{i:07d}" for i in range(n)]}, geometry=sites, crs=4326)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp)
    os.replace(tmp, path)
    return path


def prime(root: Path) -> float:
    """Build the index once in a fresh process, so the derived files exist; returns its seconds."""
    code = f"import time; t = time.perf_counter(); from constraints.batch import IndexSpec; IndexSpec({str(root)!r}).build(); print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _row(key, status, reason, entities, nearby, area) -> tuple:
    return (
        key,
        status,
        reason if status == "unknown" else None,
        tuple(int(e["entity"]) for e in entities),
        tuple(e.get("name") for e in entities),
        tuple(e.get("overlap_m2") for e in entities),
        tuple(int(e["entity"]) for e in nearby),
        area,
    )


def rows_agreement(out: Path, sites_path: Path, root: Path, n: int) -> tuple[int, int]:
    """Of ``n`` sites spread evenly over the input, how many have in ``out`` exactly the rows that the
    service's own ``ConstraintIndex.check`` of that site gives (every key, status, reason, entity, name,
    overlap and nearby entity, and the site's area); returns (identical, compared)."""
    import geopandas as gpd
    import numpy as np
    import pyarrow.parquet as pq

    from constraints.index import ConstraintIndex
    from constraints.site import parse_site
    from datasets.cache import LayerCache
    from datasets.catalogue import load_catalogue

    sites = gpd.read_parquet(sites_path)
    picks = sites.iloc[np.unique(np.linspace(0, len(sites) - 1, min(n, len(sites))).astype(int))]
    columns = ["site_id", "key", "status", "reason", "entities", "names", "overlap_m2", "nearby", "site_area_m2"]
    table = pq.read_table(out, columns=columns, filters=[("site_id", "in", list(picks["site_id"]))])
    written: dict[str, list[tuple]] = {}
    for r in table.to_pylist():
        written.setdefault(r["site_id"], []).append(
            (r["key"], r["status"], r["reason"], tuple(r["entities"]), tuple(r["names"]), tuple(r["overlap_m2"]), tuple(r["nearby"]), r["site_area_m2"])
        )
    index = ConstraintIndex.from_cache(LayerCache(root), load_catalogue())
    identical = 0
    for ident, geometry in zip(picks["site_id"], picks.geometry, strict=True):
        try:
            answer = index.check(parse_site(geometry))
        except Exception:  # a site the check refuses must be in the errors file, not in the rows
            identical += ident not in written
            continue
        area = answer["site"]["area_m2"]
        expected = [_row(c["key"], c["status"], c.get("reason"), c["entities"], c.get("nearby") or (), area) for c in answer["constraints"]]
        identical += sorted(written.get(ident, []), key=repr) == sorted(expected, key=repr)
    return identical, len(picks)


def batch_run(sites: Path, root: Path, workers: int, partition_size: int | None, sample: int = 0) -> dict:
    from constraints.batch import run_batch

    out = BENCH_DIR / f"batch-out-w{workers}.parquet"
    report = run_batch(
        sites,
        out,
        cache_root=root,
        id_field="site_id",
        workers=workers,
        partition_size=partition_size,
        progress=sys.stderr.isatty(),
    )
    log(f"{workers} worker(s): {report.summary()}")
    log(
        f"  cluster + indexes {report.cluster_seconds:.1f} s, checks {report.check_seconds:.1f} s, final file {report.finalise_seconds:.1f} s;"
        f" workers' CPU {1e6 * report.task_cpu_seconds / max(report.checked, 1):.0f} us per site"
    )
    identical = compared = 0
    if sample:
        identical, compared = rows_agreement(out, sites, root, sample)
        log(f"  rows of {identical} of {compared} sampled sites identical to the service's check")
    for path in (out, report.errors_path):
        path.unlink(missing_ok=True)
    return {
        "identical": identical,
        "compared": compared,
        "sites": report.sites,
        "checked": report.checked,
        "rows": report.rows,
        "errors": report.errors,
        "seconds": report.seconds,
        "check_seconds": report.check_seconds,
        "cluster_seconds": report.cluster_seconds,
        "finalise_seconds": report.finalise_seconds,
        "task_cpu_seconds": report.task_cpu_seconds,
    }


def baseline(root: Path, sites_path: Path, n: int) -> tuple[int, float]:
    """The geopandas way over the first ``n`` sites: returns (sites, seconds)."""
    import geopandas as gpd
    import numpy as np
    import shapely
    from pyproj import Geod

    from datasets.cache import LayerCache
    from datasets.crs import to_bng

    cache = LayerCache(root)
    started = time.perf_counter()
    layers = {}
    for name in cache.datasets():
        frame = cache.read(name, columns=["entity", "geometry"])
        geometry = to_bng(frame.geometry.to_numpy())
        polygonal = np.isin(shapely.get_type_id(geometry), (3, 6))
        for kind, mask in (("polygons", polygonal), ("other", ~polygonal)):
            if mask.any():
                part = gpd.GeoDataFrame(
                    {"entity": frame["entity"].to_numpy()[mask]}, geometry=geometry[mask], crs=27700
                )
                _ = part.sindex  # built once here, untimed: the baseline is naive, not careless
                layers[(name, kind)] = part
    log(f"baseline layers ready in {time.perf_counter() - started:.1f} s")
    sites = gpd.read_parquet(sites_path).iloc[:n].reset_index(drop=True)
    geod = Geod(ellps="WGS84")

    t0 = time.perf_counter()
    site_frame = gpd.GeoDataFrame(
        {"site_id": sites["site_id"]}, geometry=to_bng(sites.geometry.to_numpy()), crs=27700
    )
    areas = [abs(geod.geometry_area_perimeter(g)[0]) for g in sites.geometry]
    found = 0
    overlap_total = 0.0
    for (_name, kind), layer in layers.items():
        joined = gpd.sjoin(site_frame, layer, how="inner", predicate="intersects")
        found += len(joined)
        if kind == "polygons" and len(joined):
            left = site_frame.loc[joined.index.unique()]
            right = layer.loc[joined["index_right"].unique()]
            pieces = gpd.overlay(left, right, how="intersection", keep_geom_type=True)
            overlap_total += float(pieces.area.sum())
    seconds = time.perf_counter() - t0
    log(
        f"baseline: {len(sites)} sites, {found} site-entity pairs, {overlap_total:,.0f} m² overlap, {len(areas)} areas in {seconds:.1f} s"
    )
    return len(sites), seconds


def main(argv: list[str] | None = None) -> int:
    from benchmarks.synth import benchmark_parser

    parser = benchmark_parser("benchmarks.batch", __doc__, default_scale=0.05)
    parser.add_argument("--sites", type=int, default=20000, help="sites to check (default 20000)")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    parser.add_argument("--partition-size", type=int, help="sites per task (default: the batch default)")
    parser.add_argument(
        "--baseline-sites", type=int, default=2000, help="sites the baseline runs on (default 2000)"
    )
    parser.add_argument("--no-single", action="store_true", help="skip the 1-worker run (no scaling figure)")
    parser.add_argument(
        "--sample", type=int, default=500, help="sites whose rows are compared with the service's check (default 500)"
    )
    args = parser.parse_args(argv)
    if args.sites < 1 or args.workers < 1 or args.baseline_sites < 1:
        print("error: --sites, --workers and --baseline-sites must be at least 1", file=sys.stderr)
        return 2

    from benchmarks.synth import cached_layers

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    root = cached_layers(args.scale, args.seed)
    sites = ensure_sites(root, args.scale, args.sites, args.seed)
    log(f"layers in {root}, sites in {sites}; first index build {prime(root):.1f} s")

    main_run = batch_run(sites, root, args.workers, args.partition_size, sample=args.sample)
    single = None
    if args.workers > 1 and not args.no_single:
        single = batch_run(sites, root, 1, args.partition_size)
    base_sites, base_seconds = baseline(root, sites, min(args.baseline_sites, args.sites))
    for leftover in BENCH_DIR.glob("batch-out-*.parquet.parts"):
        shutil.rmtree(leftover, ignore_errors=True)

    rate = main_run["sites"] / main_run["seconds"]
    base_rate = base_sites / base_seconds
    result = {
        "sites": main_run["sites"],
        "workers": args.workers,
        "seconds": round(main_run["seconds"], 2),
        "sites_per_s": round(rate, 1),
        "baseline": "geopandas-sjoin",
        "baseline_sites_per_s": round(base_rate, 1),
        "speedup": round(rate / base_rate, 2),
        "scale": args.scale,
        "baseline_sites": base_sites,
        "rows": main_run["rows"],
        "bad_rows": main_run["errors"],
        "check_phase_sites_per_s": round(main_run["checked"] / main_run["check_seconds"], 1),
        "cluster_and_index_s": round(main_run["cluster_seconds"], 2),
        "finalise_s": round(main_run["finalise_seconds"], 2),
        # the workers' CPU in the tasks, per site: what the machine's other load does not change
        "task_cpu_us_per_site": round(1e6 * main_run["task_cpu_seconds"] / max(main_run["checked"], 1), 1),
        "sample_sites": main_run["compared"],
        "sample_identical": main_run["identical"],
        "agreement": round(main_run["identical"] / main_run["compared"], 4) if main_run["compared"] else None,
    }
    if single is not None:
        one_rate = single["sites"] / single["seconds"]
        result["one_worker_seconds"] = round(single["seconds"], 2)
        result["one_worker_sites_per_s"] = round(one_rate, 1)
        result["scaling"] = round(rate / one_rate, 2)
        result["check_phase_scaling"] = round(
            (main_run["checked"] / main_run["check_seconds"]) / (single["checked"] / single["check_seconds"]),
            2,
        )
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
