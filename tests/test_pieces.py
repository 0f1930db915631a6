"""The index's pieces as arrays, and the packed tree over their boxes.

The store must give back, for any pieces asked for, geometries coordinate for coordinate those it was
made from (so every GEOS answer about them is unchanged); the tree must find, for any box, exactly the
pieces whose boxes meet it (edges and corners included, as GEOS's envelopes meet), in the order the
index's shapely ``STRtree`` gave them, so that answers list entities as they always did.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import shapely
from api_fixtures import copy_cache

from constraints.index import (
    MAX_PIECE_VERTICES,
    ConstraintIndex,
    Layer,
    Tolerance,
    _cut_pieces,
    _cut_rounds,
    is_current,
    subdivide,
    subdivide_batches,
)
from constraints.pieces import STRTREE_NODE_CAPACITY, PieceStore, PieceTree, strtree_rank
from constraints.wkb_column import POLYGON, WkbColumn
from datasets.cache import LayerCache
from datasets.catalogue import load_catalogue


def _blob(rng, x, y, radius, n, hole=False):
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.5, 1.0, n)
    shell = np.column_stack([x + r * np.cos(angles), y + r * np.sin(angles)])
    holes = [shapely.Point(x, y).buffer(radius * 0.2, 3).exterior.coords] if hole else None
    return shapely.make_valid(shapely.Polygon(shell, holes))


@pytest.fixture(scope="module")
def pieces() -> np.ndarray:
    """Subdivided polygons (some with holes), on a grid so that many boxes share edges, plus points and lines."""
    rng = np.random.default_rng(5)
    polygons = [_blob(rng, *rng.uniform(0, 1000, 2), rng.uniform(5, 80), int(rng.integers(4, 300)), hole=i % 3 == 0) for i in range(300)]
    grid = [shapely.box(x, y, x + 10, y + 10) for x in range(0, 200, 10) for y in range(0, 200, 10)]
    cut, _ = subdivide(np.array(polygons + grid, dtype=object), 32)
    points = [shapely.Point(p) for p in rng.uniform(0, 1000, (200, 2))] + [shapely.Point(10, 10), shapely.Point(20, 20)]
    lines = [shapely.LineString(rng.uniform(0, 1000, (3, 2))) for _ in range(50)]
    multi = [shapely.MultiPoint(rng.uniform(0, 1000, (3, 2))), shapely.MultiLineString([[(0, 0), (5, 5)], [(7, 7), (9, 1)]]), shapely.Point(), shapely.Polygon()]
    everything = np.concatenate([cut, np.array(points + lines + multi, dtype=object)])
    return everything[rng.permutation(len(everything))]  # polygons and the rest mixed, as a store may hold them


def _query_boxes(rng, n):
    corner = rng.uniform(-50, 1000, (n, 2))
    size = rng.uniform(0, 60, (n, 2)) * (rng.uniform(size=(n, 1)) > 0.1)  # a tenth are points
    boxes = np.column_stack([corner, corner + size])
    # boxes along the grid's lines and at its corners: edges and corners that only touch
    edges = np.array([[10, 10, 20, 20], [20, 0, 30, 10], [0, 0, 0, 0], [10, 10, 10, 10], [-5, 5, 0, 15], [200, 0, 210, 200]], dtype=float)
    return np.concatenate([boxes, edges])


def test_store_gives_back_each_piece_as_it_was_made(pieces):
    store = PieceStore.from_geometries(pieces)
    ids = np.random.default_rng(1).permutation(len(pieces))[: len(pieces) // 2]
    built = store.geometries(ids)
    assert len(store) == len(pieces)
    assert all(shapely.equals_exact(built, pieces[ids], tolerance=0))
    assert (shapely.get_type_id(built) == shapely.get_type_id(pieces[ids])).all()
    assert np.array_equal(store.area, shapely.area(pieces)) and np.array_equal(store.valid, shapely.is_valid(pieces))
    assert np.array_equal(store.bounds, shapely.bounds(pieces), equal_nan=True)
    assert store[int(ids[0])].equals_exact(pieces[ids[0]], 0)


def test_taken_and_joined_stores_hold_the_same_pieces(pieces):
    store = PieceStore.from_geometries(pieces)
    half = len(pieces) // 2
    joined = PieceStore.concatenate([store.take(np.arange(half)), PieceStore.from_geometries(pieces[half:])])
    assert all(shapely.equals_exact(joined[:], pieces, tolerance=0))
    assert np.array_equal(joined.area, store.area) and np.array_equal(joined.bounds, store.bounds, equal_nan=True)


def _same_stores(a: PieceStore, b: PieceStore) -> bool:
    arrays = ("xy", "ring_offsets", "polygon_offsets", "point_xy", "kind", "slot", "bounds", "area", "valid")
    same = all(getattr(a, k).dtype == getattr(b, k).dtype and np.array_equal(getattr(a, k), getattr(b, k), equal_nan=getattr(a, k).dtype.kind == "f") for k in arrays)
    return same and len(a.other) == len(b.other) and bool(shapely.equals_exact(a.other, b.other, tolerance=0).all())


def test_gathered_stores_are_the_stores_joined_and_taken_in_that_order(pieces):
    """Gathering puts the pieces of several stores straight into their new order, as joining them and
    taking that order does, and lets each store go once its pieces are in place."""
    bounds = [0, 100, 100, 101, 250, len(pieces)]  # an empty store among them
    order = np.random.default_rng(3).permutation(len(pieces))
    stores = [PieceStore.from_geometries(pieces[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    expected = PieceStore.concatenate(stores).take(order)
    gathered = PieceStore.gather(stores, order)
    assert stores == [] and _same_stores(gathered, expected)
    assert all(shapely.equals_exact(gathered[:], pieces[order], tolerance=0))
    with pytest.raises(ValueError):  # a piece named twice, another never
        PieceStore.gather([PieceStore.from_geometries(pieces[:3])], np.array([0, 1, 1]))


def test_a_layer_cut_a_few_kilobytes_at_a_time_holds_the_pieces_of_one_cut_in_its_order():
    """The build cuts a layer a batch of its WKB at a time: what it keeps is what cutting the whole
    layer at once gives (its polygons subdivided, then its points and lines whole), piece for piece."""
    from datasets.crs import to_bng

    rng = np.random.default_rng(21)
    centres = shapely.points(rng.uniform([-2.0, 52.0], [-1.0, 53.0], (30, 2)))
    # discs of up to 1,600 vertices, every other one with a hole: valid on the grid too
    shapes = [c.buffer(0.05, int(rng.integers(3, 400))) - (c.buffer(0.01, 8) if i % 2 else shapely.Polygon()) for i, c in enumerate(centres)]
    shapes += [shapely.Point(*rng.uniform([-2.0, 52.0], [-1.0, 53.0])) for _ in range(5)]
    shapes += [shapely.LineString(rng.uniform([-2.0, 52.0], [-1.0, 53.0], (3, 2)))]
    shapes = np.array(shapes, dtype=object)[rng.permutation(len(shapes))]
    geometry = WkbColumn(pa.array(shapely.to_wkb(shapes), pa.binary()))
    layer = Layer(name="test", entry={}, entity=np.arange(len(shapes)), columns={}, geometry=geometry, kind=geometry.kinds(),
                  area=np.zeros(len(shapes)), end_date=np.full(len(shapes), np.datetime64("NaT"), dtype="datetime64[D]"))
    bng = to_bng(shapes)
    cut, source = subdivide(bng, MAX_PIECE_VERTICES)
    point_like = np.flatnonzero(layer.kind != POLYGON)
    expected = PieceStore.from_geometries(np.concatenate([cut, bng[point_like]]))
    assert len(cut) > len(shapes) and len(geometry.batches(20_000)) > 5
    for batch_bytes in (20_000, 1 << 30):
        store, rows, area = _cut_pieces(layer, batch_bytes)
        assert _same_stores(store, expected)
        assert np.array_equal(rows, np.concatenate([source, point_like])) and np.array_equal(area, shapely.area(bng))


def test_tree_finds_what_strtree_finds_in_its_order(pieces):
    bounds = shapely.bounds(pieces)
    strtree = shapely.STRtree(pieces, node_capacity=STRTREE_NODE_CAPACITY)
    tree = PieceTree(bounds, strtree_rank(bounds))
    queries = _query_boxes(np.random.default_rng(2), 400)
    found = 0
    for box in queries:
        expected = strtree.query(shapely.box(*box))
        got = tree.query_box(*box)
        assert got.tolist() == expected.tolist()
        found += len(got)
    assert found > len(queries)  # the queries do meet pieces, many of them


def test_many_queries_at_once_are_each_query_alone(pieces):
    tree = PieceTree(shapely.bounds(pieces))
    queries = _query_boxes(np.random.default_rng(3), 300)
    query_of, hits = tree.query_boxes(queries)
    assert (np.diff(query_of) >= 0).all()
    for q, box in enumerate(queries):
        alone = tree.query_box(*box)
        assert hits[query_of == q].tolist() == alone.tolist()
        assert (np.diff(alone) > 0).all()  # without a rank: ascending piece numbers


def test_queries_that_meet_more_pieces_than_first_thought_find_them_all(pieces):
    # the search makes room for a few pieces a query and grows it when a query meets more
    bounds = shapely.bounds(pieces)
    strtree = shapely.STRtree(pieces, node_capacity=STRTREE_NODE_CAPACITY)
    tree = PieceTree(bounds, strtree_rank(bounds))
    everything = np.array([-100.0, -100.0, 1100.0, 1100.0])
    queries = np.array([[0.0, 0.0, 1.0, 1.0], everything, [0.0, 0.0, 300.0, 300.0], everything])
    query_of, hits = tree.query_boxes(queries)
    for q, box in enumerate(queries):
        assert hits[query_of == q].tolist() == strtree.query(shapely.box(*box)).tolist()
    assert (query_of == 1).sum() == (~np.isnan(bounds).any(axis=1)).sum()  # every piece but the empty ones


def test_tree_query_with_a_predicate_is_strtree_query(pieces):
    store = PieceStore.from_geometries(pieces)
    tree = PieceTree(store.bounds, store=store)
    strtree = shapely.STRtree(pieces)
    rng = np.random.default_rng(4)
    for _ in range(50):
        area = _blob(rng, *rng.uniform(0, 1000, 2), 40, 12)
        assert sorted(tree.query(area, predicate="intersects").tolist()) == sorted(strtree.query(area, predicate="intersects").tolist())


def test_nothing_is_found_for_empty_queries_or_in_an_empty_tree():
    tree = PieceTree(shapely.bounds(np.array([shapely.box(0, 0, 1, 1)])))
    assert tree.query(shapely.Polygon()).tolist() == []
    assert tree.query_box(2, 2, 3, 3).tolist() == []
    assert PieceTree(np.zeros((0, 4))).query_box(0, 0, 1, 1).tolist() == []


@pytest.fixture(scope="module")
def sample_index(sample_cache, tmp_path_factory) -> ConstraintIndex:
    cache = LayerCache(copy_cache(sample_cache, tmp_path_factory.mktemp("cache")))
    return ConstraintIndex.from_cache(cache, load_catalogue())


def test_the_index_finds_each_sites_pieces_in_its_former_strtree_order(sample_index):
    snap = sample_index.snapshot
    pieces = snap.pieces[:]
    strtree = shapely.STRtree(pieces, node_capacity=STRTREE_NODE_CAPACITY)
    rng = np.random.default_rng(6)
    x0, y0, x1, y1 = snap.pieces.bounds[:, 0].min(), snap.pieces.bounds[:, 1].min(), snap.pieces.bounds[:, 2].max(), snap.pieces.bounds[:, 3].max()
    met = 0
    for _ in range(300):
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        size = rng.uniform(0, (x1 - x0) / 20)
        box = shapely.box(cx, cy, cx + size, cy + size)
        expected = strtree.query(box)
        assert snap.tree.query(box).tolist() == expected.tolist()
        met += len(expected) > 1
    assert met > 10


def test_a_saved_store_loads_as_it_was(pieces, tmp_path):
    store = PieceStore.from_geometries(pieces)
    rows = np.arange(len(pieces)) * 3
    store.save(tmp_path / "p.npz", tmp_path / "p.xy.npy", row=rows)
    loaded, (loaded_rows,) = PieceStore.load(tmp_path / "p.npz", tmp_path / "p.xy.npy", ("row",))
    assert np.array_equal(loaded_rows, rows)
    joined = PieceStore.concatenate([loaded])  # a snapshot's store: its own copy of the mapped vertices
    assert joined.xy.flags.writeable and all(shapely.equals_exact(joined[:], pieces, tolerance=0))
    assert np.array_equal(joined.area, store.area) and np.array_equal(joined.bounds, store.bounds, equal_nan=True)


def test_vertices_that_do_not_match_their_offsets_are_refused(pieces, tmp_path):
    store = PieceStore.from_geometries(pieces)
    store.save(tmp_path / "p.npz", tmp_path / "p.xy.npy")
    np.save(tmp_path / "p.xy.npy", store.xy[:-1])
    with pytest.raises(ValueError):
        PieceStore.load(tmp_path / "p.npz", tmp_path / "p.xy.npy")


def _answers(index, sites):
    out = []
    for site in sites:
        answer = index.check(site)
        answer["provenance"].pop("checked_at")
        out.append(answer)
    return out


def test_derived_pieces_answer_as_the_pieces_they_were_cut_as(sample_cache, tmp_path):
    """A cold start reads the pieces a first build cut and saved (or, from a cache derived before
    they were arrays, their WKB) and answers every site exactly as that first build did."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datasets.crs import to_wgs84

    cache = LayerCache(copy_cache(sample_cache, tmp_path / "cache"))
    for old in cache.derived_dir.glob("*.pieces-*"):
        old.unlink()
    first = ConstraintIndex.from_cache(cache, load_catalogue())
    snap = first.snapshot
    rng = np.random.default_rng(9)
    centres = snap.pieces.bounds[rng.choice(len(snap.pieces), 40, replace=False)]
    sites = [to_wgs84(shapely.Point((b[0] + b[2]) / 2, (b[1] + b[3]) / 2).buffer(rng.uniform(5, 300), 4)) for b in centres]
    expected = _answers(first, sites)
    assert sum(bool(c["entities"]) for a in expected for c in a["constraints"]) > 10
    saved = sorted(p.name for p in cache.derived_dir.glob("*.pieces-v4.*"))
    assert len(saved) == 2 * len(snap.layer_list)
    assert _answers(ConstraintIndex.from_cache(cache, load_catalogue()), sites) == expected

    for i, layer in enumerate(snap.layer_list):  # the same pieces as a cache derived before v4 held them
        ids = np.flatnonzero(snap.piece_layer == i)
        table = pa.table({"wkb": shapely.to_wkb(snap.pieces[ids]), "row": snap.piece_row[ids]})
        table = table.replace_schema_metadata({b"entity_area": layer.area.tobytes()})
        pq.write_table(table, cache.derived_path(layer.name, layer.entry["version"], "pieces-v3.parquet"))
    for saved in cache.derived_dir.glob("*.pieces-v4.*"):
        saved.unlink()
    assert _answers(ConstraintIndex.from_cache(cache, load_catalogue()), sites) == expected
    assert len(list(cache.derived_dir.glob("*.pieces-v4.*"))) == 2 * len(snap.layer_list)


