"""Syncing the layer cache from the Planning Data Platform: fresh data, and never losing the last good copy.

Everything runs over real HTTP against the fake platform on 127.0.0.1. After every fault the previous
copy is still what the cache reads, the manifest still describes it, the error is recorded, and the
constraints check still answers from it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fake_platform import *  # noqa: F403 - the pytest fixture: platform
from fake_platform import make_fraction

from constraints.index import ConstraintIndex
from datasets.cache import LayerCache
from datasets.catalogue import load_catalogue
from datasets.flatten import read_platform_bytes
from datasets.pdp import PlatformClient
from datasets.sync import (
    FAILED,
    NOT_MODIFIED,
    REFUSED,
    SWAP_HOOK_ENV,
    UPDATED,
    BackgroundSync,
    Syncer,
    is_stale,
)

REPO = Path(__file__).resolve().parent.parent
ALL = [
    "listed-building-outline",
    "tree",
    "area-of-outstanding-natural-beauty",
    "article-4-direction-area",
    "conservation-area",
    "green-belt",
]
LBO = "listed-building-outline"
LBO_FILE = "/dataset/listed-building-outline.parquet"
# The platform's own point for entity 42101001, Church of St Mary, Newington (a real listed building outline).
ST_MARY = {"type": "Point", "coordinates": [-0.104538, 51.489006]}
KEPT = ("file", "version", "features", "etag", "last_modified", "source", "loaded_at")


@pytest.fixture
def cache(tmp_path):
    return LayerCache(tmp_path / "cache")


def make_syncer(platform, cache, **options) -> Syncer:
    client = PlatformClient(
        platform.url,
        platform.url,
        connect_timeout=1.0,
        read_timeout=options.pop("read_timeout", 1.0),
        retries=options.pop("retries", 2),
        backoff=0.01,
        download_deadline=options.pop("download_deadline", None),
    )
    return Syncer(cache, client, **options)


@pytest.fixture
def synced(platform, cache):
    """A cache holding the listed building outlines, and a platform that has since published a new file."""
    (result,) = make_syncer(platform, cache).sync([LBO])
    assert result.status == UPDATED
    before = cache.entry(LBO), cache.read(LBO)
    body = platform.files["listed-building-outline.parquet"].body
    platform.publish_file("listed-building-outline.parquet", make_fraction(body, "parquet", 0.9))
    return before


def assert_last_good_copy_serves(cache, before, error: str) -> None:
    entry_before, frame_before = before
    entry = cache.entry(LBO)
    assert {k: entry[k] for k in KEPT} == {k: entry_before[k] for k in KEPT}
    assert error.lower() in entry["last_error"]["message"].lower(), entry["last_error"]
    assert entry["last_error"]["at"]
    frame = cache.read(LBO)
    assert len(frame) == entry["features"] == 945
    assert frame["entity"].tolist() == frame_before["entity"].tolist()
    assert frame.geometry.geom_equals_exact(frame_before.geometry, 0).all()
    answer = ConstraintIndex.from_cache(cache, load_catalogue()).check(ST_MARY, keys=["listed"])
    (listed,) = answer["constraints"]
    assert listed["status"] == "intersects" and [e["entity"] for e in listed["entities"]] == [42101001]
    leftovers = [p for p in cache.root.rglob("*") if p.name.startswith(".sync-") or p.name.endswith(".part")]
    assert leftovers == []


# -- the happy path --------------------------------------------------------------------------------


def test_first_run_fills_an_empty_cache_and_the_second_downloads_nothing(platform, cache):
    updated = []
    syncer = make_syncer(platform, cache, on_updated=updated.append)
    first = syncer.sync(ALL)
    assert [r.status for r in first] == [UPDATED] * len(ALL), [r.message for r in first]
    assert updated == [ALL]
    counts = {name: cache.entry(name)["features"] for name in ALL}
    assert counts == {
        "listed-building-outline": 945,  # 952 rows, 7 degenerate outlines with no area skipped
        "tree": 3,
        "area-of-outstanding-natural-beauty": 2,
        "article-4-direction-area": 3,
        "conservation-area": 2,
        "green-belt": 2,
    }
    formats = {name: cache.entry(name)["source"]["format"] for name in ALL}
    assert formats[LBO] == "parquet" and formats["green-belt"] == "csv" and formats["tree"] == "parquet"
    assert formats["area-of-outstanding-natural-beauty"] == "geojson"
    files = {name: cache.entry(name)["file"] for name in ALL}
    served = len(platform.requests)

    second = syncer.sync(ALL)
    assert [r.status for r in second] == [NOT_MODIFIED] * len(ALL)
    assert all("nothing downloaded" in r.message for r in second)
    recent = {id(r) for r in platform.requests[served:]}
    downloads = [r for r in platform.bulk_requests() if id(r) in recent and r.status != 404]
    assert {(r.status, r.sent_bytes) for r in downloads} == {(304, 0)} and len(downloads) == len(ALL)
    assert updated == [ALL]  # no rebuild: the callback was not called again
    assert {name: cache.entry(name)["file"] for name in ALL} == files
    assert all(cache.entry(name)["checked_at"] and not cache.entry(name)["last_error"] for name in ALL)


def test_a_new_publication_is_swapped_in_and_reported(platform, cache, synced):
    updated = []
    (result,) = make_syncer(platform, cache, on_updated=updated.append).sync([LBO])
    assert result.status == UPDATED and result.previous_features == 945
    assert result.features == len(cache.read(LBO)) < 945
    assert cache.entry(LBO)["etag"] == platform.files["listed-building-outline.parquet"].etag
    assert updated == [[LBO]]


def test_dataset_metadata_is_kept_in_the_manifest_for_attribution(platform, cache):
    make_syncer(platform, cache).sync([LBO, "tree"])
    meta = cache.entry(LBO)["metadata"]
    assert meta["licence"] == "ogl3" and meta["attribution"] == "crown-copyright"
    assert meta["entity-count"] == 952 and cache.entry("tree")["metadata"]["entity-count"] == 3
    assert len([r for r in platform.requests if r.path == "/dataset/tree.json"]) == 1  # once per sync


def test_metadata_that_fails_to_load_keeps_the_previous_and_does_not_stop_the_sync(platform, cache, synced):
    platform.fault("/dataset/listed-building-outline.json", "status", status=500, times=None)
    (result,) = make_syncer(platform, cache).sync([LBO])
    assert result.status == UPDATED
    assert cache.entry(LBO)["metadata"]["attribution"] == "crown-copyright"


def test_a_failing_on_updated_callback_does_not_fail_the_sync(platform, cache):
    def broken(names):
        raise RuntimeError("index reload failed")

    (result,) = make_syncer(platform, cache, on_updated=broken).sync(["tree"])
    assert result.status == UPDATED and len(cache.read("tree")) == 3


# -- faults: each leaves the last good copy serving -----------------------------------------------


def test_500_then_success_is_retried_and_the_new_file_swapped_in(platform, cache, synced):
    platform.fault(LBO_FILE, "status", status=500)
    (result,) = make_syncer(platform, cache).sync([LBO])
    assert result.status == UPDATED and "after 2 attempts" in result.message
    assert cache.entry(LBO)["last_error"] is None and len(cache.read(LBO)) == result.features


def test_persistent_500_keeps_the_last_good_copy(platform, cache, synced):
    platform.fault(LBO_FILE, "status", status=500, times=None)
    (result,) = make_syncer(platform, cache).sync([LBO])
    assert result.status == FAILED and "serving the last good copy (945 features)" in result.message
    assert_last_good_copy_serves(cache, synced, "HTTP 500")


def test_429_with_retry_after_is_waited_out(platform, cache, synced):
    platform.fault(LBO_FILE, "status", status=429, retry_after="1")
    (result,) = make_syncer(platform, cache).sync([LBO])
    assert result.status == UPDATED
    limited, ok = [r for r in platform.bulk_requests(LBO) if r.status in (429, 200)][-2:]
    assert (limited.status, ok.status) == (429, 200) and ok.at - limited.at >= 1.0


def test_429_for_ever_keeps_the_last_good_copy(platform, cache, synced):
    platform.fault(LBO_FILE, "status", status=429, retry_after="0", times=None)
    (result,) = make_syncer(platform, cache).sync([LBO])
    assert result.status == FAILED
    assert_last_good_copy_serves(cache, synced, "HTTP 429")


def test_a_connection_reset_half_way_through_the_body_keeps_the_last_good_copy(platform, cache, synced):
    platform.fault(LBO_FILE, "reset", times=None)
    (result,) = make_syncer(platform, cache).sync([LBO])
    assert result.status == FAILED
    assert all(0 < r.sent_bytes < 90_000 for r in platform.bulk_requests(LBO)[1:])
    assert_last_good_copy_serves(cache, synced, "ReadError")


def test_a_truncated_file_that_does_not_parse_is_not_swapped_in(platform, cache, synced):
    platform.fault(LBO_FILE, "truncate")
    (result,) = make_syncer(platform, cache).sync([LBO])
    assert result.status == FAILED and "is not usable: not a readable parquet file" in result.message
    assert_last_good_copy_serves(cache, synced, "not a readable parquet file")


def test_a_truncated_csv_is_caught_even_where_the_cut_parses(platform, cache):
    make_syncer(platform, cache).sync(["green-belt"])
    before = cache.entry("green-belt")
    platform.publish_file("green-belt.csv", platform.files["green-belt.csv"].body + b"\n")  # a new build
    platform.fault("/dataset/green-belt.csv", "truncate")
    (result,) = make_syncer(platform, cache).sync(["green-belt"])
    assert result.status == FAILED and "truncated" in result.message
    assert cache.entry("green-belt")["file"] == before["file"] and len(cache.read("green-belt")) == 2


def test_an_empty_file_is_refused(platform, cache, synced):
    platform.fault(LBO_FILE, "empty")
    (result,) = make_syncer(platform, cache).sync([LBO])
    assert result.status == FAILED and "empty" in result.message
    assert_last_good_copy_serves(cache, synced, "the file is empty")


def test_a_file_with_only_headers_is_refused_as_empty(platform, cache, synced):
    body = platform.files["listed-building-outline.parquet"].body
    platform.publish_file("listed-building-outline.parquet", make_fraction(body, "parquet", 0.0))
    (result,) = make_syncer(platform, cache).sync([LBO], force=True)  # not even --force takes an empty layer
    assert result.status == REFUSED
    assert_last_good_copy_serves(cache, synced, "no usable features")


def test_a_file_with_ten_percent_of_the_features_is_refused_unless_forced(platform, cache, synced):
    body = platform.files["listed-building-outline.parquet"].body
    platform.publish_file("listed-building-outline.parquet", make_fraction(body, "parquet", 0.1))
    (result,) = make_syncer(platform, cache).sync([LBO])
    assert result.status == REFUSED
    assert "fewer than 50% of the 945 in the cached copy" in result.message and "--force" in result.message
    assert_last_good_copy_serves(cache, synced, "fewer than 50%")

    (forced,) = make_syncer(platform, cache).sync([LBO], force=True)
    assert forced.status == UPDATED and forced.features == len(cache.read(LBO)) < 100


def test_the_plausibility_fraction_is_configurable(platform, cache, synced):
    body = platform.files["listed-building-outline.parquet"].body
    platform.publish_file("listed-building-outline.parquet", make_fraction(body, "parquet", 0.8))
    (result,) = make_syncer(platform, cache, min_fraction=0.95).sync([LBO])
    assert result.status == REFUSED and "fewer than 95%" in result.message


def test_a_hang_past_the_read_timeout_keeps_the_last_good_copy(platform, cache, synced):
    platform.fault(LBO_FILE, "hang", seconds=5, times=None)
    started = time.monotonic()
    (result,) = make_syncer(platform, cache, read_timeout=0.3, retries=1).sync([LBO])
    assert time.monotonic() - started < 2.5
    assert result.status == FAILED
    assert_last_good_copy_serves(cache, synced, "read timeout")


def test_one_failing_dataset_does_not_stop_the_others(platform, cache):
    platform.fault("/dataset/tree.parquet", "status", status=503, times=None)
    results = make_syncer(platform, cache, retries=0).sync(["tree", "conservation-area"])
    assert [r.status for r in results] == [FAILED, UPDATED]


def test_a_dataset_that_never_loaded_is_unknown_in_checks_never_clear(platform, cache):
    platform.unpublish("area-of-outstanding-natural-beauty.geojson")
    results = make_syncer(platform, cache).sync(["area-of-outstanding-natural-beauty", LBO])
    assert [r.status for r in results] == [FAILED, UPDATED]
    assert "no copy cached" in results[0].message
    assert "not published" in cache.entry("area-of-outstanding-natural-beauty")["last_error"]["message"]
    answer = ConstraintIndex.from_cache(cache, load_catalogue()).check(
        ST_MARY, keys=["designated.AONB", "listed"]
    )
    status = {c["key"]: c["status"] for c in answer["constraints"]}
    assert status == {"designated.AONB": "unknown", "listed": "intersects"}


# -- staleness -------------------------------------------------------------------------------------


def test_a_copy_not_confirmed_for_48_hours_is_marked_stale_until_a_sync_confirms_it(platform, cache):
    syncer = make_syncer(platform, cache, retries=0)
    syncer.sync(["tree"])
    three_days_ago = (datetime.now(UTC) - timedelta(days=3)).isoformat().replace("+00:00", "Z")
    cache.update_entry("tree", loaded_at=three_days_ago, checked_at=three_days_ago)
    platform.fault("/dataset/tree.parquet", "status", status=503, times=None)
    (failed,) = syncer.sync(["tree"])
    assert failed.status == FAILED
    assert cache.entry("tree")["stale"] is True and is_stale(cache.entry("tree"))
    assert len(cache.read("tree")) == 3  # stale, but still serving

    platform.clear_faults()
    (confirmed,) = syncer.sync(["tree"])  # a 304 confirms the old copy is the platform's current one
    assert confirmed.status == NOT_MODIFIED
    assert cache.entry("tree")["stale"] is False and not is_stale(cache.entry("tree"))


def test_staleness_follows_the_configured_age_and_ignores_local_loads():
    now = datetime(2026, 1, 10, tzinfo=UTC)
    entry = {"file": "x", "source": {"type": "platform"}, "loaded_at": "2026-01-09T00:00:00Z"}
    assert not is_stale(entry, now=now) and is_stale(entry, stale_after_hours=12, now=now)
    assert not is_stale(entry | {"source": {"type": "local", "path": "x.gpkg"}}, stale_after_hours=1, now=now)
    assert not is_stale(None) and not is_stale({"last_error": {"message": "x"}})


# -- watch -----------------------------------------------------------------------------------------


def test_watch_repeats_the_sync_and_picks_up_a_new_publication(platform, cache):
    runs: list[list[str]] = []
    syncer = make_syncer(platform, cache)

    def report(results):
        runs.append([r.status for r in results])
        if len(runs) == 2:  # the platform rebuilds between the second and third run
            platform.publish_file(
                "tree.parquet", make_fraction(platform.files["tree.parquet"].body, "parquet", 2 / 3)
            )

    assert syncer.watch(["tree"], 0.05, max_runs=3, report=report) == 3
    assert runs == [[UPDATED], [NOT_MODIFIED], [UPDATED]]
    assert len(cache.read("tree")) == 2


def test_watch_stops_when_told(platform, cache):
    stop = threading.Event()
    thread = threading.Thread(
        target=make_syncer(platform, cache).watch, args=(["tree"], 60.0), kwargs={"stop": stop}
    )
    thread.start()
    deadline = time.monotonic() + 10
    while cache.entry("tree") is None and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive() and len(cache.read("tree")) == 3


def test_a_running_index_picks_up_a_new_publication_without_a_restart(platform, cache):
    make_syncer(platform, cache).sync(["tree", "conservation-area"])
    index = ConstraintIndex.from_cache(cache, load_catalogue())
    rosendale = {  # a site over the three real trees in the Rosendale Road conservation area
        "type": "Polygon",
        "coordinates": [
            [[-0.0956, 51.439], [-0.0946, 51.439], [-0.0946, 51.4397], [-0.0956, 51.4397], [-0.0956, 51.439]]
        ],
    }

    def trees():
        (tpo,) = index.check(rosendale, keys=["tpo"])["constraints"]
        return sorted(e["entity"] for e in tpo["entities"])

    assert trees() == [7002001662, 7002001663, 7002001664]
    version = index.data_version
    background = BackgroundSync(
        make_syncer(platform, cache, on_updated=lambda names: index.reload()), ["tree"], interval=0.05
    ).start()
    try:
        deadline = time.monotonic() + 10
        while background.runs < 1 and time.monotonic() < deadline:  # a first run finds nothing new
            time.sleep(0.01)
        assert background.last_results[0].status == NOT_MODIFIED
        platform.publish_file(
            "tree.parquet", make_fraction(platform.files["tree.parquet"].body, "parquet", 2 / 3)
        )
        deadline = time.monotonic() + 10
        while trees() != [7002001662, 7002001663] and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        background.stop()
    assert trees() == [7002001662, 7002001663]
    assert index.data_version != version and background.runs >= 2


# -- kills -----------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {repo!r})
    from datasets.cache import LayerCache
    from datasets.pdp import PlatformClient
    from datasets.sync import Syncer

    url, root, mode, marker = sys.argv[1:5]
    if mode == "inside-swap":
        # Stop between the two renames of LayerCache.write: the new layer file is in place, the
        # manifest still names the old one. This is the narrowest window a kill can hit.
        real_replace = os.replace

        def replace(src, dst):
            real_replace(src, dst)
            if str(dst).endswith(".parquet") and "/layers/" in str(dst):
                open(marker, "w").write(str(dst))
                time.sleep(60)

        os.replace = replace
    syncer = Syncer(LayerCache(root), PlatformClient(url, url, retries=0), min_fraction=0.0)
    while True:
        syncer.sync(["listed-building-outline"], force=True)
        if mode != "loop":
            break
        open(marker, "w").write("a sync completed")
    """
)


