"""The constraints check: real sites against real layers, exact DE-9IM semantics, and the output formats."""

from __future__ import annotations

import json
import re
import urllib.parse

import geopandas as gpd
import jsonschema
import numpy as np
import pytest
import shapely
from api_fixtures import copy_cache
from conftest import REAL_DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from constraints.formats import to_geojson, to_odp, to_planx
from constraints.index import ConstraintIndex, Tolerance, _Pairs, subdivide
from constraints.polygon_overlay import INTERIOR, UNDECIDED
from constraints.site import SiteError, parse_site
from datasets.cache import LayerCache
from datasets.catalogue import load_catalogue
from datasets.crs import to_bng


@pytest.fixture(scope="module")
def sample_index(sample_cache, tmp_path_factory) -> ConstraintIndex:
    cache = LayerCache(copy_cache(sample_cache, tmp_path_factory.mktemp("cache")))
    return ConstraintIndex.from_cache(cache, load_catalogue())


def cobourg_road_site() -> shapely.Polygon:
    """The real PlanX request BOPS stored for a Cobourg Road, Southwark site."""
    params = json.loads((REAL_DATA / "bops__planx_constraints_proposed_params.json").read_text())
    source = params[0]["sourceRequest"].replace(" =", "=").replace(" &", "&")
    return shapely.from_wkt(urllib.parse.parse_qs(urllib.parse.urlparse(source).query)["geometry"][0])


def answer_for(answer: dict, key: str) -> dict:
    return next(c for c in answer["constraints"] if c["key"] == key)


# -- real data --------------------------------------------------------------------------------------


def test_cobourg_road_meets_exactly_the_one_listed_building_outline_planx_reported(sample_index):
    answer = sample_index.check(cobourg_road_site(), tolerance=Tolerance.strict())
    outlines = [e for e in answer_for(answer, "listed")["entities"] if e["dataset"] == "listed-building-outline"]
    assert [e["entity"] for e in outlines] == [42102419]
    assert outlines[0]["reference"] == "470787"
    assert answer_for(answer, "listed.gradeTwo")["status"] == "intersects"
    # the bundled outlines are a partial extract: they can show a listed building, never prove there is none
    assert answer_for(answer, "listed.gradeOne")["status"] == "unknown"
    assert "does not cover" in answer_for(answer, "listed.gradeOne")["reason"]


def test_a_site_inside_the_chilterns_is_in_an_aonb_and_designated(sample_index):
    chilterns = json.loads((REAL_DATA / "bops__1000005.json").read_text())
    point = shapely.from_wkt(chilterns["point"])
    site = shapely.Point(point.x, point.y).buffer(0.0005)
    answer = sample_index.check(site)
    aonb = answer_for(answer, "designated.AONB")
    assert aonb["status"] == "intersects"
    assert [e["entity"] for e in aonb["entities"]] == [1000005]
    assert aonb["entities"][0]["relation"] == "within"
    assert answer_for(answer, "designated")["status"] == "intersects"


def test_a_dataset_that_is_not_loaded_is_unknown_never_clear(sample_index):
    answer = sample_index.check(cobourg_road_site())
    flood = answer_for(answer, "flood")
    assert flood["status"] == "unknown"
    assert "flood-risk-zone" in flood["reason"]
    assert "could not be checked" in flood["text"]


def test_outside_a_layers_coverage_the_answer_is_unknown_not_no(sample_index):
    # Lambeth Palace: the sample conservation areas cover Bath and North East Somerset and the North East only
    lambeth = shapely.box(-0.1195, 51.4970, -0.1160, 51.4985)
    answer = sample_index.check(lambeth)
    conservation = answer_for(answer, "designated.conservationArea")
    assert conservation["status"] == "unknown"
    assert "does not cover" in conservation["reason"]
    # in Bath and North East Somerset, away from any conservation area, the same layer can say no
    saltford_fields = shapely.box(-2.4700, 51.3950, -2.4690, 51.3956)
    assert answer_for(sample_index.check(saltford_fields), "designated.conservationArea")["status"] == "clear"


