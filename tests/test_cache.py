"""The layer cache: one GeoParquet file per dataset (EPSG:4326) plus a manifest, written atomically.

A load killed at any moment leaves the previous good copy readable and the manifest consistent with it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import shapely

from datasets.cache import BASE_COLUMNS, CacheError, LayerCache

REPO = Path(__file__).resolve().parents[1]


def outlines(real_data: Path, rows: int = 40) -> gpd.GeoDataFrame:
    """Real listed-building outlines (platform flattened CSV, snake_case headers) as a platform frame."""
    table = pd.read_csv(
        real_data / "digital-land-python__listed-building-outline-flattened.csv",
        dtype=str,
        keep_default_na=False,
    )
    table = table[table["geometry"] != ""].head(rows)
    table.columns = [c.replace("_", "-") for c in table.columns]
    geometry = shapely.from_wkt(table.pop("geometry").to_numpy())
    return gpd.GeoDataFrame(table.drop(columns=["point"]), geometry=geometry, crs=4326)


def test_a_written_layer_reads_back_with_the_platform_columns_and_geometry(tmp_path, real_data):
    frame = outlines(real_data)
    cache = LayerCache(tmp_path)
    cache.write(
        "listed-building-outline", frame, source={"type": "local", "path": "x.csv", "sha256": "0" * 64}
    )

    back = cache.read("listed-building-outline")

    assert list(back.columns[: len(BASE_COLUMNS)]) == BASE_COLUMNS
    assert back.columns[-1] == "geometry"
    assert {"listed-building-grade", "documentation-url"} <= set(back.columns)
    assert back.crs.to_epsg() == 4326
    assert back["entity"].dtype == np.int64
    assert back["entity"].tolist() == [int(e) for e in frame["entity"]]
    assert back["listed-building-grade"].tolist() == frame["listed-building-grade"].tolist()
    assert back["name"].tolist() == frame["name"].tolist()
    assert shapely.equals_exact(back.geometry.to_numpy(), frame.geometry.to_numpy(), tolerance=0).all()
    # attributes are strings, '' for none, as the platform publishes them
    assert (back["end-date"] == "").all()


def test_the_manifest_says_what_each_dataset_is_and_where_it_came_from(tmp_path, real_data):
    frame = outlines(real_data)
    cache = LayerCache(tmp_path)
    source = {
        "type": "platform",
        "url": "https://files.planning.data.gov.uk/dataset/listed-building-outline.parquet",
    }
    cache.write("listed-building-outline", frame, source=source, etag='"abc123"')

    on_disk = json.loads((tmp_path / "manifest.json").read_text())["datasets"]["listed-building-outline"]
    assert on_disk == cache.entry("listed-building-outline")
    assert on_disk["dataset"] == "listed-building-outline"
    assert on_disk["source"] == source
    assert on_disk["features"] == len(frame)
    assert on_disk["bounds"] == pytest.approx(list(frame.total_bounds))
    assert on_disk["etag"] == '"abc123"'
    assert on_disk["entry_date"] == max(frame["entry-date"])
    loaded_at = pd.Timestamp(on_disk["loaded_at"])
    assert abs((pd.Timestamp.now(tz="UTC") - loaded_at).total_seconds()) < 120
    assert cache.datasets() == ["listed-building-outline"]


def test_a_failed_write_leaves_the_previous_copy_current(tmp_path, real_data):
    frame = outlines(real_data)
    cache = LayerCache(tmp_path)
    cache.write("listed-building-outline", frame, source={"type": "test"})
    before = cache.entry("listed-building-outline")
    files_before = sorted(p.name for p in (tmp_path / "layers").iterdir())

    with pytest.raises(CacheError, match="EPSG:4326"):
        cache.write("listed-building-outline", frame.to_crs(27700).head(3), source={"type": "test"})
    broken = frame.head(3).assign(entity="not a number")
    with pytest.raises(ValueError):
        cache.write("listed-building-outline", broken, source={"type": "test"})

    assert cache.entry("listed-building-outline") == before
    assert len(cache.read("listed-building-outline")) == len(frame)
    assert sorted(p.name for p in (tmp_path / "layers").iterdir()) == files_before  # no temporary left


def test_a_dataset_name_cannot_reach_outside_the_cache_folder(tmp_path, real_data):
    cache = LayerCache(tmp_path / "cache")
    for name in ("../escaped", "layers/../../x", ".hidden", "a.b", "", "-rf"):
        with pytest.raises(CacheError, match="not a usable dataset name"):
            cache.write(name, outlines(real_data, rows=2), source={"type": "test"})
    assert [p.name for p in tmp_path.iterdir()] == ["cache"] or not any(tmp_path.iterdir())
    assert cache.manifest() == {}
    cache.write("area_of_special_character-2", outlines(real_data, rows=2), source={"type": "test"})


def test_a_recorded_failure_keeps_the_last_good_copy_serving(tmp_path, real_data):
    frame = outlines(real_data)
    cache = LayerCache(tmp_path)
    cache.write("listed-building-outline", frame, source={"type": "test"})
    good = cache.entry("listed-building-outline")

    cache.record_failure("listed-building-outline", "HTTP 503 from the platform")

    entry = cache.entry("listed-building-outline")
    assert entry["last_error"]["message"] == "HTTP 503 from the platform"
    assert entry["last_error"]["at"]
    assert {k: entry[k] for k in ("file", "features", "loaded_at", "source")} == {
        k: good[k] for k in ("file", "features", "loaded_at", "source")
    }
    assert len(cache.read("listed-building-outline")) == len(frame)
    # a dataset that never loaded keeps its error but is not reported as cached
    cache.record_failure("conservation-area", "timed out")
    assert cache.datasets() == ["listed-building-outline"]
    with pytest.raises(CacheError, match="not in the cache"):
        cache.read("conservation-area")


def test_superseded_copies_are_swept_keeping_the_one_before(tmp_path, real_data):
    frame = outlines(real_data, rows=10)
    cache = LayerCache(tmp_path)
    layers = tmp_path / "layers"
    files = []
    for n in range(1, 5):
        entry = cache.write("listed-building-outline", frame.head(n), source={"type": "test"})
        files.append(entry["file"])
        derived = cache.derived_path("listed-building-outline", entry["version"], "pieces.parquet")
        derived.write_bytes(b"derived from this version")
        time.sleep(0.01)  # distinct modification times

    on_disk = sorted(p.name for p in layers.glob("listed-building-outline.*.parquet"))
    assert on_disk == sorted(files[-2:]), "the current copy and the one before it stay, older ones go"
    versions = {cache.entry("listed-building-outline")["version"]}
    derived_left = {p.name.split(".")[1] for p in (tmp_path / "derived").iterdir()}
    assert versions <= derived_left and len(derived_left) <= 2
    assert len(cache.read("listed-building-outline")) == 4

    cache.write("conservation-area", frame.head(1), source={"type": "test"})
    assert len(list(layers.glob("listed-building-outline.*.parquet"))) == 2, "other datasets are left alone"


# -- killed mid-load ---------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np, shapely, geopandas as gpd
    from datasets.cache import LayerCache

    root, generation = sys.argv[1], int(sys.argv[2])
    n = 50_000
    rng = np.random.default_rng(generation)
    points = shapely.points(rng.uniform(-2.5, -2.2, n), rng.uniform(51.3, 51.45, n))
    cache = LayerCache(root)
    print("ready", flush=True)
    while True:
        rows = n - generation  # each generation has its own size, so a mix would show
        frame = gpd.GeoDataFrame(
            {"entity": np.arange(rows), "name": "feature", "generation": str(generation)},
            geometry=points[:rows], crs=4326,
        )
        cache.write("tree", frame, source={"type": "test"}, metadata={"generation": generation})
        generation += 1
    """
)


