"""``redline datasets sync``: refresh cached layers from the Planning Data Platform.

Wiring (in ``api/cli.py``)::

    datasets_sub = datasets_parser.add_subparsers(dest="datasets_command")
    add_sync_parser(datasets_sub)          # adds "sync", sets func=run_sync
    ...
    return args.func(args)                 # run_sync returns the exit code

Exit codes: 0 when every dataset is fresh (updated or not modified), 1 when any failed or was refused
(the last good copy is still served), 2 for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import threading

from datasets.cache import LayerCache
from datasets.catalogue import load_catalogue
from datasets.sync import FAILED, NOT_MODIFIED, REFUSED, UPDATED, SyncResult, tqdm_progress

DATASET_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
SYMBOLS = {UPDATED: "updated ", NOT_MODIFIED: "current ", FAILED: "FAILED  ", REFUSED: "REFUSED "}


def add_sync_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``sync`` to the ``datasets`` command's subparsers."""
    parser = subparsers.add_parser(
        "sync",
        help="refresh cached layers from the Planning Data Platform",
        description=(
            "Download each dataset's bulk file from the Planning Data Platform when it changed "
            "(a conditional GET: an unchanged file costs one 304), check it, and swap it into the cache "
            "atomically. A failed or implausible download keeps the last good copy. Platform URLs come from "
            "REDLINE_PDP_FILES_URL and REDLINE_PDP_API_URL, the cache folder from REDLINE_DATA_DIR."
        ),
    )
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME",
        help="a platform dataset to sync, e.g. conservation-area (repeatable)",
    )
    parser.add_argument("--all", action="store_true", help="sync every platform dataset behind the catalogue")
    parser.add_argument(
        "--force",
        action="store_true",
        help="accept a file with far fewer features than the cached copy (a real cut, not a broken build)",
    )
    parser.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="sync again every SECONDS until interrupted (for a scheduler-less deployment)",
    )
    parser.set_defaults(func=run_sync)
    return parser


def _print_results(results: list[SyncResult], out) -> None:
    for r in results:
        print(f"{SYMBOLS.get(r.status, r.status)} {r.message} ({r.seconds:.2f} s)", file=out)
    counts = {s: sum(r.status == s for r in results) for s in (UPDATED, NOT_MODIFIED, FAILED, REFUSED)}
    print(
        f"{counts[UPDATED]} updated, {counts[NOT_MODIFIED]} not modified, "
        f"{counts[FAILED]} failed, {counts[REFUSED]} refused",
        file=out,
        flush=True,
    )


def run_sync(args: argparse.Namespace) -> int:
    """Run ``datasets sync``; returns the exit code."""
    err = sys.stderr
    bad = [n for n in args.dataset if not DATASET_NAME.match(n)]
    if bad:
        print(
            f"redline datasets sync: {bad[0]!r} is not a dataset name (kebab-case, e.g. conservation-area)",
            file=err,
        )
        return 2
    if not args.dataset and not args.all:
        print("redline datasets sync: say which datasets: --dataset NAME (repeatable) or --all", file=err)
        return 2
    if args.watch is not None and not args.watch > 0:
        print("redline datasets sync: --watch takes a positive number of seconds", file=err)
        return 2
    from api.settings import get_settings, platform_syncer  # noqa: PLC0415 - the CLI only needs settings when it runs

    settings = get_settings()
    names = list(args.dataset)
    if args.all:
        names += load_catalogue(settings.local_catalogue).platform_datasets()
    names = list(dict.fromkeys(names))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "verbose", False):  # one line per dataset is the report; not one per request
        logging.getLogger("httpx").setLevel(logging.WARNING)

    syncer = platform_syncer(settings, LayerCache(settings.data_dir), progress=tqdm_progress(err))
    with contextlib.closing(syncer.client):
        if args.watch is None:
            results = syncer.sync(names, force=args.force)
            _print_results(results, sys.stdout)
            return 0 if all(r.ok for r in results) else 1
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        print(
            f"syncing {len(names)} datasets every {args.watch:g} s (pid {os.getpid()}); Ctrl-C stops",
            file=err,
        )
        syncer.watch(
            names,
            args.watch,
            force=args.force,
            stop=stop,
            report=lambda results: _print_results(results, sys.stdout),
        )
        return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m api.cli_sync sync ...``: the same command without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="redline datasets")
    add_sync_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
