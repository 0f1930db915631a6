"""redline's check side by side with PostGIS, on the same synthetic layers and sites, in one run.

    python -m benchmarks.postgis --scale 1 --sites 1000

The peer a council's GIS team would pick is PostGIS: load the layers, cut them with
``ST_Subdivide(256)``, index them with GiST and ask one SQL query per site. This benchmark builds
exactly that and times it against ``ConstraintIndex.check``:

1. The synthetic layers and query sites are those of ``benchmarks.check`` (kept under
   ``.redline-bench/``, ``REDLINE_BENCH_DIR``).
2. A throwaway PostgreSQL cluster with PostGIS (Debian's ``postgresql-15-postgis-3``, installed by
   ``make system-deps``) is kept beside them. On first use a child process loads every layer's
   current entities reprojected to EPSG:27700 by the same OSTN15 interpolation as redline's index
   (``datasets.crs.to_bng``), cuts them with ``ST_Subdivide(geom, 256)``, builds a GiST index,
   clusters the table on it and analyses it. Later runs start the cluster on that folder and
   skip the load.
3. PostGIS is given every advantage: the site arrives already in EPSG:27700 as WKB (reprojected
   before timing), over a unix socket, to one prepared statement that asks only for the entities
   the site meets and their overlap areas. redline is timed for its whole ``check``: reading the
   EPSG:4326 site, reprojecting it, its geodesic area and every key of the answer.
4. Both sides take the same sites in blocks of ``--block``, alternating which goes first, so a
   busy machine's noise falls on both alike.
5. Beside redline's wall-clock times, the CPU time its thread spent in each check (taken outside the
   wall-clock window, which it leaves as it was): on a machine busier than its cores, a check that
   waits for a core shows as a wall-clock time well above its CPU time. ``redline_cpu_p99_us`` is the
   p99 the check's own work sets; ``redline_waited`` counts the checks that waited over a millisecond.
   PostGIS's work is in its server process, so it has no such figure.
6. Each side's answer is cut, after its timed window, to what ``agreement`` compares (entity ->
   overlap area), as PostGIS's rows already are. Kept whole, a thousand answers' dicts and lists
   outlive their checks, and Python's cyclic collector walks them during later checks: some 180
   young and 16 middle-generation collections a thousand checks, pauses of up to 0.7 ms that put the
   harness's memory, not the check's work, into redline's p99 (a service drops each answer once sent).

It prints ONE JSON line::

    {"scale", "sites", "postgis_p50_us", "postgis_p99_us", "redline_p50_us", "redline_p99_us",
     "ratio_p50", "ratio_p99", "agreement", "redline_cpu_p50_us", "redline_cpu_p99_us", "redline_waited", ...}

``ratio_*`` is PostGIS's time over redline's (above 1: redline is faster). ``agreement`` is the
share of sites where both found exactly the same entities (the check's ``entities`` and
``nearby`` of every key, against PostGIS's ``ST_Intersects``) with the same overlap areas.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from benchmarks.check import WARMUP, _overlaps_in, _run_child, _same, read_sites
from benchmarks.common import BENCH_DIR, emit, log, rss_mb, summarise_us
from benchmarks.pg_server import PostgresServer, PostgresUnavailable

#: Part of the loaded cluster's folder name: bump it whenever the load below changes.
LOAD_VERSION = 1
MARKER = "loaded.json"
PIECE_VERTICES = 256  # as redline's MAX_PIECE_VERTICES

#: Settings a DBA would give a read-mostly PostGIS on this machine: the whole table in shared
#: buffers, no JIT or parallel plans for millisecond queries, room to build the GiST index.
SETTINGS = {
    "shared_buffers": "1GB",
    "effective_cache_size": "4GB",
    "work_mem": "16MB",
    "maintenance_work_mem": "512MB",
    "max_wal_size": "4GB",
    "jit": "off",
    "max_parallel_workers_per_gather": "0",
    "random_page_cost": "1.1",
}

#: The one prepared statement: the entities a site meets and their overlap areas.
QUERY = """
SELECT entity, sum(ST_Area(ST_Intersection(piece.geom, site.geom)))
FROM piece, (SELECT ST_GeomFromWKB(%b, 27700) AS geom) AS site
WHERE ST_Intersects(piece.geom, site.geom)
GROUP BY entity
"""


def cluster_dir(layers_root: Path) -> Path:
    """The kept PostgreSQL cluster (with its load marker) for a folder of synthetic layers."""
    return BENCH_DIR / f"postgis-v{LOAD_VERSION}-{Path(layers_root).name}"


def require_postgis(server: PostgresServer) -> None:
    """Fail with the package to install when the server has no PostGIS."""
    version = server.bindir.parent.name
    if not glob.glob(f"/usr/share/postgresql/{version}/extension/postgis.control"):
        raise PostgresUnavailable(
            f"PostGIS is not installed for PostgreSQL {version}: "
            f"apt-get install postgresql-{version}-postgis-3 (make system-deps installs it)"
        )


def start_server(layers_root: Path) -> PostgresServer:
    server = PostgresServer(directory=cluster_dir(layers_root) / "cluster", settings=SETTINGS)
    if server.bindir is None:
        raise PostgresUnavailable("PostgreSQL is not installed: apt-get install postgresql postgresql-15-postgis-3")
    require_postgis(server)
    return server.start()


def connect(server: PostgresServer):
    import psycopg

    return psycopg.connect(host=server.socket_dir, port=server.port, user=server.user, dbname="redline", autocommit=True)


def _current(end_dates, today: str):
    """Which rows are current: no end date, or one still to come (the rule the check applies)."""
    import numpy as np

    values = np.asarray(end_dates, dtype=object)
    return np.array([not v or str(v)[:10] > today for v in values], dtype=bool)


def load(layers_root: Path) -> dict:
    """Load, subdivide and index every layer in a fresh cluster; write the marker last."""
    import shapely

    from datasets.cache import LayerCache
    from datasets.crs import to_bng

    folder = cluster_dir(layers_root)
    marker = folder / MARKER
    marker.unlink(missing_ok=True)
    started = time.perf_counter()
    server = start_server(layers_root)
    try:
        with connect(server) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            conn.execute("DROP TABLE IF EXISTS feature, piece")
            conn.execute("CREATE TABLE feature (entity bigint NOT NULL, geom geometry NOT NULL)")
            cache = LayerCache(layers_root)
            today = date.today().isoformat()
            features = 0
            for name in cache.datasets():
                frame = cache.read(name, columns=["entity", "end-date", "geometry"])
                keep = _current(frame["end-date"].to_numpy(), today)
                bng = shapely.set_srid(to_bng(frame.geometry.to_numpy()[keep]), 27700)
                wkb = shapely.to_wkb(bng, hex=True, include_srid=True)
                entities = frame["entity"].to_numpy()[keep]
                with conn.cursor().copy("COPY feature (entity, geom) FROM STDIN") as copy:
                    for row in zip(entities.tolist(), wkb.tolist(), strict=True):
                        copy.write_row(row)
                features += int(keep.sum())
                log(f"postgis: loaded {name} ({int(keep.sum()):,} features)")
            log("postgis: ST_Subdivide, GiST index, CLUSTER, ANALYZE")
            conn.execute(f"CREATE TABLE piece AS SELECT entity, ST_Subdivide(geom, {PIECE_VERTICES}) AS geom FROM feature")
            conn.execute("DROP TABLE feature")
            conn.execute("CREATE INDEX piece_geom ON piece USING gist (geom)")
            conn.execute("CLUSTER piece USING piece_geom")
            conn.execute("VACUUM ANALYZE piece")
            pieces = conn.execute("SELECT count(*) FROM piece").fetchone()[0]
    finally:
        server.stop()
    info = {"layers": str(layers_root), "features": features, "pieces": int(pieces), "load_s": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps(info))
    return info


def ensure_loaded(layers_root: Path, timeout: float) -> dict:
    """The load's marker, loading first (in a child process, so its memory is returned) when absent."""
    marker = cluster_dir(layers_root) / MARKER
    if not marker.exists():
        log(f"postgis: loading {layers_root} into {cluster_dir(layers_root)} (once; kept for later runs)")
        command = [sys.executable, "-m", "benchmarks.postgis", "--child-load", str(layers_root)]
        subprocess.run(command, check=True, timeout=timeout)
    info = json.loads(marker.read_text())
    info["cached"] = True
    return info


