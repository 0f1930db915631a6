"""Red-line boundary validation and boundary file uploads: each fault gets its own, human message."""

from __future__ import annotations

import io
import json
import zipfile

import geopandas as gpd
import numpy as np
import pytest
import shapely
from boundary_fixtures import *  # noqa: F403 - pytest fixtures: saltford
from shapely.geometry import mapping, shape

from boundary.errors import BoundaryTooLarge, InvalidBoundary
from boundary.geometry import BoundaryLimits, parse_upload, validate_boundary
from datasets import crs

E, N = 373_000.0, 166_000.0  # Saltford, Bath and North East Somerset, on the National Grid


def grid_polygon(coords, holes=()) -> dict:
    """GeoJSON (lon/lat lists) of a polygon given in National Grid metres, keeping the vertex order."""

    def ring(points):
        lon, lat = crs.bng_to_lonlat(np.array([p[0] for p in points]), np.array([p[1] for p in points]))
        return [[float(x), float(y)] for x, y in zip(lon, lat, strict=True)]

    return {"type": "Polygon", "coordinates": [ring(coords), *(ring(h) for h in holes)]}


def square(size=30.0, x=E, y=N):
    return [(x, y), (x + size, y), (x + size, y + size), (x, y + size), (x, y)]


def test_a_valid_square_is_measured_geodesically():
    b = validate_boundary(grid_polygon(square(30)))
    # 900 m² on the grid; the National Grid scale factor near Bath makes the ground area ~0.1 % larger.
    assert b.area_m2 == pytest.approx(900, rel=0.002)
    assert b.area_ha == pytest.approx(b.area_m2 / 10_000)
    assert b.perimeter_m == pytest.approx(120, rel=0.002)
    assert b.grid_reference.startswith("ST 73")
    assert b.warnings == []


def test_area_below_one_square_metre_is_refused():
    with pytest.raises(InvalidBoundary, match="0.64 m²") as err:
        validate_boundary(grid_polygon(square(0.8)))
    assert err.value.code == "too-small"


def test_area_above_the_configurable_maximum_is_refused():
    big = grid_polygon(square(1100))  # 121 ha
    with pytest.raises(InvalidBoundary, match="100 ha maximum"):
        validate_boundary(big)
    assert validate_boundary(big, BoundaryLimits(max_area_ha=150)).area_ha == pytest.approx(121, rel=0.01)


def test_more_than_ten_thousand_vertices_is_refused():
    circle = crs.to_wgs84(shapely.Point(E, N).buffer(100, quad_segs=2600))
    assert shapely.get_num_coordinates(circle) > 10_000
    with pytest.raises(BoundaryTooLarge, match="vertices"):
        validate_boundary(json.loads(json.dumps(mapping(circle))))


def test_fewer_than_three_distinct_points_is_refused():
    with pytest.raises(InvalidBoundary, match="at least 3 distinct points") as err:
        validate_boundary(grid_polygon([(E, N), (E + 10, N), (E, N), (E + 10, N), (E, N)]))
    assert err.value.pointer == "/coordinates/0"


def test_unclosed_ring_is_refused_with_its_ends():
    site = grid_polygon(square())
    site["coordinates"][0] = site["coordinates"][0][:-1]
    with pytest.raises(InvalidBoundary, match="not closed"):
        validate_boundary(site)


def test_hole_outside_the_shell_is_refused():
    site = grid_polygon(square(30), holes=[square(5, E + 100, N + 100)])
    with pytest.raises(InvalidBoundary, match="hole") as err:
        validate_boundary(site)
    assert err.value.code == "hole-outside-shell"


def test_bowtie_is_refused_with_the_location_of_the_crossing():
    bowtie = grid_polygon([(E, N), (E + 30, N + 30), (E + 30, N), (E, N + 30), (E, N)])
    with pytest.raises(InvalidBoundary, match=r"crosses itself at \[") as err:
        validate_boundary(bowtie)
    # The crossing is the middle of the bow tie, reported in lon/lat.
    where = err.value.detail.split("at [")[1].split("]")[0]
    lon, lat = (float(v) for v in where.split(","))
    e, n = crs.lonlat_to_bng(np.array([lon]), np.array([lat]))
    assert abs(e[0] - (E + 15)) < 0.5 and abs(n[0] - (N + 15)) < 0.5


def test_small_self_intersection_is_repaired_with_the_area_change_in_the_warning():
    # A 100 m square whose last edge makes a 0.5 m loop: repairing it changes the area by far under 1 %.
    ring = [
        (E, N),
        (E + 100, N),
        (E + 100, N + 100),
        (E + 50.5, N + 100),
        (E + 50, N + 100.5),
        (E + 50.5, N + 100.5),
        (E + 50, N + 100),
        (E, N + 100),
        (E, N),
    ]
    b = validate_boundary(grid_polygon(ring))
    assert b.geometry.is_valid
    assert any("repaired" in w and "m²" in w for w in b.warnings), b.warnings


def test_clockwise_rings_are_rewound_with_a_warning():
    b = validate_boundary(grid_polygon(list(reversed(square()))))
    assert any("rewound" in w for w in b.warnings)
    assert shapely.is_ccw(b.geometry.exterior)


