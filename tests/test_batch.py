"""Batch checks on Dask: the service's answers for every site of a GIS file, whatever goes wrong.

The sites are drawn over the bundled sample layers (inside features and across their edges), so
many keys intersect. The reference for every row is ``ConstraintIndex.check`` run in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from constraints.batch import (
    BatchError,
    BatchOptions,
    BatchRunError,
    hilbert_distance,
    partition,
    parts_dir,
    read_sites,
    run_batch,
)
from constraints.index import ConstraintIndex, Tolerance
from constraints.site import parse_site
from datasets.catalogue import load_catalogue
from datasets.crs import to_bng

N_SITES = 400


def _sites(cache, n: int, seed: int) -> np.ndarray:
    """Boxes of 20 m to 300 m around points inside sample features and on their outlines."""
    rng = np.random.default_rng(seed)
    anchors = []
    for name in cache.datasets():
        geometry = cache.read(name).geometry.to_numpy()
        anchors.append(shapely.point_on_surface(geometry))
        outlines = shapely.get_coordinates(shapely.boundary(geometry[shapely.area(geometry) > 0]))
        if len(outlines):
            anchors.append(shapely.points(outlines[rng.integers(0, len(outlines), len(geometry))]))
    anchors = np.concatenate(anchors)
    xy = shapely.get_coordinates(anchors[rng.integers(0, len(anchors), n)])
    xy += rng.uniform(-0.0005, 0.0005, (n, 2))
    half = rng.uniform(0.0002, 0.003, n)
    return shapely.box(xy[:, 0] - half, xy[:, 1] - half * 0.6, xy[:, 0] + half, xy[:, 1] + half * 0.6)


@pytest.fixture(scope="module")
def index(sample_cache):
    return ConstraintIndex.from_cache(sample_cache, load_catalogue())


@pytest.fixture(scope="module")
def sites(sample_cache):
    geometry = _sites(sample_cache, N_SITES, 7)
    return gpd.GeoDataFrame({"title_no": [f"T{i:05d}" for i in range(N_SITES)]}, geometry=geometry, crs=4326)


@pytest.fixture(scope="module")
def cluster():
    """One local Dask cluster for the module: 2 worker processes of 1 thread, as the CLI starts."""
    from dask.distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as local:
        yield local


def _expected(index, geometry, ids, tolerance=Tolerance(), keys=None) -> pd.DataFrame:
    rows = []
    for ident, geom in zip(ids, geometry, strict=True):
        answer = index.check(parse_site(geom), tolerance=tolerance, keys=keys)
        for c in answer["constraints"]:
            rows.append(
                {
                    "id": ident,
                    "key": c["key"],
                    "status": c["status"],
                    "entities": [int(e["entity"]) for e in c["entities"]],
                    "names": [e["name"] for e in c["entities"]],
                    "overlap_m2": [e["overlap_m2"] for e in c["entities"]],
                    "site_area_m2": answer["site"]["area_m2"],
                }
            )
    return pd.DataFrame(rows)


def _normalise(frame: pd.DataFrame, id_field: str) -> list[tuple]:
    out = []
    for r in frame.itertuples(index=False):
        r = r._asdict()
        out.append(
            (
                str(r[id_field] if id_field in r else r["id"]),
                r["key"],
                r["status"],
                tuple(int(e) for e in r["entities"]),
                tuple(r["names"]),
                tuple(float(v) for v in r["overlap_m2"]),
                float(r["site_area_m2"]),
            )
        )
    return sorted(out)


def _results(path) -> pd.DataFrame:
    if str(path).endswith(".csv"):
        frame = pd.read_csv(path, dtype={"title_no": str})
        for column in ("entities", "names", "overlap_m2"):
            frame[column] = frame[column].map(json.loads)
        return frame
    return gpd.read_parquet(path)


def _options(sample_cache, **fields) -> BatchOptions:
    """A batch over the sample layers, the sites keyed by their title number, without a progress bar."""
    return BatchOptions(cache_root=sample_cache.root, id_field="title_no", progress=False, **fields)


def _batch(source, out, sample_cache, **fields):
    return run_batch(source, out, _options(sample_cache), **fields)


def _assert_the_services_answers(out, index, geometry, ids, keys=None) -> pd.DataFrame:
    """Every row of the batch's result file is what ``ConstraintIndex.check`` answers for that site."""
    result = _results(out)
    assert _normalise(result, "title_no") == _normalise(_expected(index, geometry, ids, keys=keys), "id")
    return result