def test_restricting_datasets_makes_the_others_unknown(sample_index):
    saltford_fields = shapely.box(-2.4700, 51.3950, -2.4690, 51.3956)
    answer = sample_index.check(saltford_fields, datasets=["conservation-area"])
    assert answer_for(answer, "listed")["status"] == "unknown"
    assert "left out" in answer_for(answer, "listed")["reason"]
    assert answer_for(answer, "designated.conservationArea")["status"] == "clear"


def test_the_site_has_geodesic_area_centroid_and_grid_reference(sample_index):
    answer = sample_index.check(cobourg_road_site())
    site = answer["site"]
    assert site["area_m2"] == pytest.approx(316.5, abs=1)
    assert site["area_ha"] == pytest.approx(site["area_m2"] / 10_000, rel=1e-3)
    assert site["grid_reference"].startswith("TQ 33")
    assert -0.08 < site["centroid"]["lon"] < -0.07


def test_provenance_names_every_dataset_used(sample_index):
    answer = sample_index.check(cobourg_road_site())
    provenance = answer["provenance"]
    assert provenance["datasets"]["listed-building-outline"]["features"] == 945
    assert provenance["tolerance"] == {"m2": 0.5, "pct": 0.1}
    assert provenance["checked_at"].endswith("Z")


# -- relations and tolerance ------------------------------------------------------------------------


def synthetic_index(tmp_path, frames: dict[str, gpd.GeoDataFrame]) -> ConstraintIndex:
    cache = LayerCache(tmp_path)
    for dataset, frame in frames.items():
        cache.write(dataset, frame, source={"type": "test"})
    return ConstraintIndex.from_cache(cache, load_catalogue())


def square(lon: float, lat: float, size: float) -> shapely.Polygon:
    return shapely.box(lon, lat, lon + size, lat + size)


def frame(dataset: str, geometries, **fields) -> gpd.GeoDataFrame:
    n = len(geometries)
    data = {"entity": np.arange(1, n + 1) + 100 * hash(dataset) % 1000 * 1000, "name": [f"{dataset} {i}" for i in range(n)]}
    data.update(fields)
    return gpd.GeoDataFrame(data, geometry=list(geometries), crs=4326)


def test_relations_follow_de9im(tmp_path):
    site = square(-1.0, 52.0, 0.001)
    entities = [
        square(-1.01, 51.99, 0.03),  # the site lies inside it
        square(-0.9996, 52.0004, 0.0002),  # inside the site
        square(-0.9995, 52.0005, 0.001),  # overlaps
        square(-0.999, 52.0, 0.001),  # shares an edge only
    ]
    index = synthetic_index(tmp_path, {"conservation-area": frame("conservation-area", entities)})
    answer = index.check(site)
    conservation = answer_for(answer, "designated.conservationArea")
    relations = {e["name"]: e["relation"] for e in conservation["entities"] + conservation["nearby"]}
    assert relations == {
        "conservation-area 0": "within",
        "conservation-area 1": "contains",
        "conservation-area 2": "overlaps",
        "conservation-area 3": "touches",
    }
    assert [e["name"] for e in conservation["nearby"]] == ["conservation-area 3"]
    within = next(e for e in conservation["entities"] if e["relation"] == "within")
    assert within["overlap_pct"] == pytest.approx(100, rel=1e-6)


def test_a_sliver_from_a_shared_boundary_is_nearby_not_intersecting(tmp_path):
    site = square(-1.0, 52.0, 0.001)  # about 68 m x 111 m
    sliver = shapely.box(-0.9990005, 52.0, -0.998, 52.001)  # reaches 3.4 cm into the site: about 4 m²
    index = synthetic_index(tmp_path, {"conservation-area": frame("conservation-area", [sliver])})
    default = answer_for(index.check(site), "designated.conservationArea")
    assert default["status"] == "clear"
    assert len(default["nearby"]) == 1 and 0 < default["nearby"][0]["overlap_m2"] < 10
    strict = answer_for(index.check(site, tolerance=Tolerance.strict()), "designated.conservationArea")
    assert strict["status"] == "intersects"