def test_a_cold_start_reads_the_pieces_rank_a_first_build_worked_out(sample_cache, tmp_path, monkeypatch):
    """The rank (the STRtree's order of all the layers' pieces together) is kept beside the derived
    pieces: a cold start reads it rather than building a throwaway STRtree, and answers as the first
    build did; a damaged file, or one worked out for other pieces, is worked out again."""
    import constraints.index as index_module
    from datasets.crs import to_wgs84

    cache = LayerCache(copy_cache(sample_cache, tmp_path / "cache"))
    for old in cache.derived_dir.glob("all-layers.*"):
        old.unlink()
    first = ConstraintIndex.from_cache(cache, load_catalogue())
    snap = first.snapshot
    (kept,) = cache.derived_dir.glob("all-layers.*.strtree-rank-v1.npz")
    assert np.array_equal(np.load(kept)["rank"], snap.tree.rank)
    rng = np.random.default_rng(5)
    centres = snap.pieces.bounds[rng.choice(len(snap.pieces), 40, replace=False)]
    sites = [to_wgs84(shapely.Point((b[0] + b[2]) / 2, (b[1] + b[3]) / 2).buffer(rng.uniform(5, 300), 4)) for b in centres]
    expected = _answers(first, sites)
    worked_out = []

    def counted(bounds):
        worked_out.append(len(bounds))
        return strtree_rank(bounds)

    monkeypatch.setattr(index_module, "strtree_rank", counted)
    assert _answers(ConstraintIndex.from_cache(cache, load_catalogue()), sites) == expected
    assert worked_out == []

    kept.write_bytes(kept.read_bytes()[: kept.stat().st_size // 2])  # a damaged file
    assert _answers(ConstraintIndex.from_cache(cache, load_catalogue()), sites) == expected
    assert worked_out == [len(snap.pieces)]

    with open(kept, "wb") as file:  # whole, but for other pieces (the boxes' digest differs)
        np.savez(file, rank=np.arange(len(snap.pieces))[::-1].copy(), bounds_digest=np.zeros(16, np.uint8))
    assert _answers(ConstraintIndex.from_cache(cache, load_catalogue()), sites) == expected
    assert len(worked_out) == 2 and np.array_equal(np.load(kept)["rank"], snap.tree.rank)


def test_the_check_meets_and_measures_as_geos_does(sample_index):
    """What the compiled kernels decide, and what they leave to GEOS, comes out as GEOS alone says:
    for sites across the pieces, on their edges and corners, and addresses on their vertices, every
    entity met (DE-9IM intersects) with the area it shares with the site."""
    from constraints.site import parse_site
    from datasets.crs import to_wgs84

    snap = sample_index.snapshot
    pieces = snap.pieces[:]
    rng = np.random.default_rng(11)
    chosen = rng.choice(len(pieces), 60, replace=False)
    polygons = [i for i in chosen if shapely.get_type_id(pieces[i]) == 3]
    sites = [to_wgs84(shapely.Point(*rng.uniform(snap.pieces.bounds[i, :2], snap.pieces.bounds[i, 2:] + 1e-9)).buffer(rng.uniform(5, 200), 3)) for i in chosen]
    sites += [to_wgs84(pieces[i]) for i in polygons[:10]]  # a site drawn on a piece: every edge shared
    sites += [to_wgs84(shapely.Point(shapely.get_coordinates(pieces[i])[0])) for i in polygons[:10]]  # addresses on vertices
    sites += [to_wgs84(shapely.centroid(pieces[i])) for i in chosen[:20]]
    strict = 0
    for geometry in sites:
        site = parse_site(geometry, sample_index.limits)
        found = {(m.layer.name, m.row): m.overlap_m2 for m in sample_index.match(site, Tolerance.strict())}
        meets = np.flatnonzero(shapely.intersects(site.bng, pieces))
        expected: dict = {}
        for i in meets:
            layer = snap.layer_list[snap.piece_layer[i]]
            row = int(snap.piece_row[i])
            if not is_current(layer.end_date[row]):
                continue
            both_areas = shapely.area(site.bng) > 0 and shapely.area(pieces[i]) > 0
            expected[(layer.name, row)] = expected.get((layer.name, row), 0.0) + (shapely.area(shapely.intersection(site.bng, pieces[i])) if both_areas else 0.0)
        assert found.keys() == expected.keys()
        for key, area in expected.items():
            assert found[key] == pytest.approx(area, rel=1e-9, abs=1e-6)
        strict += len(found)
    assert strict > len(sites)


def test_only_the_newest_ranks_are_kept(tmp_path):
    """Each new set of layer versions writes its own rank file; the older ones beyond the few a
    reloading service and its workers may still build go, and a kept one is read back as written."""
    import time
    from types import SimpleNamespace

    from constraints.index import RANK_FILES_KEPT, _piece_rank

    cache = LayerCache(tmp_path)
    bounds = np.array([[x, 0.0, x + 1.0, 1.0] for x in range(30)])
    versions = [f"2026010{day}T000000-abcd" for day in range(1, 7)]
    for version in versions:
        layers = [SimpleNamespace(name="green-belt", entry={"version": version})]
        assert np.array_equal(_piece_rank(cache, layers, bounds), strtree_rank(bounds))
        time.sleep(0.01)  # distinct modification times
    assert len(list(cache.derived_dir.glob("all-layers.*"))) == RANK_FILES_KEPT
    newest = [SimpleNamespace(name="green-belt", entry={"version": versions[-1]})]
    kept = max(cache.derived_dir.glob("all-layers.*"), key=lambda path: path.stat().st_mtime_ns)
    before = kept.stat().st_mtime_ns
    assert np.array_equal(_piece_rank(cache, newest, bounds), strtree_rank(bounds))
    assert kept.stat().st_mtime_ns == before, "read back, not written again"


def _comb(x, y, teeth):
    """A comb: a polygon whose halves fall apart into several parts when it is cut (multipart halves)."""
    spine = shapely.box(x, y, x + 4 * teeth, y + 2)
    return shapely.union_all([spine] + [shapely.Point(x + 4 * t + 1, y + 20).buffer(1.5, 8).union(shapely.box(x + 4 * t, y, x + 4 * t + 2, y + 20)) for t in range(teeth)])


def test_a_layer_cut_in_batches_gives_the_pieces_of_one_cut_in_the_same_order():
    rng = np.random.default_rng(11)
    shapes = [_blob(rng, *rng.uniform(0, 500, 2), rng.uniform(5, 80), int(rng.integers(4, 400)), hole=i % 2 == 0) for i in range(40)]
    shapes += [_comb(*rng.uniform(0, 500, 2), int(rng.integers(3, 12))) for _ in range(10)]
    shapes += [shapely.MultiPolygon([_blob(rng, 0, 0, 10, 100), _blob(rng, 50, 0, 10, 100)]), shapely.Polygon()]
    layer = np.array(shapes, dtype=object)[rng.permutation(len(shapes))]
    whole, whole_source = subdivide(layer, 24)
    for size in (1, 3, 7, 20):
        batches = [(lo, layer[lo : lo + size]) for lo in range(0, len(layer), size)]
        cut, source = subdivide_batches(batches, 24)
        assert np.array_equal(source, whole_source)
        assert shapely.equals_exact(cut, whole, tolerance=0).all()


def test_one_cut_lists_each_rounds_pieces_in_the_order_of_their_keys():
    """What makes batches mergeable: within a round, the pieces already come in their keys' order."""
    rng = np.random.default_rng(12)
    layer = np.array([_blob(rng, *rng.uniform(0, 500, 2), 60, 400, hole=True) for _ in range(10)] + [_comb(0, 0, 9)], dtype=object)
    rounds = _cut_rounds(layer, 24)
    assert len(rounds) > 3
    for _, keys in rounds:
        assert np.array_equal(np.lexsort(keys.T[::-1]), np.arange(len(keys)))
