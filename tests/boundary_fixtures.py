"""Fixtures shared by the boundary tests: both stores, the real index over the bundled samples, real sites.

Import the fixtures you use into a test module (``from boundary_fixtures import backend_url, ...``).
The PostgreSQL server is one per test session (a module-level singleton stopped at exit), whichever
module asks first; each test gets a fresh database. A missing PostgreSQL fails the test, never skips.
"""

from __future__ import annotations

import atexit
import json
import threading
import uuid
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely.geometry import mapping

from datasets import crs

__all__ = ["backend_url", "checker", "saltford", "sample_cache_copy"]  # the fixtures a test module star-imports

ROOT = Path(__file__).resolve().parents[1]
_pg = None
_pg_lock = threading.Lock()
_index = None


def postgres():
    """The session's PostgreSQL server, started on first use (FAILS when PostgreSQL is not installed)."""
    global _pg
    with _pg_lock:
        if _pg is None:
            from benchmarks.pg_server import PostgresServer

            server = PostgresServer()
            server.start()  # raises PostgresUnavailable with the apt-get command when missing
            atexit.register(server.stop)
            _pg = server
    return _pg


def sample_index(cache_root=None):
    """The real ConstraintIndex over every bundled sample layer (built once per process).

    ``cache_root``: a folder already holding them (a copy of the session's ``sample_cache``), which
    saves loading the samples again (seconds); without it they are loaded into a temporary folder.
    """
    global _index
    if _index is None:
        import tempfile

        from constraints.index import ConstraintIndex
        from datasets.cache import LayerCache
        from datasets.catalogue import load_catalogue
        from datasets.samples import load_samples

        if cache_root is None:
            cache = LayerCache(tempfile.mkdtemp(prefix="redline-boundary-cache-"))
            load_samples(cache)
        else:
            cache = LayerCache(cache_root)
        _index = ConstraintIndex.from_cache(cache, load_catalogue())
    return _index


@pytest.fixture(scope="session")
def sample_cache_copy(sample_cache, tmp_path_factory):
    """A copy of the session's sample cache that processes other than this one may read."""
    from api_fixtures import copy_cache

    return copy_cache(sample_cache, tmp_path_factory.mktemp("boundary-cache"))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request, tmp_path):
    """A fresh, empty store URL on each back end."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'boundaries.sqlite3'}"
    return postgres().new_database("t_" + uuid.uuid4().hex[:12])


@pytest.fixture
def checker(sample_cache_copy):
    index = sample_index(sample_cache_copy)
    return lambda geometry: index.check(geometry)


# --- real sites around the Saltford conservation area (Bath and North East Somerset sample) ------------
class SaltfordSites:
    """Squares on the British National Grid next to, and over, the real Saltford conservation area.

    ``outside`` lies 20 m east of the area's easternmost point; ``over`` is the same square moved 40 m
    west so that it straddles the conservation area boundary.
    """

    def __init__(self):
        frame = gpd.read_parquet(ROOT / "datasets" / "data" / "samples" / "conservation-area.parquet")
        row = frame[frame["name"] == "Saltford"].iloc[0]
        self.entity = int(row["entity"])
        grid = crs.to_bng(row.geometry)
        coords = np.asarray(shapely.get_coordinates(grid))
        east = coords[np.argmax(coords[:, 0])]
        self.east = (float(east[0]), float(east[1]))

    def square(self, dx: float, dy: float = 0.0, size: float = 30.0) -> dict:
        x, y = self.east[0] + dx, self.east[1] + dy
        box = shapely.box(x, y - size / 2, x + size, y + size / 2)
        return json.loads(json.dumps(mapping(crs.to_wgs84(box))))  # GeoJSON lists, as sent over HTTP

    @property
    def outside(self) -> dict:
        return self.square(20.0)

    @property
    def over(self) -> dict:
        return self.square(-20.0)

    @property
    def over_more(self) -> dict:
        return self.square(-25.0, size=40.0)


@pytest.fixture(scope="session")
def saltford():
    return SaltfordSites()


def status(answer: dict, key: str) -> tuple[str, list[int]]:
    item = next(c for c in answer["constraints"] if c["key"] == key)
    return item["status"], sorted(int(e["entity"]) for e in item["entities"])