def test_entities_whose_end_date_has_passed_never_match(tmp_path):
    site = square(-1.0, 52.0, 0.001)
    entities = [square(-1.01, 51.99, 0.03), square(-1.01, 51.99, 0.03)]
    index = synthetic_index(tmp_path, {"conservation-area": frame("conservation-area", entities, **{"end-date": ["2001-01-01", ""]})})
    found = answer_for(index.check(site), "designated.conservationArea")["entities"]
    assert [e["end-date"] for e in found] == [""]


def test_an_entity_stops_matching_on_its_end_date_without_a_reload(tmp_path, monkeypatch):
    import constraints.index as index_module

    site = square(-1.0, 52.0, 0.001)
    entities = [square(-1.01, 51.99, 0.03), square(-1.01, 51.99, 0.03)]
    index = synthetic_index(tmp_path, {"conservation-area": frame("conservation-area", entities, **{"end-date": ["2030-06-02", ""]})})
    ends = []
    for day in ("2030-06-01", "2030-06-02", "2030-06-01"):  # the same snapshot, asked on each day in turn
        monkeypatch.setattr(index_module, "_today", lambda day=day: np.datetime64(day, "D"))
        ends.append(sorted(e["end-date"] for e in answer_for(index.check(site), "designated.conservationArea")["entities"]))
    assert ends == [["", "2030-06-02"], [""], ["", "2030-06-02"]]


def test_flood_zones_and_listed_grades_are_derived_from_entity_fields(tmp_path):
    site = square(-1.0, 52.0, 0.001)
    zones = frame("flood-risk-zone", [square(-1.01, 51.99, 0.03)] * 2, **{"flood-risk-level": ["2", "3"]})
    index = synthetic_index(tmp_path, {"flood-risk-zone": zones})
    answer = index.check(site)
    assert answer_for(answer, "flood")["status"] == "intersects"
    assert [e["flood-risk-level"] for e in answer_for(answer, "flood.zoneThree")["entities"]] == ["3"]
    assert [e["flood-risk-level"] for e in answer_for(answer, "flood.zoneTwo")["entities"]] == ["2"]


def test_no_cut_off_a_site_meeting_ten_thousand_entities_gets_them_all(tmp_path):
    lon, lat = np.meshgrid(np.linspace(-1.0, -0.99, 100), np.linspace(52.0, 52.01, 100))
    points = shapely.points(lon.ravel(), lat.ravel())
    index = synthetic_index(tmp_path, {"tree": frame("tree", points)})
    answer = index.check(square(-1.0001, 51.9999, 0.0102))
    assert len(answer_for(answer, "tpo")["entities"]) == 10_000