def assert_whole_copy(cache: LayerCache) -> int:
    """The manifest names one complete copy whose content matches its entry; returns its generation."""
    json.loads(cache.manifest_path.read_text())  # never a half-written manifest
    entry = cache.entry("tree")
    frame = cache.read("tree")
    generation = entry["metadata"]["generation"]
    assert len(frame) == entry["features"] == 50_000 - generation
    assert set(frame["generation"]) == {str(generation)}
    assert frame["entity"].is_monotonic_increasing and frame["entity"].iloc[-1] == len(frame) - 1
    return generation


def test_a_load_killed_at_any_moment_leaves_a_whole_readable_copy(tmp_path):
    cache = LayerCache(tmp_path)
    first = gpd.GeoDataFrame(
        {"entity": np.arange(50_000), "name": "feature", "generation": "0"},
        geometry=shapely.points(np.full(50_000, -2.36), np.full(50_000, 51.38)),
        crs=4326,
    )
    cache.write("tree", first, source={"type": "test"}, metadata={"generation": 0})

    rng = random.Random(20240607)
    seen = [0]
    killed_mid_write = 0
    generation = 1
    # None: wait until a write has landed, then kill at once (as the next write starts);
    # "mid-write": wait until a temporary file is being written, then kill (the timed rounds may all
    # miss a write on a loaded machine, where the child takes longer to start)
    for delay in (0.0, 0.1, 0.25, 0.4, None, "mid-write"):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), str(generation)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout.readline().strip() == "ready"
            if delay is None:
                before, deadline = cache.generation(), time.monotonic() + 60
                while cache.generation() == before and time.monotonic() < deadline:
                    time.sleep(0.005)
            elif delay == "mid-write":
                deadline = time.monotonic() + 60
                while not any((tmp_path / "layers").glob(".tree.*.tmp")) and time.monotonic() < deadline:
                    time.sleep(0.001)
            else:
                time.sleep(delay + rng.uniform(0, 0.1))
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        assert child.returncode == -signal.SIGKILL
        if any((tmp_path / "layers").glob(".tree.*.tmp")):
            killed_mid_write += 1
            for stray in (tmp_path / "layers").glob(".tree.*.tmp"):
                stray.unlink()  # so the next round shows whether it too was cut short

        current = assert_whole_copy(LayerCache(tmp_path))
        assert current >= seen[-1], "the cache never goes back to an older copy"
        seen.append(current)
        generation = max(current, generation) + 1_000  # a fresh run numbers its copies apart

    assert killed_mid_write >= 1, f"no kill landed during a write (generations seen: {seen})"
    assert seen[-1] > 0, "at least one load completed between kills"