def run_child(platform, cache, mode: str, tmp_path: Path, env: dict | None = None) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO)))
    marker = tmp_path / f"marker-{mode}"
    marker.unlink(missing_ok=True)
    return subprocess.Popen(
        [sys.executable, str(script), platform.url, str(cache.root), mode, str(marker)],
        env={**os.environ, **(env or {})},
    ), marker


def wait_for(marker: Path, proc: subprocess.Popen, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not marker.exists():
        assert proc.poll() is None, "the child exited before reaching the point it should be killed at"
        assert time.monotonic() < deadline, "the child never reached the point it should be killed at"
        time.sleep(0.01)


def assert_consistent(cache: LayerCache, allowed_counts: set[int]) -> None:
    """What the next reader sees: a manifest that parses and names a complete file of a known version."""
    entry = LayerCache(cache.root).entry(LBO)
    frame = LayerCache(cache.root).read(LBO)
    assert len(frame) == entry["features"] and entry["features"] in allowed_counts
    assert frame.geometry.notna().all() and frame["entity"].is_unique
    ConstraintIndex.from_cache(LayerCache(cache.root), load_catalogue())


@pytest.mark.parametrize("mode", ["inside-swap", "before-swap"])
def test_a_sync_killed_during_the_swap_leaves_the_previous_copy_readable(
    platform, cache, synced, tmp_path, mode
):
    env = {SWAP_HOOK_ENV: str(tmp_path / "marker-before-swap")} if mode == "before-swap" else {}
    proc, marker = run_child(platform, cache, mode, tmp_path, env)
    try:
        wait_for(marker, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    entry_before, frame_before = synced
    assert LayerCache(cache.root).entry(LBO)["file"] == entry_before["file"]
    assert_consistent(cache, {945})
    # The next sync starts cleanly: it sweeps the dead process's download folder and swaps the new file in.
    (result,) = make_syncer(platform, cache).sync([LBO])
    assert result.status == UPDATED
    assert_consistent(cache, {result.features})
    assert not list(cache.root.glob(".sync-*"))


def test_syncs_killed_at_random_moments_always_leave_a_consistent_cache(platform, cache, synced, tmp_path):
    body = platform.files["listed-building-outline.parquet"].body  # the 90 % build `synced` published
    small = make_fraction(body, "parquet", 0.3)
    allowed = {945} | {len(read_platform_bytes(b, LBO, "parquet").frame) for b in (body, small)}
    rng = random.Random(20261127)
    files = {synced[0]["file"]}
    for _ in range(4):
        proc, _marker = run_child(platform, cache, "loop", tmp_path)
        stop = threading.Event()

        def republish(stop=stop):  # the platform flips between two builds: every sync has a file to swap in
            flip = 0
            while not stop.is_set():
                platform.publish_file("listed-building-outline.parquet", (small, body)[flip % 2])
                flip += 1
                stop.wait(0.05)

        flipper = threading.Thread(target=republish)
        flipper.start()
        try:
            wait_for(_marker, proc)  # one sync done; the kill lands somewhere in the following ones
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=10)
            stop.set()
            flipper.join()
        assert_consistent(cache, allowed)
        files.add(LayerCache(cache.root).entry(LBO)["file"])
    assert len(files) >= 2, "no kill came after a completed swap, so the test proved nothing"


# -- the command line ------------------------------------------------------------------------------


def redline_sync(platform, cache, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "REDLINE_DATA_DIR": str(cache.root),
        "REDLINE_PDP_FILES_URL": platform.url,
        "REDLINE_PDP_API_URL": platform.url,
        "REDLINE_PDP_RETRIES": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "datasets", "sync", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_sync_command_fills_the_cache_then_finds_nothing_new(platform, cache):
    first = redline_sync(platform, cache, "--dataset", "tree", "--dataset", "conservation-area")
    assert first.returncode == 0, first.stderr
    assert "2 updated, 0 not modified, 0 failed, 0 refused" in first.stdout
    second = redline_sync(platform, cache, "--dataset", "tree", "--dataset", "conservation-area")
    assert second.returncode == 0 and "0 updated, 2 not modified" in second.stdout
    assert "nothing downloaded" in second.stdout


def test_the_sync_command_exits_1_when_a_dataset_failed_and_says_the_old_copy_serves(platform, cache):
    assert redline_sync(platform, cache, "--dataset", "tree").returncode == 0
    platform.publish_file("tree.parquet", b"")
    failed = redline_sync(platform, cache, "--dataset", "tree")
    assert failed.returncode == 1
    assert "FAILED" in failed.stdout and "serving the last good copy (3 features)" in failed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "say which datasets"),
        (("--dataset", "Conservation_Area"), "is not a dataset name"),
        (("--dataset", "tree", "--watch", "0"), "--watch takes a positive number"),
    ],
)
def test_the_sync_command_rejects_bad_input_with_exit_2(args, message, capsys):
    from api.cli import main

    assert main(["datasets", "sync", *args]) == 2
    assert message in capsys.readouterr().err


