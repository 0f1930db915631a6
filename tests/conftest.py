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
