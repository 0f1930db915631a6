"""The synthetic national layers behind the benchmarks, and the check benchmark itself.

The generator must be deterministic (a benchmark compares runs), sized by ``scale``, and produce
what the platform would: valid EPSG:4326 geometry inside England, the platform's columns, the
fields the catalogue reads. The benchmark must run end to end and print one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Geod

from benchmarks import synth
from datasets.cache import BASE_COLUMNS, LayerCache
from datasets.crs import to_bng

REPO = Path(__file__).resolve().parents[1]
SCALE = 0.002


@pytest.fixture(scope="module")
def layers():
    return synth.generate(SCALE, seed=42)


def _geoms(frame) -> np.ndarray:
    return np.asarray(frame.geometry.values, dtype=object)


def test_same_seed_gives_identical_layers_and_another_seed_does_not(layers):
    again = synth.generate(SCALE, seed=42)
    other = synth.generate(SCALE, seed=43)
    assert list(again) == list(layers)
    for name, frame in layers.items():
        pd.testing.assert_frame_equal(frame.drop(columns="geometry"), again[name].drop(columns="geometry"))
        assert shapely.to_wkb(_geoms(frame)).tolist() == shapely.to_wkb(_geoms(again[name])).tolist(), name
    assert (
        shapely.to_wkb(_geoms(other["conservation-area"])).tolist()
        != shapely.to_wkb(_geoms(layers["conservation-area"])).tolist()
    )


def test_counts_are_the_national_counts_times_scale(layers):
    assert synth.counts_for(1.0) == synth.NATIONAL_COUNTS
    assert sum(synth.NATIONAL_COUNTS.values()) > 1_400_000
    assert {name: len(frame) for name, frame in layers.items()} == synth.counts_for(SCALE)
    doubled = synth.counts_for(2 * SCALE)
    for name, count in synth.counts_for(SCALE).items():
        if count >= 20:  # the smallest datasets are floored at one feature
            assert doubled[name] == pytest.approx(2 * count, abs=1), name
    with pytest.raises(ValueError, match="scale"):
        synth.counts_for(0)


def test_geometry_is_valid_and_shaped_like_each_dataset(layers):
    for name, frame in layers.items():
        geoms = _geoms(frame)
        assert frame.crs.to_epsg() == 4326
        assert shapely.is_valid(geoms).all(), name
        assert not shapely.is_empty(geoms).any(), name
        kinds = set(shapely.get_type_id(geoms).tolist())
        assert kinds == ({0} if name == "listed-building" else kinds & {3, 6}), (name, kinds)
    vertices = {name: shapely.get_num_coordinates(_geoms(frame)) for name, frame in layers.items()}
    # a polygon of n vertices has n + 1 coordinates (the ring is closed)
    assert vertices["conservation-area"].min() >= 21 and vertices["conservation-area"].max() <= 201
    for big in ("area-of-outstanding-natural-beauty", "national-park"):
        assert (vertices[big] >= 10_000).all() and (vertices[big] <= 100_500).all(), big
    river_bands = vertices["flood-risk-zone"] >= 50_000
    assert river_bands.sum() >= 2
    assert (vertices["flood-risk-zone"][~river_bands] <= 41).all()


def test_every_feature_lies_in_england_within_ostn15_cover(layers):
    near_england = synth.ENGLAND.buffer(5_000)
    for name, frame in layers.items():
        minx, miny, maxx, maxy = frame.total_bounds
        assert -6.0 < minx and maxx < 2.0 and 49.8 < miny and maxy < 56.0, name
        bng = to_bng(_geoms(frame))  # raises OutsideGridError outside OSTN15 cover
        inside = shapely.contains(near_england, shapely.point_on_surface(bng))
        assert inside.all(), f"{name}: {np.count_nonzero(~inside)} features off England"


def test_frames_carry_the_platform_columns_and_dataset_fields(layers):
    entities = np.concatenate([frame["entity"].to_numpy() for frame in layers.values()])
    assert len(np.unique(entities)) == len(entities), "entity numbers are unique across datasets"
    for name, frame in layers.items():
        assert list(frame.columns[: len(BASE_COLUMNS)]) == BASE_COLUMNS
        assert frame.columns[-1] == "geometry"
        assert frame["entity"].dtype == np.int64
        assert (frame["dataset"] == name).all()
        assert (frame["end-date"] == "").all()
        assert frame["start-date"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    assert set(layers["flood-risk-zone"]["flood-risk-level"]) == {"2", "3"}
    assert set(layers["listed-building"]["listed-building-grade"]) == {"I", "II*", "II"}
    assert layers["national-park"]["entity"].iloc[0] == 520_000
    assert synth.NATIONAL_PARKS[520_007 - 520_000][0] == "The Broads"


def test_sites_are_small_polygons_where_features_are_dense(layers):
    sites = synth.generate_sites(60, layers, seed=5)
    assert shapely.to_wkb(sites).tolist() == shapely.to_wkb(synth.generate_sites(60, layers, seed=5)).tolist()
    geod = Geod(ellps="WGS84")
    for site in sites:
        assert site.geom_type == "Polygon" and site.is_valid
        assert 4 <= len(site.exterior.coords) - 1 <= 60
        assert 50 * 0.98 <= abs(geod.geometry_area_perimeter(site)[0]) <= 50_000 * 1.02
    everything = np.concatenate([_geoms(frame) for frame in layers.values()])
    tree = shapely.STRtree(everything)
    site_index, _ = tree.query(np.asarray(sites, dtype=object), predicate="intersects")
    assert len(np.unique(site_index)) >= 0.6 * len(sites)


def test_layers_round_trip_through_the_layer_cache(layers, tmp_path):
    cache = LayerCache(tmp_path / "cache")
    manifest = synth.write_to_cache(layers, cache, scale=SCALE, seed=42)
    assert set(manifest) == set(layers)
    entry = manifest["flood-risk-zone"]
    assert entry["source"] == {"type": "synthetic", "scale": SCALE, "seed": 42}
    assert entry["features"] == len(layers["flood-risk-zone"])
    back = cache.read("conservation-area")
    assert back["entity"].tolist() == layers["conservation-area"]["entity"].tolist()


def test_bench_cache_is_generated_once_per_scale_and_seed(monkeypatch, tmp_path):
    monkeypatch.setattr(synth, "BENCH_DIR", tmp_path)
    first = synth.cached_layers(0.001, seed=3)
    marker = first / synth.MARKER
    stamp = marker.stat().st_mtime_ns
    assert synth.cached_layers(0.001, seed=3) == first and marker.stat().st_mtime_ns == stamp
    assert json.loads(marker.read_text())["features"] == synth.counts_for(0.001)
    assert synth.cached_layers(0.001, seed=4) != first


def _run(args, env_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "REDLINE_BENCH_DIR": str(env_dir)}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )


def test_synth_cli_fills_a_cache_folder_and_refuses_a_bad_scale(tmp_path):
    done = _run(["benchmarks.synth", "--scale", "0.001", "--out", str(tmp_path / "out")], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["features"] == sum(synth.counts_for(0.001).values())
    assert set(LayerCache(tmp_path / "out").datasets()) == set(synth.NATIONAL_COUNTS)
    bad = _run(["benchmarks.synth", "--scale", "-1", "--out", str(tmp_path / "bad")], tmp_path)
    assert bad.returncode == 2 and "scale" in bad.stderr


def test_check_benchmark_runs_end_to_end_and_prints_one_json_line(tmp_path):
    done = _run(["benchmarks.check", "--scale", str(SCALE), "--sites", "20"], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    for key in ("scale", "features", "load_s", "rss_mb", "check_p50_us", "check_p99_us", "check_max_us",
                "checks_per_s", "baseline", "baseline_p50_us", "speedup_p50"):  # fmt: skip
        assert key in result, key
    assert result["scale"] == SCALE and result["baseline"] == "geopandas-sjoin"
    assert result["features"] == sum(synth.counts_for(SCALE).values())
    assert result["sites"] == 20 and result["baseline_sites"] == 20
    # the index and the naive baseline find exactly the same entities for every site
    assert result["baseline_agreement"] == 1.0


@pytest.mark.parametrize("driver", ["httpx", "wrk"])
def test_http_benchmark_serves_with_redline_serve_and_prints_one_json_line(tmp_path, driver):
    if driver == "wrk" and shutil.which("wrk") is None:
        if os.environ.get("CI") == "true":  # .ci/system-deps installs it: missing here is a broken setup
            pytest.fail("wrk is not installed: run .ci/system-deps (apt-get install wrk)")
        pytest.skip("wrk is not installed (the benchmark then uses its httpx client, tested beside this)")
    done = _run(["benchmarks.http", "--scale", "0", "--seconds", "2", "--warmup", "1", "--sites", "40", "--driver", driver], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    for key in ("rps", "p50_ms", "p99_ms", "errors", "workers", "concurrency", "in_process_p50_us", "share_of_in_process_2_core_rate"):
        assert key in result, key
    assert result["errors"] == 0 and result["workers"] == 2 and result["driver"] == driver
    assert result["rps"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]


def test_batch_benchmark_checks_a_sample_of_its_rows_against_the_services_check(tmp_path):
    done = _run(["benchmarks.batch", "--scale", str(SCALE), "--sites", "60", "--workers", "1", "--no-single",
                 "--baseline-sites", "10", "--sample", "25"], tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    assert result["sites"] == 60 and result["bad_rows"] == 0 and result["sites_per_s"] > 0
    assert result["sample_sites"] == 25 and result["sample_identical"] == 25 and result["agreement"] == 1.0


@pytest.mark.parametrize("benchmark", ["benchmarks.check", "benchmarks.batch", "benchmarks.http"])
def test_every_benchmark_refuses_a_scale_it_cannot_build_with_a_usage_error(tmp_path, benchmark):
    bad = _run([benchmark, "--scale", "50"], tmp_path)
    assert bad.returncode == 2 and "scale must be in (0, 25], got 50.0" in bad.stderr
    assert "Traceback" not in bad.stderr