def test_the_sync_command_watches_until_terminated(platform, cache):
    env = {
        **os.environ,
        "REDLINE_DATA_DIR": str(cache.root),
        "REDLINE_PDP_FILES_URL": platform.url,
        "REDLINE_PDP_API_URL": platform.url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "datasets", "sync", "--dataset", "tree", "--watch", "0.2"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while len([r for r in platform.bulk_requests("tree")]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "1 updated" in out and "1 not modified" in out


@pytest.mark.parametrize("fraction", [528 / 952, 675 / 952, 864 / 952, 0.98])
def test_a_csv_cut_at_a_row_boundary_is_refused_against_the_platforms_entity_count(platform, cache, fraction):
    """The file parses cleanly (every row whole), so only the platform's published count shows the cut."""
    (first,) = make_syncer(platform, cache).sync([LBO])
    assert first.status == UPDATED
    before = cache.entry(LBO), cache.read(LBO)
    platform.unpublish("listed-building-outline.parquet")  # the CSV is what the platform serves now
    body = platform.files["listed-building-outline.csv"].body
    platform.publish_file("listed-building-outline.csv", body)  # a new build: same rows, new validators
    platform.fault("/dataset/listed-building-outline.csv", "cut", fraction=fraction)
    (result,) = make_syncer(platform, cache).sync([LBO])
    assert result.status == REFUSED, result.message
    assert "platform publishes 952 entities" in result.message and "--force" in result.message
    assert "serving the last good copy (945 features)" in result.message
    assert_last_good_copy_serves(cache, before, "cut short")
    (whole,) = make_syncer(platform, cache).sync([LBO])  # the next night the whole file comes through
    assert whole.status == UPDATED and whole.features == 945


def test_a_file_within_the_count_tolerance_is_accepted(platform, cache):
    meta = platform.metadata[LBO]
    meta["entity-count"] = {**meta["entity-count"], "count": 955}  # counted a moment after the file was built
    (result,) = make_syncer(platform, cache).sync([LBO])
    assert result.status == UPDATED and result.features == 945
    body = platform.files["listed-building-outline.parquet"].body
    platform.publish_file("listed-building-outline.parquet", make_fraction(body, "parquet", 1.0))  # rebuilt
    meta["entity-count"]["count"] = 1100  # the count disagrees with the new build by 13 %
    (refused,) = make_syncer(platform, cache).sync([LBO])
    assert refused.status == REFUSED and "952 rows" in refused.message
    (loose,) = make_syncer(platform, cache, count_tolerance=0.2).sync([LBO])
    assert loose.status == UPDATED


def test_a_server_dripping_bytes_is_abandoned_at_the_download_deadline(platform, cache, synced):
    platform.fault(LBO_FILE, "drip", seconds=0.2, times=None)  # each byte within the read timeout
    started = time.monotonic()
    (result,) = make_syncer(platform, cache, read_timeout=1.0, download_deadline=2.0).sync([LBO])
    assert time.monotonic() - started < 6
    assert result.status == FAILED and "did not finish within 2 s" in result.message
    assert_last_good_copy_serves(cache, synced, "did not finish within 2 s")
    assert not list(cache.root.glob(".sync-*")) and not list(cache.root.rglob("*.part"))