def test_every_row_is_the_services_answer_for_that_site(tmp_path, sample_cache, sites, index, cluster):
    source = tmp_path / "titles.parquet"
    sites.to_parquet(source)
    out = tmp_path / "results.parquet"
    report = _batch(source, out, sample_cache, scheduler=cluster.scheduler_address, partition_size=60)

    result = _assert_the_services_answers(out, index, sites.geometry, sites["title_no"])
    assert report.checked == N_SITES and report.errors == 0 and report.rows == len(result)
    assert report.parts == 7 and not parts_dir(out).exists()
    # every catalogue key is answered for every site, and some sites really do meet designations
    keys = {c.key for c in index.catalogue.constraints}
    assert result.groupby("title_no")["key"].apply(set).map(lambda found: keys <= found).all()
    assert (result["status"] == "intersects").sum() > 100
    # GeoParquet with the checked site on every row, in lon/lat
    assert result.crs.to_epsg() == 4326
    first = result[result["title_no"] == "T00003"].geometry.iloc[0]
    assert first.equals(parse_site(sites.geometry.iloc[3]).geometry)
    assert pd.read_csv(report.errors_path).empty


def test_every_input_format_and_crs_reads_the_same_sites(tmp_path, sites):
    subset = sites.iloc[:50]
    paths = {
        "gpkg": tmp_path / "s.gpkg",
        "geojson": tmp_path / "s.geojson",
        "shp": tmp_path / "s.shp",
        "fgb": tmp_path / "s.fgb",
    }
    for driver, path in paths.items():
        # FlatGeobuf's spatial index would reorder the features; the row numbers checked below are file order
        options = {"SPATIAL_INDEX": "NO"} if driver == "fgb" else {}
        subset.to_file(
            path,
            driver={"gpkg": "GPKG", "geojson": "GeoJSON", "shp": "ESRI Shapefile", "fgb": "FlatGeobuf"}[
                driver
            ],
            **options,
        )
    csv = tmp_path / "s.csv"
    pd.DataFrame(
        {"title_no": subset["title_no"], "geometry": subset.geometry.to_wkt(rounding_precision=-1)}
    ).to_csv(csv, index=False)
    bng = tmp_path / "s-27700.gpkg"
    gpd.GeoDataFrame(subset[["title_no"]], geometry=to_bng(subset.geometry.to_numpy()), crs=27700).to_file(
        bng
    )
    for path in [*paths.values(), csv, bng]:
        table = read_sites(path, id_field="title_no")
        assert table.ids.tolist() == subset["title_no"].tolist(), path.name
        assert table.rows.tolist() == list(range(1, 51))
        # British National Grid comes back through OSTN15 to within a centimetre (1e-7 degrees)
        gap = shapely.hausdorff_distance(table.geometry, subset.geometry.to_numpy())
        assert gap.max() < (1e-7 if path is bng else 1e-9), path.name


def test_british_national_grid_input_without_a_scheduler_writes_csv(tmp_path, sample_cache, sites, index):
    subset = sites.iloc[:120]
    source = tmp_path / "titles-27700.shp"
    gpd.GeoDataFrame(subset[["title_no"]], geometry=to_bng(subset.geometry.to_numpy()), crs=27700).to_file(
        source
    )
    out = tmp_path / "results.csv"
    keys = ["listed", "designated.conservationArea", "nature.ASNW", "greenBelt"]
    report = _batch(source, out, sample_cache, keys=keys, workers=1, partition_size=50)

    read = read_sites(source, id_field="title_no")  # the sites as the batch read them: OSTN15 to lon/lat
    result = _assert_the_services_answers(out, index, read.geometry, read.ids, keys=keys)
    assert set(result["key"]) == set(keys) and report.rows == 120 * 4
    assert "geometry" not in result.columns


