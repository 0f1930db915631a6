"""The Planning Data Platform client, against a fake platform over real HTTP on 127.0.0.1."""

from __future__ import annotations

import email.utils
import random
import time

import pytest
from fake_platform import *  # noqa: F403 - the pytest fixture: platform
from fake_platform import make_fraction

from datasets.flatten import read_platform_file
from datasets.live import LiveLookup, LiveLookupError
from datasets.pdp import (
    Download,
    NotFound,
    NotModified,
    PlatformClient,
    PlatformError,
    PlatformUnavailable,
    entity_count,
    parse_retry_after,
)

# A box over south London holding 951 of the 952 real listed-building outlines, the Rosendale Road
# conservation area and three trees: more than one page of 500.
SOUTH_LONDON = "POLYGON((-0.2 51.3,0.1 51.3,0.1 51.6,-0.2 51.6,-0.2 51.3))"


@pytest.fixture
def client(platform):
    with PlatformClient(
        platform.url, platform.url, connect_timeout=1, read_timeout=1, retries=2, backoff=0.01
    ) as c:
        yield c


# -- bulk files ------------------------------------------------------------------------------------


def test_download_prefers_parquet_when_the_platform_also_has_csv(platform, client, tmp_path):
    got = client.download("listed-building-outline", tmp_path)
    assert isinstance(got, Download)
    assert got.format == "parquet" and got.url.endswith("/dataset/listed-building-outline.parquet")
    assert got.path.read_bytes() == platform.files["listed-building-outline.parquet"].body
    assert got.etag == platform.files["listed-building-outline.parquet"].etag
    assert got.last_modified and got.bytes == got.path.stat().st_size
    assert [r.path for r in platform.bulk_requests()] == ["/dataset/listed-building-outline.parquet"]


def test_download_falls_back_to_geojson_then_csv_when_a_format_is_missing(platform, client, tmp_path):
    assert client.download("article-4-direction-area", tmp_path).format == "geojson"
    got = client.download("green-belt", tmp_path)
    assert got.format == "csv"
    assert [(r.path.rsplit(".", 1)[1], r.status) for r in platform.bulk_requests("green-belt")] == [
        ("parquet", 404),
        ("geojson", 404),
        ("csv", 200),
    ]
    assert len(read_platform_file(got.path, "green-belt").frame) == 2


