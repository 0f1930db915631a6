"""Fixtures every test module may use: the real public extracts (``tests/data/real``), and a cache holding the bundled samples.

Kept small and generic on purpose; feature-specific fixtures live in their own modules
(e.g. ``boundary_fixtures.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Real public extracts, copied into the repository with their sources (tests/data/real/SOURCES.md).
REAL_DATA = REPO / "tests" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real public extracts (see its SOURCES.md)."""
    return REAL_DATA


@pytest.fixture(scope="session")
def sample_cache(tmp_path_factory):
    """A ``LayerCache`` in a temporary folder holding every bundled sample layer.

    Shared by the whole session: treat it as read-only (write to a cache of your own).
    """
    from datasets.cache import LayerCache
    from datasets.samples import load_samples

    cache = LayerCache(tmp_path_factory.mktemp("sample-cache"))
    load_samples(cache)
    return cache


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path):
    """Run ``redline ARGS`` in this process against a data folder; returns (exit code, stdout, stderr).

    Extra keyword arguments are environment variables for the run (``REDLINE_STALE_AFTER_HOURS="1"``).
    """
    from api.cli import main
    from api.settings import get_settings

    monkeypatch.chdir(tmp_path)  # no stray .env

    def call(*argv: str, data_dir: Path, **env: str) -> tuple[int, str, str]:
        monkeypatch.setenv("REDLINE_DATA_DIR", str(data_dir))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        try:
            code = main(list(argv))
        except SystemExit as exit:  # argparse refusing an option
            code = exit.code
        finally:
            get_settings.cache_clear()
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield call

    get_settings.cache_clear()
