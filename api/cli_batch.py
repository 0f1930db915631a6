"""``redline batch``: check every site of a GIS file against every catalogue key, on Dask.

Wiring (in ``api/cli.py``, beside the other commands)::

    from .cli_batch import add_batch_parser
    add_batch_parser(commands)             # adds "batch", sets func=run_batch_command

Exit codes: 0 done (bad rows, if any, are listed in ``<out>.errors.csv``), 1 the run failed part way
(finished parts are kept: rerun with ``--resume``), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys

BAD_INPUT = 2
FAILED = 1


def add_batch_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``batch`` to the top-level ``redline`` subparsers."""
    parser = subparsers.add_parser(
        "batch",
        help="check every site of a GIS file against every constraint key, on a Dask cluster",
        description=(
            "Check every site of SITES (GeoParquet, GeoPackage, GeoJSON, Shapefile or .zip, FlatGeobuf, or CSV with "
            "a WKT column such as geometry, WKT, geom or the_geom, or longitude/latitude columns; any coordinate "
            "system) with the same core and tolerance rules as the "
            "service, and write one row per site and key to RESULTS (.parquet for GeoParquet, or .csv), with the reason for "
            "each unknown and the entities nearby. Bad rows "
            "are listed in RESULTS.errors.csv and never stop the run. Layers come from REDLINE_DATA_DIR, which every "
            "Dask worker must be able to read at the same path (and RESULTS' folder, where parts are written)."
        ),
    )
    parser.add_argument("sites", metavar="SITES", help="the sites: a GIS file")
    parser.add_argument(
        "--out", required=True, metavar="RESULTS", help="the result file: .parquet (GeoParquet) or .csv"
    )
    parser.add_argument(
        "--id-field", metavar="F", help="the column identifying each site (default: its row number, as 'row')"
    )
    parser.add_argument(
        "--keys", nargs="+", metavar="KEY", help="only these catalogue keys (default: every key)"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler", metavar="ADDR", help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786"
    )
    where.add_argument(
        "--workers", type=int, default=2, metavar="N", help="worker processes of a local cluster (default 2)"
    )
    parser.add_argument("--resume", action="store_true", help="reuse the parts a failed run finished")
    parser.add_argument(
        "--partition-size",
        type=int,
        metavar="N",
        help="sites per task (default: about 4 tasks a worker, 100 to 2000)",
    )
    parser.add_argument("--layer", help="the layer to read, when SITES holds several (GeoPackage)")
    parser.add_argument(
        "--crs", help="the EPSG code of SITES when it does not say (27700 for British National Grid)"
    )
    parser.add_argument(
        "--tolerance-m2",
        type=float,
        default=0.5,
        help="overlaps below this many m² count as nearby (default 0.5)",
    )
    parser.add_argument(
        "--tolerance-pct",
        type=float,
        default=0.1,
        help="overlaps below this %% of the site count as nearby (default 0.1)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_batch_command)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"redline: {message}", file=sys.stderr)
    return code


def missing_extra() -> str | None:
    """Why ``batch`` cannot run here, when its optional Dask extra is not installed."""
    import importlib.util

    missing = [name for name in ("dask", "distributed") if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (
        f"redline batch needs the optional Dask extra ({' and '.join(missing)} not installed): "
        "pip install 'redline[batch]' (from a clone: pip install -e '.[batch]')"
    )


def run_batch_command(args) -> int:
    why = missing_extra()
    if why:
        return _fail(why, BAD_INPUT)
    from constraints.batch import BatchError, BatchRunError, run_batch
    from constraints.index import Tolerance
    from datasets.cache import CacheError, LayerCache

    from .settings import get_settings

    settings = get_settings()
    if args.workers is not None and args.workers < 1:
        return _fail("--workers must be at least 1", BAD_INPUT)
    if args.partition_size is not None and args.partition_size < 1:
        return _fail("--partition-size must be at least 1", BAD_INPUT)
    if args.tolerance_m2 < 0 or args.tolerance_pct < 0:
        return _fail("--tolerance-m2 and --tolerance-pct cannot be negative", BAD_INPUT)
    try:
        if not LayerCache(settings.data_dir).datasets():
            return _fail(
                f"the layer cache in {settings.data_dir} is empty: load layers first "
                "(redline datasets sync, redline datasets load, or redline datasets load-samples)",
                BAD_INPUT,
            )
    except CacheError as err:
        return _fail(str(err), FAILED)
    try:
        report = run_batch(
            args.sites,
            args.out,
            cache_root=settings.data_dir,
            local_catalogue=settings.local_catalogue,
            article4_dir=settings.article4_dir,
            id_field=args.id_field,
            keys=args.keys,
            tolerance=Tolerance(args.tolerance_m2, args.tolerance_pct),
            scheduler=args.scheduler,
            workers=args.workers or 2,
            resume=args.resume,
            partition_size=args.partition_size,
            layer=args.layer,
            crs=args.crs,
            progress=not args.no_progress,
        )
    except BatchError as err:
        return _fail(str(err), BAD_INPUT)
    except BatchRunError as err:
        return _fail(str(err), FAILED)
    print(report.summary())
    return 0
