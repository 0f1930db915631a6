"""The check's live fallback: datasets that are not cached are asked of the platform, never guessed."""

from __future__ import annotations

import pytest
import shapely
from api_fixtures import copy_cache

from constraints.index import ConstraintIndex
from datasets.cache import LayerCache
from datasets.catalogue import load_catalogue
from datasets.live import LiveLookup
from tests.fake_platform import *  # noqa: F403 - the pytest fixture: platform

# Rosendale Road, Lambeth: the fake platform serves a real conservation area and three real trees here
SITE = shapely.box(-0.0955, 51.4390, -0.0945, 51.4396)


@pytest.fixture(scope="module")
def samples(sample_cache, tmp_path_factory):
    return LayerCache(copy_cache(sample_cache, tmp_path_factory.mktemp("cache")))  # the samples have no trees and no flood zones


@pytest.fixture
def index_with_live(samples, platform):
    cache = samples
    live = LiveLookup(platform.url, ttl_seconds=60, retries=0, read_timeout=1)
    yield ConstraintIndex.from_cache(cache, load_catalogue(), live=live)
    live.close()


def key(answer, name):
    return next(c for c in answer["constraints"] if c["key"] == name)


def test_uncached_datasets_are_answered_live_and_say_so(index_with_live):
    answer = index_with_live.check(SITE)
    tpo = key(answer, "tpo")
    assert tpo["status"] == "intersects"
    assert {e["provenance"] for e in tpo["entities"]} == {"live"}
    assert answer["provenance"]["datasets"]["tree"]["source"] == "live"
    # cached datasets still come from the cache
    assert answer["provenance"]["datasets"]["conservation-area"]["source"] == "cache"


def test_a_failed_live_query_makes_those_keys_unknown_never_clear(index_with_live, platform):
    platform.fault("/entity.json", "status", status=503, times=None)
    answer = index_with_live.check(SITE)
    for name in ("tpo", "flood", "brownfieldSite"):
        assert key(answer, name)["status"] == "unknown"
        assert "live Planning Data query failed" in key(answer, name)["reason"]
    assert key(answer, "designated.conservationArea")["status"] in ("clear", "intersects")
