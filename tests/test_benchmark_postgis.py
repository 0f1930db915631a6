"""The PostGIS side-by-side benchmark runs end to end at a tiny scale and keeps its load between runs.

It needs PostgreSQL with PostGIS (``make system-deps`` installs ``postgresql-15-postgis-3``); in CI a
missing server fails this test, as it fails the store's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks import synth

REPO = Path(__file__).resolve().parents[1]
SCALE = 0.001
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def bench_dir():
    # PostgreSQL runs as the ``postgres`` user when the tests run as root: its folder must be reachable
    folder = tempfile.mkdtemp(prefix="redline-bench-postgis-")
    os.chmod(folder, 0o755)
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _run(args, bench_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "REDLINE_BENCH_DIR": str(bench_dir)}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.postgis", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=280
    )


def test_postgis_benchmark_prints_one_json_line_with_both_sides_and_identical_answers(bench_dir):
    done = _run(["--scale", str(SCALE), "--sites", "20", "--block", "5"], bench_dir)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    assert result["scale"] == SCALE and result["sites"] == 20
    assert result["features"] == sum(synth.counts_for(SCALE).values())
    for side in ("postgis", "redline"):
        assert 0 < result[f"{side}_p50_us"] <= result[f"{side}_p99_us"]
    assert result["ratio_p50"] == round(result["postgis_p50_us"] / result["redline_p50_us"], 2)
    # redline's CPU time per check is at most its wall-clock time, give or take the clocks' own reading (~1 us)
    assert 0 < result["redline_cpu_p50_us"] <= result["redline_p50_us"] + 5 and 0 <= result["redline_waited"] <= 20
    assert "PostGIS 3" in result["postgis"] and "ST_Subdivide(256)" in result["postgis"]
    assert result["postgis_pieces"] > 0
    # PostGIS and redline find the same entities with the same overlap areas on every site
    assert result["agreement"] == 1.0 and result["identical"] == 20

    again = _run(["--scale", str(SCALE), "--sites", "20", "--block", "5"], bench_dir)
    assert again.returncode == 0, again.stderr
    assert "postgis: loading" not in again.stderr  # the loaded cluster was kept and reused
    rerun = json.loads(again.stdout.strip().splitlines()[0])
    assert rerun["postgis_pieces"] == result["postgis_pieces"] and rerun["agreement"] == 1.0


def test_postgis_benchmark_refuses_a_scale_it_cannot_build_with_a_usage_error(bench_dir):
    bad = _run(["--scale", "50"], bench_dir)
    assert bad.returncode == 2 and "scale must be in (0, 25], got 50.0" in bad.stderr
    assert "Traceback" not in bad.stderr