def test_a_dataset_published_in_no_format_is_not_found_naming_the_formats(client, tmp_path):
    with pytest.raises(NotFound, match="not published .* as parquet or geojson or csv"):
        client.download("no-such-dataset", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unchanged_file_answers_not_modified_and_downloads_nothing(platform, client, tmp_path):
    first = client.download("tree", tmp_path)
    previous = {"url": first.url, "etag": first.etag, "last_modified": first.last_modified}
    again = client.download("tree", tmp_path / "again", previous=previous)
    assert isinstance(again, NotModified)
    last = platform.bulk_requests("tree")[-1]
    assert last.headers["If-None-Match"] == first.etag
    assert last.headers["If-Modified-Since"] == first.last_modified
    assert (last.status, last.sent_bytes) == (304, 0)
    assert list((tmp_path / "again").iterdir()) == []


def test_last_modified_alone_is_enough_for_a_304(platform, client, tmp_path):
    first = client.download("tree", tmp_path)
    got = client.download("tree", tmp_path, previous={"url": first.url, "last_modified": first.last_modified})
    assert isinstance(got, NotModified)


def test_a_republished_file_is_downloaded_again(platform, client, tmp_path):
    first = client.download("tree", tmp_path)
    held = {"url": first.url, "etag": first.etag, "last_modified": first.last_modified}
    body = platform.files["tree.parquet"].body
    platform.publish_file("tree.parquet", make_fraction(body, "parquet", 2 / 3))  # new content, new ETag
    got = client.download("tree", tmp_path, previous=held)
    assert isinstance(got, Download) and got.etag != first.etag
    platform.publish_file("tree.parquet", body)  # rebuilt later with the old bytes: only Last-Modified moved
    got = client.download("tree", tmp_path, previous={"url": first.url, "last_modified": first.last_modified})
    assert isinstance(got, Download) and got.etag == first.etag


def test_validators_of_another_format_are_not_sent(platform, client, tmp_path):
    client.download("tree", tmp_path, previous={"url": "http://elsewhere/tree.csv", "etag": '"x"'})
    assert "If-None-Match" not in platform.bulk_requests("tree")[-1].headers


def test_a_500_then_success_is_retried(platform, client, tmp_path):
    platform.fault("/dataset/tree.parquet", "status", status=500)
    got = client.download("tree", tmp_path)
    assert isinstance(got, Download) and got.attempts == 2
    assert [r.status for r in platform.bulk_requests("tree")] == [500, 200]


def test_429_waits_at_least_retry_after(platform, tmp_path):
    platform.fault("/dataset/tree.parquet", "status", status=429, retry_after="1")
    with PlatformClient(platform.url, platform.url, retries=2, backoff=0.01) as c:
        got = c.download("tree", tmp_path)
    assert got.attempts == 2
    first, second = platform.bulk_requests("tree")
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 1.0


def test_retry_after_longer_than_redline_waits_fails_at_once_saying_so(platform, tmp_path):
    platform.fault("/dataset/tree.parquet", "status", status=503, retry_after="3600")
    with PlatformClient(platform.url, platform.url, retries=3, max_retry_after=60) as c:
        started = time.monotonic()
        with pytest.raises(PlatformUnavailable, match="retry after 3600 s"):
            c.download("tree", tmp_path)
    assert time.monotonic() - started < 1.0
    assert len(platform.bulk_requests("tree")) == 1


def test_persistent_5xx_gives_up_after_the_retries(platform, client, tmp_path):
    platform.fault("/dataset/tree.parquet", "status", status=502, times=None)
    with pytest.raises(PlatformUnavailable, match="HTTP 502 .*gave up after 3 attempts"):
        client.download("tree", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_client_error_is_not_retried(platform, client, tmp_path):
    platform.fault("/dataset/tree.parquet", "status", status=403)
    with pytest.raises(PlatformError, match="HTTP 403"):
        client.download("tree", tmp_path)
    assert len(platform.bulk_requests("tree")) == 1


def test_a_connection_reset_half_way_through_a_body_is_retried_from_the_start(platform, client, tmp_path):
    platform.fault("/dataset/listed-building-outline.parquet", "reset")
    got = client.download("listed-building-outline", tmp_path)
    assert got.attempts == 2
    assert got.path.read_bytes() == platform.files["listed-building-outline.parquet"].body
    assert [p.name for p in tmp_path.iterdir()] == [got.path.name]  # the broken part file is gone
    reset = platform.bulk_requests()[0]
    assert 0 < reset.sent_bytes < len(platform.files["listed-building-outline.parquet"].body)


def test_a_hang_past_the_read_timeout_fails_after_the_retries(platform, tmp_path):
    platform.fault("/dataset/tree.parquet", "hang", seconds=5, times=None)
    with PlatformClient(platform.url, platform.url, read_timeout=0.3, retries=1, backoff=0.01) as c:
        started = time.monotonic()
        with pytest.raises(PlatformUnavailable, match=r"no data for 0.3 s \(read timeout\).*2 attempts"):
            c.download("tree", tmp_path)
    assert time.monotonic() - started < 2.0
    assert list(tmp_path.iterdir()) == []


def test_nothing_listens_is_a_connection_error_not_a_crash(tmp_path):
    with PlatformClient("http://127.0.0.1:9", "http://127.0.0.1:9", retries=1, backoff=0.01) as c:
        with pytest.raises(PlatformUnavailable, match="ConnectError"):
            c.download("tree", tmp_path)


def test_progress_sees_every_byte_of_the_download(platform, client, tmp_path):
    bars = []

    class Bar:
        def __init__(self, desc, total):
            self.desc, self.total, self.n, self.closed = desc, total, 0, False
            bars.append(self)

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True

    got = client.download("listed-building-outline", tmp_path, progress=Bar)
    (bar,) = bars
    assert bar.desc == "listed-building-outline.parquet"
    assert bar.total == bar.n == got.bytes and bar.closed


# -- retry policy ----------------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_the_cap():
    c = PlatformClient("http://x", "http://x", backoff=1.0, max_backoff=8.0, rng=random.Random(1))
    for attempt, cap in [(0, 1), (1, 2), (2, 4), (3, 8), (6, 8)]:
        delays = {c._delay(attempt, None) for _ in range(50)}
        assert all(cap / 2 <= d <= cap for d in delays), (attempt, delays)
        assert len(delays) > 40  # jitter: replicas that failed together do not retry together
    assert c._delay(0, 5.0) == 5.0  # Retry-After wins when longer
    c.close()


def test_retry_after_is_read_as_seconds_or_as_an_http_date():
    assert parse_retry_after("120") == 120.0
    now = time.time()
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(
        30, abs=1
    )
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# -- API host --------------------------------------------------------------------------------------


def test_dataset_metadata_reads_entity_count_in_both_platform_shapes(platform, client):
    shapes = {name: type(meta["entity-count"]) for name, meta in platform.metadata.items()}
    assert set(shapes.values()) == {int, dict}  # the fake serves both, as the platform does
    for name in shapes:
        meta = client.dataset_metadata(name)
        assert meta["entity-count"] == entity_count(platform.metadata[name]) > 0
        assert meta["licence"] == "ogl3" and meta["attribution"]
    assert client.dataset_metadata("listed-building-outline")["entity-count"] == 952
    with pytest.raises(NotFound):
        client.dataset_metadata("no-such-dataset")


def test_entity_answers_one_entity_with_its_geometry(client):
    tree = client.entity(7002001662)
    assert tree["dataset"] == "tree" and tree["point"] == "POINT (-0.094959 51.439306)"
    assert client.entity(1000005)["name"] == "Chilterns"


def test_search_follows_next_links_to_the_last_page(platform, client):
    params = {"dataset": "listed-building-outline", "limit": "100", "exclude_field": "geometry,point"}
    pages = list(client.search_pages(params))
    assert len(pages) == 10 and "next" not in pages[-1]["links"]
    entities = client.search(params)
    assert len(entities) == 952 == len({e["entity"] for e in entities})
    assert all("geometry" not in e for e in entities)


def test_search_refuses_pages_that_do_not_add_up_to_the_count(platform, client, monkeypatch):
    real = client.get_json

    def lossy(url, params=None):  # a proxy that drops entities: the answer must not pass as complete
        page = real(url, params)
        page["entities"] = page["entities"][:-1]
        return page

    monkeypatch.setattr(client, "get_json", lossy)
    with pytest.raises(PlatformError, match="said 952 entities match but its pages held 942"):
        client.search({"dataset": "listed-building-outline", "limit": "100"})


# -- live fallback ---------------------------------------------------------------------------------


@pytest.fixture
def live(platform):
    lookup = LiveLookup(platform.url, ttl_seconds=60, retries=1, backoff=0.01, read_timeout=1)
    yield lookup
    lookup.close()


def test_live_lookup_reads_every_page_and_keys_answers_by_dataset(platform, live):
    answer = live.lookup(SOUTH_LONDON, ["listed-building-outline", "tree", "conservation-area", "green-belt"])
    assert {k: len(v) for k, v in answer.items()} == {
        "listed-building-outline": 951,
        "tree": 3,
        "conservation-area": 1,
        "green-belt": 0,
    }
    searches = [r for r in platform.requests if r.path == "/entity.json"]
    assert len(searches) == 2  # 954 entities at 500 a page: no silent cut at the first page
    first = searches[0].query
    assert first["geometry_relation"] == ["intersects"] and first["limit"] == ["500"]
    assert first["exclude_field"] == ["geometry,point"]
    assert "geometry" not in answer["tree"][0]


def test_live_lookup_answers_a_repeated_question_from_its_ttl_cache(platform, live):
    one = live.lookup(SOUTH_LONDON, ["tree", "conservation-area"])
    two = live.lookup(SOUTH_LONDON, ["conservation-area", "tree"])  # same question, other order
    assert one == two and live.calls == 1
    assert len([r for r in platform.requests if r.path == "/entity.json"]) == 1


def test_live_lookup_asks_again_once_the_ttl_has_passed(platform):
    with_short_ttl = LiveLookup(platform.url, ttl_seconds=0.2)
    with_short_ttl.lookup(SOUTH_LONDON, ["tree"])
    time.sleep(0.3)
    with_short_ttl.lookup(SOUTH_LONDON, ["tree"])
    assert with_short_ttl.calls == 2
    with_short_ttl.close()


def test_live_lookup_failure_raises_a_clear_error_and_caches_nothing(platform, live):
    platform.fault("/entity.json", "status", status=503, times=None)
    with pytest.raises(LiveLookupError, match="live lookup at .* failed: .*HTTP 503") as err:
        live.lookup(SOUTH_LONDON, ["tree"])
    assert err.value.datasets == ["tree"]
    platform.clear_faults()
    assert len(live.lookup(SOUTH_LONDON, ["tree"])["tree"]) == 3


def test_live_lookup_times_out_instead_of_hanging_a_check(platform):
    platform.fault("/entity.json", "hang", seconds=5, times=None)
    lookup = LiveLookup(platform.url, read_timeout=0.2, retries=0)
    started = time.monotonic()
    with pytest.raises(LiveLookupError, match="read timeout"):
        lookup.lookup(SOUTH_LONDON, ["tree"])
    assert time.monotonic() - started < 1.0
    lookup.close()