def test_bad_rows_are_listed_with_their_reasons_and_do_not_stop_the_run(
    tmp_path, sample_cache, sites, index, cluster
):
    good = sites.iloc[:30].copy()
    bad = {
        "EMPTY": shapely.Polygon(),
        "BOWTIE": shapely.Polygon(
            [(-1.60, 55.60), (-1.59, 55.61), (-1.59, 55.60), (-1.60, 55.61), (-1.60, 55.60)]
        ),
        "SWAPPED": shapely.box(55.60, -1.61, 55.61, -1.60),
        "METRES": shapely.box(420000, 620000, 420100, 620100),
        "PARIS": shapely.box(2.30, 48.85, 2.31, 48.86),
        "LINE": shapely.LineString([(-1.60, 55.60), (-1.59, 55.61)]),
    }
    frame = pd.concat(
        [good, gpd.GeoDataFrame({"title_no": list(bad)}, geometry=list(bad.values()), crs=4326)],
        ignore_index=True,
    )
    frame = frame.sample(frac=1.0, random_state=3).reset_index(
        drop=True
    )  # bad rows scattered among good ones
    source = tmp_path / "mixed.gpkg"
    frame.to_file(source)
    out = tmp_path / "results.parquet"
    report = _batch(source, out, sample_cache, scheduler=cluster.scheduler_address, partition_size=10)

    errors = pd.read_csv(report.errors_path, dtype={"title_no": str})
    assert list(errors.columns) == ["row", "title_no", "reason"]
    assert set(errors["title_no"]) == set(bad)
    where = dict(zip(frame["title_no"], frame.index + 1, strict=True))
    assert all(where[t] == r for t, r in zip(errors["title_no"], errors["row"], strict=True))
    reason = dict(zip(errors["title_no"], errors["reason"], strict=True))
    assert "empty" in reason["EMPTY"]
    assert "crosses itself" in reason["BOWTIE"]
    assert "swapped" in reason["SWAPPED"]
    assert "British National Grid" in reason["METRES"]
    assert "outside Great Britain" in reason["PARIS"]
    assert "line" in reason["LINE"]
    result = _assert_the_services_answers(out, index, good.geometry, good["title_no"])
    assert set(result["title_no"]) == set(good["title_no"])
    assert report.errors == len(bad) and report.checked == 30


def test_rows_off_the_grid_in_a_british_national_grid_file_are_reported(tmp_path, sample_cache, sites):
    subset = sites.iloc[:5]
    geometry = list(to_bng(subset.geometry.to_numpy())) + [shapely.box(-900000, 100000, -899900, 100100)]
    source = tmp_path / "bng.gpkg"
    gpd.GeoDataFrame({"title_no": [*subset["title_no"], "OFFGRID"]}, geometry=geometry, crs=27700).to_file(
        source
    )
    table = read_sites(source, id_field="title_no")
    assert len(table) == 5
    assert table.errors == [
        (6, "OFFGRID", "coordinates lie outside Great Britain (OSTN15 grid): is the coordinate system right?")
    ]


def test_a_worker_killed_mid_run_is_replaced_and_the_output_is_complete(tmp_path, sample_cache, index):
    from dask.distributed import Client, LocalCluster

    geometry = _sites(sample_cache, 1500, 11)
    frame = gpd.GeoDataFrame(
        {"title_no": [f"K{i}" for i in range(len(geometry))]}, geometry=geometry, crs=4326
    )
    source = tmp_path / "many.parquet"
    frame.to_parquet(source)
    out = tmp_path / "results.parquet"
    killed = {}

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
        ) as local,
        Client(local) as client,
    ):

        def kill_one(result):
            if killed:
                return
            pids = client.run(os.getpid)
            victim = next(pid for pid in pids.values() if pid != result["pid"])  # the one still busy
            killed.update(
                pid=victim,
                parts_done=len(list(parts_dir(out).glob("part-*.arrow"))),
                before=set(pids.values()),
            )
            os.kill(victim, signal.SIGKILL)

        report = _batch(
            source, out, sample_cache, scheduler=local.scheduler_address, partition_size=50, on_part=kill_one
        )
        after = set(client.run(os.getpid).values())

    assert killed and killed["parts_done"] < report.parts  # tasks were still to run when it died
    assert killed["pid"] not in after  # the nanny started a new worker process in its place
    _assert_the_services_answers(out, index, frame.geometry, frame["title_no"])
    assert report.checked == 1500 and report.errors == 0


