"""The ``redline`` command line: checks, dataset loading, the service, and API keys.

Exit codes: 0 done, 1 the work failed (nothing could be loaded, a sync failed), 2 bad input.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import math
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

from constraints.formats import Format

from . import __version__
from .settings import get_settings

BAD_INPUT = 2


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fail(message: str, code: int = BAD_INPUT) -> int:
    print(f"redline: {message}", file=sys.stderr)
    return code


def _tolerance(text: str) -> float:
    """A tolerance option: a finite number, zero or more (NaN would make every comparison false)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number, 0 or more")
    return value


def _cache():
    from datasets.cache import LayerCache

    return LayerCache(get_settings().data_dir)


def _catalogue():
    from datasets.catalogue import load_catalogue

    settings = get_settings()
    return load_catalogue(settings.local_catalogue, settings.article4_dir)


def cmd_check(args) -> int:
    from constraints.formats import render
    from constraints.index import ConstraintIndex, Tolerance
    from constraints.site import SiteError, SiteLimits, parse_site

    path = Path(args.site)
    if str(args.site) == "-":
        data = sys.stdin.buffer.read()
    else:
        if not path.exists():
            return _fail(f"{path} does not exist")
        if path.is_dir():
            return _fail(f"{path} is a folder; give a GeoJSON file")
        limits = SiteLimits()
        size = path.stat().st_size
        if limits.max_bytes is not None and size > limits.max_bytes:
            return _fail(f"{path} is {size / 1e6:.1f} MB, more than the {limits.max_bytes / 1e6:.0f} MB accepted for one site; simplify the boundary")
        data = path.read_bytes()
    try:
        site = parse_site(data)
    except SiteError as err:
        where = f" (at {err.pointer})" if err.pointer else ""
        return _fail(f"{args.site}: {err.message}{where}")
    cache = _cache()
    settings = get_settings()
    if not cache.datasets() and settings.load_samples:
        from datasets.samples import load_samples

        load_samples(cache)
        print("redline: the cache was empty; loaded the bundled sample layers", file=sys.stderr)
    catalogue = _catalogue()
    if args.council and not catalogue.article4_rules(args.council):
        known = ", ".join(sorted(catalogue.article4)) or "none"
        return _fail(f"no article 4 rules for the council {args.council!r} (councils with rules: {known})")
    index = ConstraintIndex.from_cache(cache, catalogue, stale_after_hours=settings.stale_after_hours)
    tolerance = Tolerance(
        settings.tolerance_m2 if args.tolerance_m2 is None else args.tolerance_m2,
        settings.tolerance_pct if args.tolerance_pct is None else args.tolerance_pct,
    )
    answer = index.check(site, tolerance=tolerance, council=args.council)
    from .dataset_metadata import describer

    answer = render(answer, args.format, index.catalogue, index.snapshot, describe=describer(index.snapshot))
    json.dump(answer, sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")
    return 0


def cmd_load(args) -> int:
    import contextlib
    import io

    from datasets.progress import progress_bar

    # what the load prints waits until the bar is gone, so the two never share a line
    out, err = io.StringIO(), io.StringIO()
    with progress_bar(len(LOAD_STEPS), desc=f"loading {args.dataset}", unit="step", leave=False) as bar:

        def stage(name: str) -> None:
            bar.set_postfix_str(name, refresh=False)
            bar.update(LOAD_STEPS.index(name) - bar.n)

        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = _load(args, stage)
    sys.stdout.write(out.getvalue())
    sys.stderr.write(err.getvalue())
    return code


LOAD_STEPS = ("reading", "checking", "repairing", "numbering", "writing", "done")


def _load(args, stage) -> int:
    from datasets.cache import CacheError
    from datasets.coverage import ENGLAND, HOW_TO_SET, default_coverage, describe
    from datasets.loaders import LoadError, read_layer_file

    cache = _cache()
    try:
        report = read_layer_file(
            args.file,
            args.dataset,
            layer=args.layer,
            id_field=args.id_field,
            name_field=args.name_field,
            reference_field=args.reference_field,
            organisation=args.organisation,
            crs=args.crs,
            stage=stage,
        )
    except LoadError as err:
        return _fail(str(err))
    if report.loaded == 0:
        print(report.summary(), file=sys.stderr)
        return _fail(f"nothing in {args.file} could be loaded", 1)
    frame = report.frame
    if args.append and cache.entry(args.dataset):
        import geopandas as gpd
        import pandas as pd

        previous = cache.read(args.dataset)
        clash = set(previous["entity"]) & set(frame["entity"])
        if clash:
            return _fail(f"{len(clash)} entity ids of {args.file} are already in {args.dataset} (e.g. {sorted(clash)[0]}); use --replace")
        frame = gpd.GeoDataFrame(pd.concat([previous, frame], ignore_index=True), crs=4326)
    elif cache.entry(args.dataset) and not args.replace:
        return _fail(f"{args.dataset} is already cached; say --replace to replace it or --append to add to it")
    coverage, note = None, None
    if args.coverage and args.coverage.lower() == ENGLAND:
        note = "England (said by --coverage england)"
    elif args.coverage:
        try:
            coverage = read_layer_file(args.coverage, "coverage", crs=args.crs).frame.union_all()
        except LoadError as err:
            return _fail(f"--coverage: {err}")
        note = f"the area in {Path(args.coverage).name} (--coverage)"
    elif args.append and cache.entry(args.dataset):
        coverage, note = cache.coverage(args.dataset), cache.entry(args.dataset).get("coverage_note")
    else:
        coverage, note = default_coverage(cache, args.organisation)
    stage("writing")
    try:
        entry = cache.write(args.dataset, frame, source=report.source, coverage=coverage, coverage_note=note)
    except CacheError as err:
        return _fail(str(err))
    stage("done")
    print(report.summary())
    print(f"{args.dataset} covers {describe(entry)}: {HOW_TO_SET}")
    return 0


def _age(stamp: str | None) -> str:
    if not stamp:
        return "never"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def cmd_list(args) -> int:
    from datasets.coverage import describe
    from datasets.sync import is_stale

    manifest = _cache().manifest()
    hours = get_settings().stale_after_hours
    for entry in manifest.values():  # worked out now, by the one rule, not the flag the last sync wrote
        entry["stale"] = is_stale(entry, stale_after_hours=hours)
        entry["covers"] = describe(entry)
    if args.json:
        json.dump(manifest, sys.stdout, indent=1)
        print()
        return 0
    if not manifest:
        print("the cache is empty: run 'redline datasets load-samples', 'redline datasets load FILE' or 'redline datasets sync'")
        return 0
    print(f"{'dataset':40} {'features':>9} {'age':>6} {'stale':>5}  source")
    for name, entry in sorted(manifest.items()):
        source = entry.get("source") or {}
        origin = source.get("url") or source.get("path") or source.get("type", "")
        error = f"  (last refresh failed: {entry['last_error']['message']})" if entry.get("last_error") else ""
        stale = "yes" if entry["stale"] else "no"
        print(f"{name:40} {entry.get('features', 0):>9} {_age(entry.get('loaded_at')):>6} {stale:>5}  {origin}{error}")
        print(f"{'':40} covers {entry['covers']}")
    return 0


def cmd_load_samples(args) -> int:
    from datasets.samples import load_samples

    loaded = load_samples(_cache(), only_missing=args.missing)
    for name, count in loaded.items():
        print(f"{name}: {count}")
    print(f"loaded {len(loaded)} sample datasets into {get_settings().data_dir}")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


def cmd_serve(args) -> int:
    from .keys import KeyStore, KeyStoreError
    from .serve import serve

    if args.check_processes is not None:  # read by every worker's settings (they inherit the environment)
        os.environ["REDLINE_CHECK_PROCESSES"] = str(args.check_processes)
        get_settings.cache_clear()
    if not _is_loopback(args.host) and not args.insecure:  # every worker then refuses requests if the keys go
        os.environ["REDLINE_REQUIRE_KEYS"] = "true"
        get_settings.cache_clear()
    settings = get_settings()
    try:
        keyed = KeyStore(settings.data_dir).any_active()
    except KeyStoreError as err:
        return _fail(str(err))
    if not keyed:
        if not _is_loopback(args.host) and not args.insecure:
            return _fail(
                f"refusing to serve on {args.host} with no API keys: anyone could call it. "
                "Create keys with 'redline keys create --name N --scope check', or pass --insecure"
            )
        logging.getLogger("redline").warning("no API keys configured: the service is open to every caller (development mode)")
    try:
        return serve(args.host, args.port, args.workers, args.log_level)
    except OSError as err:  # the port is taken, or the address is not this machine's
        return _fail(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}")


def cmd_keys(args) -> int:
    from .keys import KeyStore, KeyStoreError

    try:
        return _keys(KeyStore(get_settings().data_dir), args)
    except KeyStoreError as err:
        return _fail(str(err))


def _keys(store, args) -> int:
    if args.keys_command == "create":
        key_id, token = store.create(args.name, args.scope)
        print(f"key {key_id} for {args.name} ({', '.join(args.scope)}); it is shown only now:\n{token}")
    elif args.keys_command == "revoke":
        if not store.revoke(args.key):
            return _fail(f"no active key has the id or name {args.key!r}")
        print(f"revoked {args.key}")
    else:
        for key in store.list():
            state = f"revoked {key['revoked_at']}" if key["revoked_at"] else "active"
            print(f"{key['id']}  {key['name']:24} {','.join(key['scopes']):30} {state}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redline", description="Planning constraints checks and red-line boundaries.")
    parser.add_argument("--version", action="version", version=f"redline {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="check a site (GeoJSON file, or - for stdin) against the cached layers")
    check.add_argument("site")
    check.add_argument("--format", choices=[f.value for f in Format], default="native")
    check.add_argument("--tolerance-m2", type=_tolerance, default=None, help="overlaps below this many m² count as nearby (default: the tolerance_m2 setting, 0.5)")
    check.add_argument("--tolerance-pct", type=_tolerance, default=None, help="overlaps below this %% of the site count as nearby (default: the tolerance_pct setting, 0.1)")
    check.add_argument("--council", help="add this council's granular article 4 keys (e.g. lambeth)")
    check.set_defaults(func=cmd_check)

    datasets = commands.add_parser("datasets", help="the layer cache").add_subparsers(dest="datasets_command", required=True)
    load = datasets.add_parser(
        "load",
        help="load a GIS file (GeoJSON, GeoPackage, Shapefile or .zip, FlatGeobuf, GeoParquet, or CSV with a WKT column "
        "such as geometry, WKT, geom or the_geom, or longitude/latitude or easting/northing columns)",
    )
    load.add_argument("file")
    load.add_argument("--dataset", required=True, help="the dataset name, e.g. conservation-area or a local one")
    load.add_argument("--layer")
    load.add_argument("--id-field")
    load.add_argument("--name-field")
    load.add_argument("--reference-field")
    load.add_argument("--organisation", help="organisation entity to record, e.g. 192")
    load.add_argument("--crs", help="the file's EPSG code when it does not say (27700 for British National Grid)")
    load.add_argument(
        "--coverage",
        help="the area this layer is complete for: a boundary file (e.g. the council's district), or 'england'. "
        "Outside it checks answer unknown rather than 'not'. Without it: the --organisation's planning-authority "
        "boundary when the local-planning-authority dataset is loaded, else nowhere (the layer answers only "
        "where its features meet a site)",
    )
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--replace", action="store_true")
    mode.add_argument("--append", action="store_true")
    load.set_defaults(func=cmd_load)
    listing = datasets.add_parser("list", help="cached datasets with count, source and age")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)
    samples = datasets.add_parser("load-samples", help="load the bundled sample layers")
    samples.add_argument("--missing", action="store_true", help="only those not cached yet")
    samples.set_defaults(func=cmd_load_samples)
    try:
        from .cli_sync import add_sync_parser
    except ModuleNotFoundError:
        pass
    else:
        add_sync_parser(datasets)

    serve = commands.add_parser("serve", help="serve the HTTP API and the widget")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--check-processes",
        type=_positive_int,
        default=None,
        help="check processes per worker, forked from it and sharing its index in memory (default 1; REDLINE_CHECK_PROCESSES)",
    )
    serve.add_argument("--insecure", action="store_true", help="allow serving beyond loopback with no API keys")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=cmd_serve)

    from .cli_batch import add_batch_parser
    from .cli_deliveries import add_deliveries_parser

    add_batch_parser(commands)
    add_deliveries_parser(commands)

    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", required=True, help="check, boundary:write, officer or admin (repeatable)")
    revoke = keys.add_parser("revoke")
    revoke.add_argument("key", help="key id or name")
    keys.add_parser("list")
    for sub in (create, revoke):
        sub.set_defaults(func=cmd_keys)
    keys.choices["list"].set_defaults(func=cmd_keys)

    return parser


def _quiet_dask(record: logging.LogRecord) -> bool:
    """Dask's scheduler and nannies announce every start and stop at INFO (and set their loggers'
    levels themselves): noise to the user of ``batch``, so only their warnings reach the terminal."""
    return record.levelno >= logging.WARNING or not record.name.startswith(("distributed", "bokeh", "tornado"))


def _say_data_folder() -> None:
    """Every command names the data folder it answers from, on stderr (stdout stays the answer)."""
    from datasets.data_dir import default_data_dir

    folder = Path(get_settings().data_dir).expanduser().resolve()
    how = "the default for this user" if folder == default_data_dir().resolve() else "from REDLINE_DATA_DIR"
    print(f"redline: data folder {folder} ({how})", file=sys.stderr)
    here = Path(".redline").resolve()
    if here != folder and (here / "manifest.json").is_file():
        print(
            f"redline: the layers in {here} are not used by this command; "
            f"to use them, set REDLINE_DATA_DIR={here}",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_dask)
    try:
        _say_data_folder()
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `redline check site.geojson | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