def measure(args, layers_root: Path, sites_file: Path, loaded: dict) -> dict:
    import shapely

    from constraints.index import ConstraintIndex
    from datasets.cache import LayerCache
    from datasets.catalogue import load_catalogue
    from datasets.crs import to_bng

    t0 = time.perf_counter()
    index = ConstraintIndex.from_cache(LayerCache(layers_root), load_catalogue())
    log(f"redline index ready in {time.perf_counter() - t0:.1f} s")
    sites = read_sites(sites_file)
    site_wkb = shapely.to_wkb(to_bng(sites)).tolist()  # PostGIS gets the site on the grid, untimed

    server = start_server(layers_root)
    try:
        with connect(server) as conn:
            version = conn.execute("SELECT postgis_lib_version(), current_setting('server_version')").fetchone()
            cursor = conn.cursor()

            def postgis(i: int) -> dict[int, float]:
                cursor.execute(QUERY, (site_wkb[i],), prepare=True)
                return {int(e): float(a) for e, a in cursor.fetchall()}

            for i in range(min(WARMUP, len(sites))):  # lazy imports and caches, and the statement's plan
                index.check(sites[i])
                postgis(i)
            timed = range(WARMUP, len(sites))
            ours, theirs, ours_cpu = [0] * len(sites), [0] * len(sites), [0] * len(sites)
            answers: dict[int, dict[int, float]] = {}  # what each check found: entity -> overlap m²
            found: dict[int, dict] = {}
            blocks = [timed[k : k + args.block] for k in range(0, len(timed), args.block)]
            for b, block in enumerate(blocks):
                for side in ("redline", "postgis") if b % 2 == 0 else ("postgis", "redline"):
                    for i in block:
                        if side == "redline":
                            cpu = time.thread_time_ns()
                            t = time.perf_counter_ns()
                            answer = index.check(sites[i])
                            ours[i] = time.perf_counter_ns() - t
                            ours_cpu[i] = time.thread_time_ns() - cpu
                            answers[i] = _overlaps_in(answer)
                            del answer
                        else:
                            t = time.perf_counter_ns()
                            found[i] = postgis(i)
                            theirs[i] = time.perf_counter_ns() - t
    finally:
        server.stop()
    ours_us, theirs_us = summarise_us([ours[i] for i in timed]), summarise_us([theirs[i] for i in timed])
    cpu_us = summarise_us([ours_cpu[i] for i in timed])
    waited = sum(ours[i] - ours_cpu[i] > 1_000_000 for i in timed)
    agree = sum(_same(answers[i], found[i]) for i in timed)
    return {
        "scale": args.scale,
        "sites": len(timed),
        "features": int(index.snapshot.features),
        "postgis": f"PostgreSQL {version[1]} + PostGIS {version[0]}, ST_Subdivide({PIECE_VERTICES}) + GiST",
        "postgis_p50_us": theirs_us["p50"],
        "postgis_p99_us": theirs_us["p99"],
        "redline_p50_us": ours_us["p50"],
        "redline_p99_us": ours_us["p99"],
        "ratio_p50": round(theirs_us["p50"] / ours_us["p50"], 2),
        "ratio_p99": round(theirs_us["p99"] / ours_us["p99"], 2),
        "agreement": round(agree / len(timed), 4),
        "redline_cpu_p50_us": cpu_us["p50"],
        "redline_cpu_p99_us": cpu_us["p99"],
        "redline_waited": int(waited),
        "identical": agree,
        "redline_pieces": int(len(index.snapshot.piece_geometry)),
        "postgis_pieces": loaded["pieces"],
        "postgis_load_s": loaded["load_s"],
        "block": args.block,
        "rss_mb": round(rss_mb(), 1),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "seed": args.seed,
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks.synth import benchmark_parser

    parser = benchmark_parser("benchmarks.postgis", __doc__)
    parser.add_argument("--sites", type=int, default=200, help="number of timed sites (default 200)")
    parser.add_argument("--block", type=int, default=50, help="sites per block; the sides alternate by block")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds allowed to each child process")
    parser.add_argument("--child-load", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_load:
        load(args.child_load)
        return 0
    if args.sites < 1 or args.block < 1:
        print("error: --sites and --block must be at least 1", file=sys.stderr)
        return 2
    where = ["--scale", repr(args.scale), "--seed", str(args.seed), "--sites", str(args.sites)]
    ready = _run_child(["--child", "prepare", *where], args.timeout)  # layers and sites, as benchmarks.check
    layers_root, sites_file = Path(ready["cache"]), Path(ready["sites_file"])
    try:
        loaded = ensure_loaded(layers_root, args.timeout)
        result = measure(args, layers_root, sites_file, loaded)
    except PostgresUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