def test_points_against_areas_follow_de9im_whichever_is_the_site(tmp_path):
    """Point entities against area sites (a square, one with a hole, two parts) and address sites against
    area entities: in the interior it is "contains" (an area site) or "within" (an address), on the
    boundary (a shared vertex) "touches", outside nothing; as GEOS says on the grid. The compiled
    kernel answers the interiors and the outsides, and leaves the vertices to GEOS."""
    d = 0.001
    holed = square(-1.0, 52.0, 3 * d).difference(square(-1.0 + d, 52.0 + d, d))
    two_parts = shapely.MultiPolygon([square(-1.0, 52.0, d), square(-1.0 + 2 * d, 52.0, d)])
    areas = [square(-1.0, 52.0, d), holed, two_parts]
    rng = np.random.default_rng(3)
    trees = list(shapely.points(rng.uniform([-1.0005, 51.9995], [-0.9965, 52.0035], (300, 2))))  # in, out, in the hole
    trees += list(shapely.points(shapely.get_coordinates(shapely.get_rings(holed))))  # on the sites' corners
    trees += list(shapely.points(shapely.get_coordinates(two_parts)))
    addresses = list(shapely.points(rng.uniform([-1.0005, 51.9995], [-0.9965, 52.0035], (40, 2))))
    addresses += list(shapely.points(shapely.get_coordinates(shapely.get_rings(holed))))
    index = synthetic_index(tmp_path, {"tree": frame("tree", trees), "conservation-area": frame("conservation-area", areas)})
    bng = {name: to_bng(layer.geometry[:]) for name, layer in index.snapshot.layers.items()}

    def expected(site, dataset, on_site):
        meets = shapely.intersects(bng[dataset], site.bng)
        touches = shapely.touches(bng[dataset], site.bng)
        return {(dataset, int(row)): "touches" if touches[row] else on_site for row in np.flatnonzero(meets)}

    seen = set()
    for geometry in [*areas, *addresses]:
        site = parse_site(geometry)
        address = site.geometry.geom_type == "Point"
        dataset = "conservation-area" if address else "tree"
        want = expected(site, dataset, "within" if address else "contains")
        got = {(m.layer.name, m.row): m.relation for m in index.match(site, Tolerance.strict()) if m.layer.name == dataset}
        assert got == want, geometry.wkt
        seen |= set(want.values())
        pairs = _Pairs.candidates(index.snapshot, [site], None)
        if pairs is not None and pairs.keep_meeting():
            seen |= {"kernel", "geos"} if INTERIOR in pairs.relation and UNDECIDED in pairs.relation else set()
    assert seen == {"contains", "within", "touches", "kernel", "geos"}


def test_a_point_site_is_an_address_check(sample_index):
    chilterns = json.loads((REAL_DATA / "bops__1000005.json").read_text())
    answer = sample_index.check(json.loads(json.dumps(shapely.geometry.mapping(shapely.from_wkt(chilterns["point"])))))
    assert answer_for(answer, "designated.AONB")["status"] == "intersects"
    assert answer["site"]["area_m2"] == 0


def test_a_council_adds_its_own_keys_without_code(tmp_path):
    local = tmp_path / "local.json"
    local.write_text(json.dumps({"constraints": [{"key": "local.areaOfSpecialCharacter", "datasets": ["area-of-special-character"], "category": "Heritage and conservation", "positive": "is in an Area of Special Character", "negative": "is not in an Area of Special Character"}]}))
    cache = LayerCache(tmp_path / "cache")
    cache.write("area-of-special-character", frame("area-of-special-character", [square(-1.01, 51.99, 0.03)]), source={"type": "test"})
    index = ConstraintIndex.from_cache(cache, load_catalogue(local))
    assert answer_for(index.check(square(-1.0, 52.0, 0.001)), "local.areaOfSpecialCharacter")["status"] == "intersects"


# -- subdivision ------------------------------------------------------------------------------------


def test_subdivided_pieces_cover_the_polygon_exactly():
    polygon = to_bng(shapely.Point(-1.0, 52.0).buffer(0.2, 20_000))
    pieces, source = subdivide(np.array([polygon]), 256)
    assert len(pieces) > 100 and (source == 0).all()
    assert (shapely.get_num_coordinates(pieces) <= 256 + 16).all()
    assert shapely.area(pieces).sum() == pytest.approx(polygon.area, rel=1e-9)


# -- the check against brute force ------------------------------------------------------------------


@pytest.fixture(scope="module")
def brute_force_layers(sample_index):
    layers = {}
    for name, layer in sample_index.snapshot.layers.items():
        current = np.isnat(layer.end_date)
        layers[name] = (layer.entity[current], to_bng(layer.geometry[current]), layer.kind[current])
    return layers


