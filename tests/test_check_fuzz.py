"""Generated GeoJSON against ``POST /v1/check`` over real HTTP, check processes on (the default): no input
makes a 5xx or takes longer than the check deadline, and every refusal is a problem+json answer.

The sites are drawn where the sample layers are (central Bath), valid and not: repeated vertices,
edges that cross (bow-ties, stars), holes inside and outside their shell, several parts, open rings,
and odd numbers (NaN and Infinity as JSON tokens, huge, tiny, whole, booleans, strings, heights).

At least 2,000 examples when ``CI=true`` (the ``ci`` profile); 150 otherwise, or set
``REDLINE_FUZZ_EXAMPLES``.
"""

from __future__ import annotations

import json
import math
import os
import time

import httpx
import pytest
from api_fixtures import ServedProcess, copy_cache
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.check_process import fork_available
from api.settings import Settings

pytestmark = pytest.mark.skipif(not fork_available(), reason="check processes need fork (POSIX)")

DEADLINE_S = Settings.model_fields["check_deadline_s"].default
EXAMPLES = int(os.environ.get("REDLINE_FUZZ_EXAMPLES") or (2000 if os.environ.get("CI") == "true" else 150))

# -- sites --------------------------------------------------------------------------------------

lon = st.floats(-2.3660, -2.3560)
lat = st.floats(51.3780, 51.3850)
odd_number = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0, 1, -1, 1e308, -1e308, 5e-324, 180.0, 90.0, 181.0, -91.0, 530000.0, 180000.0, 10**30]),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
)
position = st.one_of(
    st.tuples(lon, lat).map(list),
    st.tuples(lon, lat, st.floats(-100, 1000)).map(list),  # a height
    st.tuples(lat, lon).map(list),  # swapped
)
odd_position = st.one_of(
    st.lists(st.one_of(lon, lat, odd_number), min_size=0, max_size=4),
    odd_number,
)


@st.composite
def ring(draw, closed_probability: float = 0.9) -> list:
    points = draw(st.lists(position, min_size=1, max_size=24))
    if draw(st.booleans()):  # a vertex drawn twice in a row
        i = draw(st.integers(0, len(points) - 1))
        points.insert(i, list(points[i]))
    if draw(st.integers(0, 19)) == 0:  # one odd position somewhere
        points.insert(draw(st.integers(0, len(points))), draw(odd_position))
    if draw(st.floats(0, 1)) < closed_probability and points:
        points.append(list(points[0]) if isinstance(points[0], list) else points[0])
    return points


@st.composite
def star(draw) -> list:
    """A star polygon: every edge crosses many others (the sites that once held a core for minutes)."""
    n = draw(st.integers(5, 320))
    step = max(2, draw(st.integers(2, max(2, n // 2 - 1))))
    cx, cy, r = draw(lon), draw(lat), draw(st.floats(0.0001, 0.003))
    points = [[cx + r * math.cos(2 * math.pi * (i * step % n) / n), cy + 0.6 * r * math.sin(2 * math.pi * (i * step % n) / n)] for i in range(n)]
    return points + [points[0]]


@st.composite
def square_with_holes(draw) -> list:
    x, y, size = draw(lon), draw(lat), draw(st.floats(0.0002, 0.004))
    outer = [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
    holes = []
    for _ in range(draw(st.integers(0, 4))):
        hx, hy = x + draw(st.floats(-0.5, 1.2)) * size, y + draw(st.floats(-0.5, 1.2)) * size  # inside, across or outside
        hs = size * draw(st.floats(0.01, 0.6))
        holes.append([[hx, hy], [hx, hy + hs], [hx + hs, hy + hs], [hx + hs, hy], [hx, hy]])
    return [outer, *holes]


polygon_rings = st.one_of(st.lists(ring(), min_size=0, max_size=3), star().map(lambda r: [r]), square_with_holes())
polygon = polygon_rings.map(lambda rings: {"type": "Polygon", "coordinates": rings})
multipolygon = st.lists(polygon_rings, min_size=0, max_size=4).map(lambda parts: {"type": "MultiPolygon", "coordinates": parts})
geometry = st.one_of(
    polygon,
    multipolygon,
    position.map(lambda p: {"type": "Point", "coordinates": p}),
    st.lists(position, max_size=5).map(lambda p: {"type": "LineString", "coordinates": p}),
    st.fixed_dictionaries({"type": st.sampled_from(["Polygon", "MultiPolygon", "Point", "GeometryCollection", "Nonsense", ""]), "coordinates": st.one_of(odd_position, st.lists(odd_position, max_size=3))}),
)
feature = geometry.map(lambda g: {"type": "Feature", "properties": {"name": "fuzz"}, "geometry": g})
site = st.one_of(
    geometry,
    feature,
    st.lists(feature, min_size=0, max_size=5).map(lambda fs: {"type": "FeatureCollection", "features": fs}),
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3)),  # not GeoJSON at all
)


# -- the service --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(sample_cache, tmp_path_factory):
    folder = tmp_path_factory.mktemp("check-fuzz")
    with ServedProcess(copy_cache(sample_cache, folder / "cache"), folder / "serve.log") as server:
        with httpx.Client(base_url=server.url, timeout=DEADLINE_S + 30) as client:
            yield client


def test_generated_sites_never_make_a_5xx_or_overrun_the_check_deadline(served):
    client = served
    seen: dict[int, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(site=site)
    def one_site(site):
        # NaN and Infinity go on the wire as the bare tokens some clients write (not JSON: a 422)
        body = json.dumps(site, allow_nan=True)
        started = time.monotonic()
        answer = client.post("/v1/check", content=body, headers={"content-type": "application/json"})
        took = time.monotonic() - started
        seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
        assert answer.status_code < 500, (answer.status_code, answer.text[:500], body[:500])
        assert took < DEADLINE_S, (took, body[:500])
        if answer.status_code == 200:
            assert "site" in answer.json()
        else:
            assert answer.headers["content-type"].startswith("application/problem+json"), answer.headers
            problem = answer.json()
            assert problem["status"] == answer.status_code and problem["detail"], problem

    one_site()
    assert sum(seen.values()) >= EXAMPLES
    assert seen.get(200, 0) > EXAMPLES // 20 and seen.get(422, 0) > EXAMPLES // 4, seen  # both answered and refused sites
    ready = client.get("/readyz").json()
    assert ready["check_processes"] and ready["check_processes_replaced"] == 0, ready  # none was lost or killed
