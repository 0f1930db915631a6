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
import logging
import os
import re
import signal
import sys
import threading

from datasets.sync import FAILED, NOT_MODIFIED, REFUSED, UPDATED, SyncResult, platform_syncer, tqdm_progress

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


def _settings():
    """The service settings (REDLINE_* environment variables and .env)."""
    from api.settings import get_settings  # noqa: PLC0415 - the CLI only needs settings when it runs

    return get_settings()


def _setting(settings, name: str, default):
    value = getattr(settings, name, None)
    return default if value is None else value


def _catalogue_datasets(settings) -> list[str]:
    from datasets.catalogue import load_catalogue

    local = _setting(settings, "local_catalogue", None)
    catalogue = load_catalogue(local)
    # A council's own keys name its own layers, which the platform does not publish.
    seen: dict[str, None] = {}
    for constraint in catalogue.constraints:
        if not constraint.local:
            for name in constraint.datasets:
                seen.setdefault(name, None)
    return list(seen)


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
    settings = _settings()
    names = list(args.dataset)
    if args.all:
        names += _catalogue_datasets(settings)
    names = list(dict.fromkeys(names))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "verbose", False):  # one line per dataset is the report; not one per request
        logging.getLogger("httpx").setLevel(logging.WARNING)

    with platform_syncer(
        settings.data_dir,
        files_url=_setting(settings, "pdp_files_url", "https://files.planning.data.gov.uk"),
        api_url=_setting(settings, "pdp_api_url", "https://www.planning.data.gov.uk"),
        connect_timeout=float(_setting(settings, "pdp_connect_timeout_s", 10.0)),
        read_timeout=float(_setting(settings, "pdp_read_timeout_s", 60.0)),
        retries=int(_setting(settings, "pdp_retries", 4)),
        backoff=float(_setting(settings, "pdp_backoff", 0.5)),
        min_fraction=float(_setting(settings, "sync_min_fraction", 0.5)),
        count_tolerance=float(_setting(settings, "sync_count_tolerance", 0.01)),
        download_deadline=float(_setting(settings, "pdp_download_deadline_s", 1800.0)),
        stale_after_hours=float(_setting(settings, "stale_after_hours", 48.0)),
        progress=tqdm_progress(err),
    ) as syncer:
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
