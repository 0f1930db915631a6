"""Progress bars show on a terminal for work that lasts, and stay out of logs and pipes; Dask's own
INFO chatter never reaches the user of ``redline batch``."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import shapely

from datasets.progress import progress_bar

REDLINE = Path(sys.executable).with_name("redline")
SITES = [shapely.box(-0.1280 + i * 0.0004, 51.5000, -0.1277 + i * 0.0004, 51.5003) for i in range(20)]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_shows_on_a_terminal_once_the_work_lasts():
    quick, slow = Terminal(), Terminal()
    with progress_bar(2, desc="loading", stream=quick, delay=0.5) as bar:
        bar.update(2)
    with progress_bar(2, desc="loading", stream=slow, delay=0.2) as bar:
        time.sleep(0.3)
        bar.update(2)
    assert quick.getvalue() == ""
    assert "loading: 100%" in slow.getvalue()


def test_a_bar_never_goes_to_a_pipe_or_log():
    log = io.StringIO()
    with progress_bar(2, desc="loading", stream=log, delay=0) as bar:
        time.sleep(0.05)
        bar.update(2)
    assert log.getvalue() == ""


def _sites_file(folder: Path) -> Path:
    features = [
        {"type": "Feature", "properties": {"n": i}, "geometry": json.loads(shapely.to_geojson(g))} for i, g in enumerate(SITES)
    ]
    path = folder / "sites.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


# ``redline`` in this interpreter with the bars' delay set to nothing, so a small load shows one
RUN_WITHOUT_DELAY = "import sys, datasets.progress as p; p.DELAY_S = 0; from api.cli import main; sys.exit(main(sys.argv[1:]))"


def _on_a_terminal(argv: list[str], env: dict) -> str:
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the terminal
        os.execve(argv[0], argv, env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal has a width
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def test_datasets_load_shows_its_bar_on_a_terminal_and_not_in_a_pipe(tmp_path):
    sites = _sites_file(tmp_path)
    env = {**os.environ, "REDLINE_DATA_DIR": str(tmp_path / "data")}
    argv = [sys.executable, "-c", RUN_WITHOUT_DELAY, "datasets", "load", str(sites), "--dataset", "local-sites", "--replace"]

    seen = _on_a_terminal(argv, env)
    piped = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    assert "loading local-sites:" in seen and "step/s" in seen
    assert "local-sites: loaded 20" in seen
    assert piped.returncode == 0, piped.stderr
    assert "loading local-sites" not in piped.stderr + piped.stdout
    assert "local-sites: loaded 20" in piped.stdout


def test_batch_in_a_pipe_prints_its_report_without_bars_or_dask_chatter(tmp_path, sample_cache):
    """Also the issue's own case: one empty geometry cell in a CSV, which once ended the run."""
    sites = tmp_path / "sites.csv"
    rows = [f'{i},"{g.wkt}"' for i, g in enumerate(SITES)]
    rows[4] = "4,"
    sites.write_text("uprn,WKT\n" + "\n".join(rows) + "\n")
    env = {**os.environ, "REDLINE_DATA_DIR": str(sample_cache.root)}
    out = tmp_path / "out.csv"
    done = subprocess.run(
        [str(REDLINE), "batch", str(sites), "--out", str(out), "--workers", "1", "--id-field", "uprn"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "19 of 20 sites checked" in done.stdout and "1 bad rows" in done.stdout
    assert Path(f"{out}.errors.csv").read_text().splitlines() == ["row,uprn,reason", "5,4,the wkt cell is empty"]
    assert done.stderr.splitlines() == [f"redline: data folder {sample_cache.root} (from REDLINE_DATA_DIR)"], done.stderr