site_strategy = st.tuples(
    st.sampled_from([(-2.36, 51.38), (-1.6, 54.97), (-0.075, 51.486), (-0.77, 51.68), (-2.45, 51.35), (-1.9, 55.2)]),
    st.floats(-0.02, 0.02),
    st.floats(-0.02, 0.02),
    st.floats(0.0002, 0.01),
    st.integers(4, 24),
    st.floats(0.3, 1.0),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(site_strategy)
def test_the_check_agrees_with_brute_force_over_every_feature(sample_index, brute_force_layers, params):
    (lon, lat), dx, dy, radius, vertices, squash = params
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    ring = np.c_[lon + dx + radius * np.cos(angles), lat + dy + squash * radius * np.sin(angles)]
    site = shapely.Polygon(ring)
    answer = sample_index.check(site, tolerance=Tolerance.strict())
    site_bng = to_bng(site)
    for dataset, (entity, geometry, _kind) in brute_force_layers.items():
        hits = shapely.intersects(geometry, site_bng)
        expected = {int(e): float(a) for e, a in zip(entity[hits], shapely.area(shapely.intersection(geometry[hits], site_bng)), strict=True)}
        got = {}
        for item in answer["constraints"]:
            for e in item["entities"]:
                if e["dataset"] == dataset:
                    got[int(e["entity"])] = e["overlap_m2"]
        assert set(got) == set(expected), dataset
        for ent, area in expected.items():
            assert got[ent] == pytest.approx(area, rel=1e-6, abs=1e-3)


# -- output formats ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def odp_schema():
    return json.loads((REAL_DATA / "digital-planning-data-schemas__schema-application.json").read_text())


def test_odp_designations_validate_against_the_real_schema(sample_index, odp_schema):
    validator = jsonschema.Draft7Validator({"$ref": "#/definitions/PlanningDesignation", "definitions": odp_schema["definitions"]})
    for site in (cobourg_road_site(), shapely.from_wkt(json.loads((REAL_DATA / "bops__1000005.json").read_text())["point"]).buffer(0.001)):
        designations = to_odp(sample_index.check(site))
        assert any(d["intersects"] for d in designations)
        for designation in designations:
            validator.validate(designation)


def _shape_of(value):
    if isinstance(value, dict):
        return {k: _shape_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape_of(value[0])] if value else []
    return type(value).__name__


def test_planx_output_has_the_keys_and_types_of_real_planx_answers(sample_index):
    real = json.loads((REAL_DATA / "planx-new__digitalLandResponseMock.json").read_text())
    ours = to_planx(sample_index.check(cobourg_road_site()), sample_index.catalogue)
    assert set(real) - {"_provenance"} <= set(ours)
    for key, real_entry in real["constraints"].items():
        if key not in ours["constraints"] or "text" not in real_entry:
            continue
        entry = ours["constraints"][key]
        if entry["value"] is None:
            continue  # not checked over the samples: reported as null with a reason, never as a "not"
        assert set(real_entry) - {"data"} <= set(entry), key
        assert type(entry["value"]) is type(real_entry["value"])
        assert isinstance(entry["text"], str) and isinstance(entry["category"], str)
    listed = ours["constraints"]["listed"]["data"][0]
    real_listed = real["constraints"]["listed"]["data"][0]
    for field in ("entry-date", "start-date", "end-date", "entity", "name", "dataset", "typology", "reference", "prefix", "organisation-entity"):
        assert type(listed[field]) is type(real_listed[field]), field


def test_geojson_output_is_a_feature_collection_of_the_intersecting_entities(sample_index):
    answer = sample_index.check(cobourg_road_site())
    collection = to_geojson(answer, sample_index.snapshot)
    assert collection["type"] == "FeatureCollection"
    ids = [f["id"] for f in collection["features"]]
    assert 42102419 in ids
    feature = collection["features"][ids.index(42102419)]
    assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert "listed" in feature["properties"]["keys"]


def test_bad_sites_are_refused_with_a_reason(sample_index):
    with pytest.raises(SiteError, match="swapped"):
        sample_index.check({"type": "Point", "coordinates": [51.5, -0.1]})
    with pytest.raises(SiteError, match="line, not a site"):
        parse_site({"type": "LineString", "coordinates": [[-0.1, 51.5], [-0.2, 51.5]]})


@pytest.mark.parametrize(
    ("position", "reason"),
    [
        ("[true, 51.38]", "holds true, not a number"),  # numpy would read true beside floats as 1.0
        ("[-2.36, false]", "holds false, not a number"),
        ('[-2.36, "51.38"]', 'holds "51.38", not a number'),  # numpy would read the string as a float
        ("[-2.36, null]", "holds null, not a number"),
        ("[-2.36]", "must be [longitude, latitude]"),
        ("[-2.36, 51.38, 1, 2]", "must be [longitude, latitude]"),
    ],
)
def test_a_position_that_is_not_two_numbers_is_named_among_good_ones(position, reason):
    ring = f"[[-2.37, 51.38], {position}, [-2.35, 51.39], [-2.37, 51.38]]"
    with pytest.raises(SiteError, match=re.escape(reason)) as refused:
        parse_site(f'{{"type": "Polygon", "coordinates": [{ring}]}}'.encode())
    assert refused.value.pointer == "/coordinates/0/1"


def test_integer_and_three_dimensional_positions_are_read_as_numbers():
    whole_degrees = parse_site({"type": "Polygon", "coordinates": [[[-2, 51], [-1, 51], [-1, 52], [-2, 51]]]})
    assert whole_degrees.area_m2 > 1e9
    with_heights = parse_site({"type": "Polygon", "coordinates": [[[-2.37, 51.38, 10], [-2.36, 51.38], [-2.36, 51.39, 12.5], [-2.37, 51.38, 10]]]})
    assert "heights (Z) were ignored: the check is two-dimensional" in with_heights.warnings
    with pytest.raises(SiteError, match="not a finite number"):
        parse_site({"type": "Polygon", "coordinates": [[[-2.37, 51.38], [float("nan"), 51.38], [-2.36, 51.39], [-2.37, 51.38]]]})


def test_the_small_input_ostn15_path_agrees_with_convertbng_to_the_millimetre():
    from convertbng.cutil import convert_bng

    from datasets.crs import lonlat_to_bng

    rng = np.random.default_rng(7)
    for _ in range(300):
        lon0, lat0 = rng.uniform(-5.7, 1.76), rng.uniform(49.9, 55.8)
        lon, lat = lon0 + rng.uniform(0, 0.05, 30), lat0 + rng.uniform(0, 0.03, 30)  # sites across cell edges too
        ours, theirs = lonlat_to_bng(lon, lat), convert_bng(lon, lat)
        assert np.array_equal(np.isfinite(ours[0]), np.isfinite(theirs[0]))
        ok = np.isfinite(theirs[0])
        assert np.abs(ours[0] - theirs[0])[ok].max(initial=0) < 0.001
        assert np.abs(ours[1] - theirs[1])[ok].max(initial=0) < 0.001
    assert np.isnan(lonlat_to_bng([10.0], [51.0])[0]).all()  # off the grid stays off the grid


def test_a_site_drawn_along_a_designations_edge_touches_it_whatever_the_layers_size(tmp_path):
    # sites and layers must be reprojected by the very same OSTN15 function: a large layer (converted
    # in one bulk call) and a small site that share vertices must still share an edge exactly
    rng = np.random.default_rng(11)
    corners = rng.uniform([-2.40, 51.35], [-2.30, 51.40], size=(2000, 2))
    areas = [shapely.box(x, y, x + 0.001, y + 0.0007) for x, y in corners]
    index = synthetic_index(tmp_path, {"conservation-area": frame("conservation-area", areas)})
    x, y = corners[0]
    beside = shapely.box(x + 0.001, y, x + 0.0015, y + 0.0007)  # shares the east edge of the first area
    for tolerance in (Tolerance(), Tolerance.strict()):
        conservation = answer_for(index.check(beside, tolerance=tolerance), "designated.conservationArea")
        first = [e for e in conservation["entities"] + conservation["nearby"] if e["name"] == "conservation-area 0"]
        assert first and first[0]["relation"] == "touches" and first[0]["overlap_m2"] == 0


def test_a_site_of_several_overlapping_parcels_is_merged_not_refused(sample_index):
    left = shapely.box(-2.4700, 51.3950, -2.4690, 51.3956)
    right = shapely.box(-2.4695, 51.3950, -2.4685, 51.3956)  # overlaps the left half-way
    collection = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(g)} for g in (left, right)],
    }
    site = parse_site(collection)
    assert site.geometry.geom_type == "Polygon"
    assert any("merged into one site" in w for w in site.warnings)
    merged = parse_site(shapely.union_all([left, right]))
    assert site.area_m2 == pytest.approx(merged.area_m2, rel=1e-9)