def test_duplicate_points_are_removed_with_a_warning():
    ring = square()
    ring.insert(2, ring[1])
    b = validate_boundary(grid_polygon(ring))
    assert any("repeated points" in w for w in b.warnings)
    assert shapely.get_num_coordinates(b.geometry) == 5


def test_swapped_latitude_longitude_is_named():
    site = grid_polygon(square())
    site["coordinates"][0] = [[y, x] for x, y in site["coordinates"][0]]
    with pytest.raises(InvalidBoundary, match="swapped"):
        validate_boundary(site)


def test_metres_sent_as_degrees_are_named():
    with pytest.raises(InvalidBoundary, match="British National Grid"):
        validate_boundary({"type": "Polygon", "coordinates": [[list(p) for p in square()]]})


def test_outside_great_britain_is_refused():
    with pytest.raises(InvalidBoundary, match="outside Great Britain"):
        validate_boundary(
            {"type": "Polygon", "coordinates": [[[2.35, 48.85], [2.36, 48.85], [2.36, 48.86], [2.35, 48.85]]]}
        )


def test_a_point_is_not_a_red_line():
    with pytest.raises(InvalidBoundary, match="Polygon"):
        validate_boundary({"type": "Point", "coordinates": [-2.45, 51.4]})


# --- uploads ---------------------------------------------------------------------------------------------
@pytest.fixture
def grid_frame():
    return gpd.GeoDataFrame({"name": ["site"]}, geometry=[shapely.Polygon(square(40))], crs="EPSG:27700")


def expected_wgs84() -> shapely.Polygon:
    return crs.to_wgs84(shapely.Polygon(square(40)))


def read_back(name: str, content: bytes):
    geojson, warnings = parse_upload(name, content)
    return validate_boundary(geojson), warnings


def test_upload_geopackage_in_british_national_grid_goes_through_ostn15(grid_frame, tmp_path):
    grid_frame.to_file(tmp_path / "site.gpkg", driver="GPKG")
    b, _ = read_back("site.gpkg", (tmp_path / "site.gpkg").read_bytes())
    # Identical to OSTN15 (convertbng) to a micro-degree squared: not pyproj's Helmert (metres off).
    assert b.geometry.symmetric_difference(expected_wgs84()).area < 1e-12


def test_upload_zipped_shapefile(grid_frame, tmp_path):
    grid_frame.to_file(tmp_path / "site.shp")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for part in tmp_path.glob("site.*"):
            zf.write(part, part.name)
    b, _ = read_back("site.zip", buffer.getvalue())
    assert b.geometry.symmetric_difference(expected_wgs84()).area < 1e-12


def test_upload_kml(tmp_path):
    frame = gpd.GeoDataFrame({"Name": ["site"]}, geometry=[expected_wgs84()], crs="EPSG:4326")
    frame.to_file(tmp_path / "site.kml", driver="KML")
    b, _ = read_back("site.kml", (tmp_path / "site.kml").read_bytes())
    assert b.geometry.symmetric_difference(expected_wgs84()).area < 1e-12


def test_upload_geojson_and_web_mercator_geopackage(tmp_path):
    geojson = json.dumps(
        {"type": "Feature", "properties": {}, "geometry": mapping(expected_wgs84())}
    ).encode()
    b, _ = read_back("site.geojson", geojson)
    assert b.area_m2 == pytest.approx(1600, rel=0.002)
    gpd.GeoDataFrame(geometry=[expected_wgs84()], crs="EPSG:4326").to_crs(3857).to_file(
        tmp_path / "m.gpkg", driver="GPKG"
    )
    b, _ = read_back("m.gpkg", (tmp_path / "m.gpkg").read_bytes())
    assert b.area_m2 == pytest.approx(1600, rel=0.002)


def test_upload_with_several_layers_is_refused(grid_frame, tmp_path):
    grid_frame.to_file(tmp_path / "two.gpkg", layer="a", driver="GPKG")
    grid_frame.to_file(tmp_path / "two.gpkg", layer="b", driver="GPKG")
    with pytest.raises(InvalidBoundary, match="2 layers") as err:
        parse_upload("two.gpkg", (tmp_path / "two.gpkg").read_bytes())
    assert err.value.code == "one-site-per-file"


def test_upload_without_a_crs_is_refused(tmp_path):
    gpd.GeoDataFrame(geometry=[shapely.Polygon(square(40))]).to_file(tmp_path / "site.shp")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for part in tmp_path.glob("site.*"):
            zf.write(part, part.name)
    with pytest.raises(InvalidBoundary, match="coordinate reference system"):
        parse_upload("site.zip", buffer.getvalue())


def test_upload_refusals_name_the_problem():
    with pytest.raises(InvalidBoundary, match="upload a GeoJSON"):
        parse_upload("site.dwg", b"AC1027")
    with pytest.raises(InvalidBoundary, match="not a readable zip"):
        parse_upload("site.zip", b"not a zip")
    with pytest.raises(InvalidBoundary, match="empty"):
        parse_upload("site.kml", b"")
    with pytest.raises(BoundaryTooLarge):
        parse_upload("site.geojson", b" " * (10 * 1024 * 1024 + 1))


def test_saltford_sites_are_valid_boundaries(saltford):
    assert shape(saltford.outside).is_valid
    assert validate_boundary(saltford.outside).area_m2 == pytest.approx(900, rel=0.002)