def test_the_bundled_samples_load_into_a_cache_with_their_counts(sample_cache):
    from datasets.samples import sample_files

    files = sample_files()
    manifest = sample_cache.manifest()
    assert set(manifest) == set(files) and "listed-building-outline" in files
    for dataset, path in files.items():
        entry = manifest[dataset]
        assert entry["source"] == {"type": "sample", "path": f"datasets/data/samples/{path.name}"}
        assert entry["features"] == len(gpd.read_parquet(str(path))) == len(sample_cache.read(dataset))
    outline = sample_cache.read("listed-building-outline")
    assert 42102419 in set(outline["entity"])


def test_a_copy_remembers_the_area_it_is_complete_for_until_it_is_swept(tmp_path, real_data):
    frame = outlines(real_data, rows=5)
    cache = LayerCache(tmp_path)
    district = shapely.box(-0.11, 51.43, -0.05, 51.51)
    first = cache.write("listed-building-outline", frame, source={"type": "test"}, coverage=district)
    assert cache.coverage("listed-building-outline").equals(district)

    cache.write("listed-building-outline", frame, source={"type": "test"})  # a national copy: all of England
    assert cache.coverage("listed-building-outline") is None
    cache.write("listed-building-outline", frame, source={"type": "test"})
    assert not (tmp_path / "layers" / first["coverage"]).exists(), "swept with its copy"


def test_temporary_files_of_killed_writes_go_at_the_next_write_not_an_hour_later(tmp_path, real_data):
    """A write names its temporary file with its pid: once that process is gone, the next write of any
    dataset removes it; one whose writer still runs is kept (it is being written)."""
    cache = LayerCache(tmp_path)
    frame = outlines(real_data, rows=3)
    cache.write("listed-building-outline", frame, source={"type": "test"})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        layers, derived = tmp_path / "layers", tmp_path / "derived"
        derived.mkdir(exist_ok=True)
        killed = [
            layers / f".listed-building-outline.20260101T000000-abcd1234.parquet.{dead}.k1x2_3.tmp",
            derived / f".tree.20260101T000000-abcd1234.pieces.parquet.{dead}.zz9.tmp",
            tmp_path / f".manifest.json.{dead}.q7.tmp",
        ]
        running = layers / f".tree.20260101T000000-abcd1234.parquet.{alive.pid}.r5.tmp"
        unnamed = layers / ".tree.20260101T000000-abcd1234.parquet.oldstyle.tmp"  # before pids were in names
        for path in [*killed, running, unnamed]:
            path.write_bytes(b"part of a copy")
        cache.write("conservation-area", frame.head(1), source={"type": "test"})
        assert not any(p.exists() for p in killed)
        assert running.exists() and unnamed.exists()
        an_hour_ago = time.time() - 3601
        os.utime(unnamed, (an_hour_ago, an_hour_ago))
        cache.write("conservation-area", frame.head(2), source={"type": "test"})
        assert not unnamed.exists() and running.exists()
    finally:
        alive.kill()
        alive.wait()


def test_a_layer_read_in_batches_holds_the_rows_of_the_layer_read_whole(sample_cache):
    whole = sample_cache.read_table("listed-building-outline", ["entity", "geometry"])
    batches = list(sample_cache.read_batches("listed-building-outline", ["entity", "geometry"], rows=7))
    assert len(batches) == -(-whole.num_rows // 7) > 1
    assert pa.Table.from_batches(batches).equals(whole.combine_chunks())
    with pytest.raises(CacheError):
        sample_cache.read_batches("no-such-layer", ["geometry"])