def test_a_failed_run_leaves_no_result_and_resume_redoes_only_the_missing_parts(
    tmp_path, sample_cache, sites, index, cluster
):
    source = tmp_path / "titles.gpkg"
    sites.to_file(source)
    out = tmp_path / "results.parquet"
    out.write_bytes(b"an old result that must not pass for the new one")
    blocker = parts_dir(out) / "part-00007.arrow"
    options = _options(sample_cache, scheduler=cluster.scheduler_address, partition_size=50)

    def block_the_last_part(result):
        # a folder where the last part must go (its task is not submitted yet): it cannot be written
        blocker.mkdir(exist_ok=True)

    with pytest.raises(BatchRunError, match="--resume"):
        run_batch(source, out, options, on_part=block_the_last_part)
    assert not out.exists() and not out.with_name(out.name + ".errors.csv").exists()
    assert not list(tmp_path.glob(".results.parquet*"))  # no half-written final file either
    finished = {p.name: p.stat().st_mtime_ns for p in parts_dir(out).glob("part-*.arrow") if p.is_file()}
    assert 0 < len(finished) < 8

    with pytest.raises(BatchError, match="different input or options"):
        run_batch(source, out, options, resume=True, keys=["listed"])

    blocker.rmdir()
    report = run_batch(source, out, options, resume=True)  # the options as one object, one of them overridden
    # parts still running when the run failed may have finished since: they are reused too
    assert report.parts == 8 and len(finished) <= report.skipped_parts < 8
    assert not parts_dir(out).exists()  # the parts made way for the one final file
    _assert_the_services_answers(out, index, sites.geometry, sites["title_no"])


def test_partitions_are_spatially_compact_and_deterministic(sample_cache):
    geometry = _sites(sample_cache, 2000, 5)
    parts = partition(geometry, 100)
    assert sorted(np.concatenate(parts).tolist()) == list(range(2000))
    assert [p.tolist() for p in parts] == [p.tolist() for p in partition(geometry, 100)]

    def spread(groups):
        return np.mean([shapely.area(shapely.envelope(shapely.union_all(geometry[g]))) for g in groups])

    shuffled = np.random.default_rng(0).permutation(2000)
    assert spread(parts) < spread([shuffled[i : i + 100] for i in range(0, 2000, 100)]) / 20
    # the curve visits the four quadrants of a square in order, without jumps
    assert hilbert_distance(
        np.array([0.0, 0.0, 1.0, 1.0]), np.array([0.0, 1.0, 1.0, 0.0]), (0, 0, 1, 1), 1
    ).tolist() == [0, 1, 2, 3]


def _cli(argv, data_dir, monkeypatch, capsys):
    from api.cli_batch import add_batch_parser
    from api.settings import get_settings

    monkeypatch.setenv("REDLINE_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    parser = argparse.ArgumentParser(prog="redline")
    add_batch_parser(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
        code = args.func(args)
    finally:
        get_settings.cache_clear()
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_command_checks_a_file_and_refuses_bad_input_with_exit_2(
    tmp_path, sample_cache, sites, cluster, monkeypatch, capsys
):
    source = tmp_path / "titles.geojson"
    sites.iloc[:40].to_file(source, driver="GeoJSON")
    out = tmp_path / "out.parquet"
    code, text = _cli(
        ["batch", str(source), "--out", str(out), "--scheduler", cluster.scheduler_address, "--no-progress"],
        sample_cache.root,
        monkeypatch,
        capsys,
    )
    assert code == 0, text
    assert "40 of 40 sites checked" in text
    result = gpd.read_parquet(out)
    assert set(result["row"]) == set(range(1, 41))  # no --id-field: the row number names each site

    refusals = {
        "does not exist": ["batch", str(tmp_path / "nope.gpkg"), "--out", str(out)],
        "is not a column": ["batch", str(source), "--out", str(out), "--id-field", "uprn"],
        "unknown key": ["batch", str(source), "--out", str(out), "--keys", "listed", "floodd"],
        ".parquet (GeoParquet) or .csv": ["batch", str(source), "--out", str(tmp_path / "out.xlsx")],
        "tcp://HOST:8786": ["batch", str(source), "--out", str(out), "--scheduler", "localhost"],
        "at least 1": ["batch", str(source), "--out", str(out), "--workers", "0"],
    }
    for message, argv in refusals.items():
        code, text = _cli(argv, sample_cache.root, monkeypatch, capsys)
        assert code == 2 and message in text, (message, text)
    code, text = _cli(
        ["batch", str(source), "--out", str(out)], tmp_path / "empty-cache", monkeypatch, capsys
    )
    assert code == 2 and "empty" in text