def test_the_quick_read_of_a_one_ring_site_answers_exactly_as_the_careful_one(monkeypatch):
    # parse_site reads the commonest site (one ring, no holes) with a few array operations and hands
    # everything else to the general path; both must give the very same coordinates, area and warnings
    from constraints import site as site_module

    rng = np.random.default_rng(5)
    bodies = []
    for _ in range(150):
        lon, lat = rng.uniform(-5.5, 1.5), rng.uniform(50.2, 55.5)
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 40)))
        radius = rng.uniform(0.0002, 0.003) * rng.uniform(0.6, 1.0, len(angles))
        ring = np.column_stack([lon + radius * np.cos(angles), lat + 0.6 * radius * np.sin(angles)])
        ring = np.vstack([ring, ring[:1]])
        for variant in (ring, ring[::-1], ring.round(4)):  # anticlockwise, clockwise, rounded (repeats, crossings)
            polygon = {"type": "Polygon", "coordinates": [variant.tolist()]}
            bodies.append(polygon)
            bodies.append({"type": "Feature", "properties": {"ref": "A1"}, "geometry": polygon})

    def read(body):
        try:
            return parse_site(json.dumps(body))
        except SiteError as err:
            return err

    quick = [read(body) for body in bodies]
    assert sum(site_module._simple_polygon(body, site_module.SiteLimits()) is not None for body in bodies) > len(bodies) / 2
    monkeypatch.setattr(site_module, "_simple_polygon", lambda obj, limits: None)
    careful = [read(body) for body in bodies]
    for a, b in zip(quick, careful, strict=True):
        if isinstance(b, SiteError):
            assert isinstance(a, SiteError) and a.message == b.message
            continue
        assert shapely.get_coordinates(a.geometry).tolist() == shapely.get_coordinates(b.geometry).tolist()
        assert shapely.get_coordinates(a.bng).tolist() == shapely.get_coordinates(b.bng).tolist()
        assert (a.area_m2, a.perimeter_m, a.centroid, a.grid_reference, a.vertices) == (b.area_m2, b.perimeter_m, b.centroid, b.grid_reference, b.vertices)
        assert (a.warnings, a.properties) == (b.warnings, b.properties)


def test_an_entitys_attributes_lie_side_by_side_and_read_as_columns(sample_index):
    # a check shows a few random rows of big layers: each row's values are kept together (the
    # columns are views of one row-major array), and read as columns they are the layer's table
    for layer in sample_index.snapshot.layer_list:
        columns = list(layer.columns.values())
        if len(columns) < 2 or not len(layer):
            continue
        base = columns[0].base
        assert base is not None and base.ndim == 2 and base.flags.c_contiguous
        assert all(values.base is base for values in columns)
        row = len(layer) // 2
        assert base[row].tolist() == [values[row] for values in columns]
        assert list(layer.properties(row))[1:] == list(layer.columns)
        table = sample_index.cache.read_table(layer.name, list(layer.columns))
        assert all(table.column(name)[row].as_py() == layer.columns[name][row] for name in layer.columns)
