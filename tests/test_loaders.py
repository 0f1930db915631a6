"""Loading a council's own GIS files: every common format, any CRS (British National Grid through OSTN15),
bad rows repaired or skipped and named, stable local ids.

Test files are written in a temporary folder from the real extracts in ``shared/data/real``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Geod

from datasets import crs
from datasets.loaders import MISSING_GEOMETRY, OFF_GRID, LoadError, read_layer_file

OUTLINES_CSV = "digital-land-python__listed-building-outline-flattened.csv"
BANES_CA = "banes-geographic-data__banes_conservation_ar.geojson"


@pytest.fixture(scope="module")
def banes(real_data) -> gpd.GeoDataFrame:
    """The 36 real Bath and North East Somerset conservation areas (10 of them invalid polygons)."""
    return gpd.read_file(real_data / BANES_CA)


@pytest.fixture(scope="module")
def valid_banes(banes) -> gpd.GeoDataFrame:
    return banes[banes.is_valid].head(8).reset_index(drop=True)


@pytest.fixture(scope="module")
def southwark(real_data) -> gpd.GeoDataFrame:
    """Valid real listed-building outlines in London, where OSTN15 and Helmert disagree by metres."""
    table = pd.read_csv(real_data / OUTLINES_CSV, dtype=str, keep_default_na=False)
    frame = gpd.GeoDataFrame(
        table[["entity", "name", "listed_building_grade"]],
        geometry=shapely.from_wkt(table["geometry"]),
        crs=4326,
    )
    frame = frame[frame.is_valid & (table["organisation_entity"] == "329")]
    return frame.head(30).reset_index(drop=True)


def same_shapes(loaded, expected, tolerance: float = 1e-9) -> bool:
    """Every shape within ``tolerance`` degrees of its counterpart (writers may turn a Polygon into a
    one-part MultiPolygon, so this compares point sets, not representations)."""
    loaded = np.asarray(getattr(loaded, "geometry", loaded))
    expected = np.asarray(getattr(expected, "geometry", expected))
    return len(loaded) == len(expected) and bool(
        (shapely.hausdorff_distance(loaded, expected) <= tolerance).all()
    )


# -- formats ---------------------------------------------------------------------------------------


def write_shapefile(frame: gpd.GeoDataFrame, folder: Path) -> Path:
    folder.mkdir()
    frame.to_file(folder / "areas.shp", driver="ESRI Shapefile")
    return folder / "areas.shp"


@pytest.mark.parametrize("kind", ["geojson", "gpkg", "shp", "zip", "fgb"])
def test_each_gis_format_loads_the_same_features(tmp_path, valid_banes, kind):
    if kind == "zip":
        shp = write_shapefile(valid_banes, tmp_path / "shp")
        path = tmp_path / "areas.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for part in shp.parent.iterdir():
                archive.write(part, part.name)
    elif kind == "shp":
        path = write_shapefile(valid_banes, tmp_path / "shp")
    else:
        path = tmp_path / f"areas.{kind}"
        valid_banes.to_file(path, driver={"geojson": "GeoJSON", "gpkg": "GPKG", "fgb": "FlatGeobuf"}[kind])

    report = read_layer_file(path, "conservation-area", name_field="name")

    assert report.loaded == len(valid_banes) and report.skipped == [] and report.repaired == 0
    # FlatGeobuf stores features in its spatial index's order, so compare feature by feature by name
    assert sorted(report.frame["name"]) == sorted(valid_banes["name"])
    expected = valid_banes.set_index("name").loc[report.frame["name"]]
    assert same_shapes(report.frame, expected)
    assert (report.frame["dataset"] == "conservation-area").all()
    assert report.frame.crs.to_epsg() == 4326
    assert report.source["type"] == "local" and report.source["path"] == str(path.resolve())
    assert len(report.source["sha256"]) == 64
    assert report.bounds == pytest.approx(list(valid_banes.total_bounds))
    assert "conservation-area: loaded 8, repaired 0, skipped 0" in report.summary()


def test_a_file_with_several_layers_asks_which_one(tmp_path, valid_banes):
    path = tmp_path / "two.gpkg"
    valid_banes.head(3).to_file(path, layer="conservation_areas", driver="GPKG")
    valid_banes.tail(2).to_file(path, layer="article_4", driver="GPKG")

    with pytest.raises(LoadError, match="--layer") as refused:
        read_layer_file(path, "conservation-area")
    assert "conservation_areas" in str(refused.value) and "article_4" in str(refused.value)
    assert read_layer_file(path, "article-4-direction-area", layer="article_4").loaded == 2


def test_a_file_that_is_not_gis_is_refused(tmp_path):
    path = tmp_path / "notes.gpkg"
    path.write_text("minutes of the planning committee")
    with pytest.raises(LoadError, match="could not be read as a GIS file"):
        read_layer_file(path, "conservation-area")
    with pytest.raises(LoadError, match="does not exist"):
        read_layer_file(tmp_path / "missing.geojson", "conservation-area")


# -- the platform's flattened CSV ------------------------------------------------------------------


def test_the_real_flattened_csv_with_snake_case_headers_loads_with_platform_fields(real_data):
    source = pd.read_csv(real_data / OUTLINES_CSV, dtype=str, keep_default_na=False)
    invalid = int((~shapely.is_valid(shapely.from_wkt(source["geometry"]))).sum())

    report = read_layer_file(real_data / OUTLINES_CSV, "listed-building-outline")

    frame = report.frame
    assert {"organisation-entity", "entry-date", "listed-building-grade", "documentation-url"} <= set(
        frame.columns
    )
    assert "listed_building_grade" not in frame.columns
    assert report.loaded + len(report.skipped) == len(source) == 952
    # the 10 invalid outlines: repaired where a polygon remains, otherwise skipped and named
    assert invalid == 10 and report.repaired + len(report.skipped) == invalid
    assert all(reason == "invalid geometry that cannot be repaired" for _, reason in report.skipped)
    assert shapely.is_valid(frame.geometry.to_numpy()).all()
    # platform entity numbers are kept, not replaced by local ids
    cobourg = frame[frame["entity"] == 42102419].iloc[0]
    assert cobourg["reference"] == "470787" and cobourg["listed-building-grade"] == "II"
    assert frame["entity"].dtype == np.int64
    for row, _ in report.skipped:
        assert source.iloc[row - 1]["entity"] not in set(frame["entity"].astype(str))


def test_kebab_case_headers_load_exactly_like_snake_case(tmp_path, real_data):
    source = pd.read_csv(real_data / OUTLINES_CSV, dtype=str, keep_default_na=False).head(60)
    snake = tmp_path / "snake.csv"
    kebab = tmp_path / "kebab.csv"
    source.to_csv(snake, index=False)
    source.rename(columns=lambda c: c.replace("_", "-")).to_csv(kebab, index=False)

    a = read_layer_file(snake, "listed-building-outline").frame
    b = read_layer_file(kebab, "listed-building-outline").frame

    assert list(a.columns) == list(b.columns)
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert same_shapes(a, b, 0)


def test_a_csv_row_without_geometry_falls_back_to_its_point(tmp_path, real_data):
    source = pd.read_csv(real_data / OUTLINES_CSV, dtype=str, keep_default_na=False).head(6)
    source.loc[[1, 4], "geometry"] = ""
    path = tmp_path / "outlines.csv"
    source.to_csv(path, index=False)

    frame = read_layer_file(path, "listed-building-outline").frame

    assert len(frame) == 6
    by_entity = frame.set_index(frame["entity"].astype(str)).geometry
    for i in (1, 4):
        assert by_entity[source["entity"][i]].equals(shapely.from_wkt(source["point"][i]))
    assert by_entity[source["entity"][0]].geom_type == "MultiPolygon"


def test_a_csv_without_any_geometry_column_is_refused(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text("entity,name\n1,Bath\n")
    with pytest.raises(LoadError, match="a column of WKT .*'geometry'.*'point'.* or coordinate columns"):
        read_layer_file(path, "conservation-area")


# -- coordinate systems ----------------------------------------------------------------------------


def test_a_british_national_grid_shapefile_is_reprojected_with_ostn15_not_helmert(tmp_path, southwark):
    grid = gpd.GeoDataFrame(
        southwark.drop(columns="geometry"), geometry=crs.to_bng(southwark.geometry.values), crs=27700
    )
    path = write_shapefile(grid, tmp_path / "bng")

    frame = read_layer_file(path, "listed-building-outline").frame

    assert same_shapes(frame, crs.to_wgs84(grid.geometry.to_numpy()), tolerance=1e-12)
    assert same_shapes(frame, southwark, tolerance=1e-7)  # round trip through the grid: well under 1 cm
    # pyproj without the OSTN15 grid file uses a Helmert fit: metres away in London
    helmert = grid.to_crs(4326)
    ours = shapely.get_coordinates(frame.geometry.to_numpy())
    theirs = shapely.get_coordinates(helmert.geometry.to_numpy())
    _, _, metres = Geod(ellps="WGS84").inv(ours[:, 0], ours[:, 1], theirs[:, 0], theirs[:, 1])
    assert metres.max() > 0.5, f"Helmert and OSTN15 differ by only {metres.max():.2f} m"


def test_a_file_with_no_crs_is_refused_unless_crs_is_given(tmp_path, southwark):
    grid = gpd.GeoDataFrame(
        southwark.drop(columns="geometry"), geometry=crs.to_bng(southwark.geometry.values), crs=27700
    )
    path = write_shapefile(grid, tmp_path / "noprj")
    path.with_suffix(".prj").unlink()

    with pytest.raises(LoadError, match="--crs") as refused:
        read_layer_file(path, "listed-building-outline")
    assert "coordinate system" in str(refused.value)

    frame = read_layer_file(path, "listed-building-outline", crs="27700").frame
    assert same_shapes(frame, southwark, tolerance=1e-7)


def test_another_projected_crs_is_reprojected(tmp_path, valid_banes):
    path = tmp_path / "mercator.gpkg"
    valid_banes.to_crs(3857).to_file(path, driver="GPKG")
    frame = read_layer_file(path, "conservation-area").frame
    assert same_shapes(frame, valid_banes, tolerance=1e-7)


def test_rows_that_cannot_lie_in_great_britain_are_skipped_and_named(tmp_path, valid_banes):
    frame = valid_banes.copy()
    frame.loc[2, "geometry"] = shapely.affinity.translate(frame.geometry[2], xoff=20)  # in Poland
    frame.loc[5, "geometry"] = shapely.affinity.translate(frame.geometry[5], yoff=-60)  # at sea
    path = tmp_path / "some-abroad.geojson"
    frame.to_file(path, driver="GeoJSON")

    report = read_layer_file(path, "conservation-area")

    assert report.loaded == len(frame) - 2
    assert report.skipped == [
        (3, "coordinates cannot lie in Great Britain"),
        (6, "coordinates cannot lie in Great Britain"),
    ]
    assert "skipped row 3: coordinates cannot lie in Great Britain" in report.summary()


def test_a_file_entirely_outside_great_britain_is_refused_naming_rows(tmp_path, valid_banes):
    swapped = valid_banes.head(3).copy()
    swapped["geometry"] = shapely.transform(swapped.geometry.to_numpy(), lambda xy: xy[:, ::-1])
    path = tmp_path / "swapped.geojson"
    swapped.to_file(path, driver="GeoJSON")

    with pytest.raises(LoadError, match="no feature lies in Great Britain") as refused:
        read_layer_file(path, "conservation-area")
    assert "rows 1, 2, 3" in str(refused.value) and "swapped" in str(refused.value)


def test_a_grid_feature_off_the_ostn15_grid_is_skipped_not_the_whole_file(tmp_path, southwark):
    grid = gpd.GeoDataFrame(
        southwark.head(4).drop(columns="geometry"),
        geometry=crs.to_bng(southwark.head(4).geometry.values),
        crs=27700,
    )
    grid.loc[1, "geometry"] = shapely.box(-900_000, -900_000, -899_000, -899_000)
    path = write_shapefile(grid, tmp_path / "stray")

    report = read_layer_file(path, "listed-building-outline")

    assert report.loaded == 3
    assert report.skipped == [(2, OFF_GRID)]


def test_a_lon_lat_file_declared_as_grid_is_refused(tmp_path, valid_banes):
    path = tmp_path / "areas.geojson"
    valid_banes.to_file(path, driver="GeoJSON")
    with pytest.raises(LoadError, match="coordinate system wrong"):
        read_layer_file(path, "conservation-area", crs=27700)


# -- repairs and skipped rows ----------------------------------------------------------------------


def test_invalid_real_polygons_are_repaired_and_counted(real_data, banes):
    assert (~banes.is_valid).sum() == 10

    report = read_layer_file(real_data / BANES_CA, "conservation-area")

    assert report.loaded == 36 and report.repaired == 10 and report.skipped == []
    geometry = report.frame.geometry.to_numpy()
    assert shapely.is_valid(geometry).all()
    assert set(shapely.get_type_id(geometry)) <= {3, 6}  # polygons only, no stray lines from make_valid
    assert "repaired 10" in report.summary()


def test_empty_and_unreadable_rows_are_skipped_by_row_number(tmp_path, valid_banes):
    features = json.loads(valid_banes.head(5).to_json())["features"]
    features[1]["geometry"] = None
    features[3]["geometry"] = {"type": "Polygon", "coordinates": []}
    path = tmp_path / "gaps.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))

    report = read_layer_file(path, "conservation-area")

    assert report.loaded == 3
    assert report.skipped == [(2, MISSING_GEOMETRY), (4, MISSING_GEOMETRY)]
    assert report.frame["name"].tolist() == valid_banes["name"].iloc[[0, 2, 4]].tolist()
    assert report.frame["source-row"].tolist() == ["1", "3", "5"]


# -- ids and fields --------------------------------------------------------------------------------


def test_local_ids_are_stable_across_loads_and_copies(tmp_path, valid_banes, real_data):
    path = tmp_path / "areas.gpkg"
    valid_banes.to_file(path, driver="GPKG")
    copy = tmp_path / "copy-of-areas.gpkg"
    copy.write_bytes(path.read_bytes())

    first = read_layer_file(path, "conservation-area").frame["entity"]
    again = read_layer_file(path, "conservation-area").frame["entity"]
    copied = read_layer_file(copy, "conservation-area").frame["entity"]

    assert first.is_unique and first.dtype == np.int64
    assert first.tolist() == again.tolist() == copied.tolist()
    # never confused with platform entity numbers
    platform = read_layer_file(real_data / OUTLINES_CSV, "listed-building-outline").frame["entity"]
    assert first.min() > platform.max() * 1000


def test_id_name_reference_and_organisation_come_from_the_options(tmp_path, valid_banes):
    frame = valid_banes.assign(
        CA_ID=np.arange(501, 501 + len(valid_banes)),
        CA_NAME=valid_banes["name"].str.upper(),
        LIST_REF=[f"BANES-CA-{i:02d}" for i in range(len(valid_banes))],
    )
    path = tmp_path / "areas.gpkg"
    frame.to_file(path, driver="GPKG")

    loaded = read_layer_file(
        path,
        "conservation-area",
        id_field="CA_ID",
        name_field="CA_NAME",
        reference_field="LIST_REF",
        organisation="8",
    ).frame

    assert loaded["entity"].tolist() == list(range(501, 501 + len(frame)))
    assert loaded["name"].tolist() == frame["CA_NAME"].tolist()
    assert loaded["reference"].tolist() == frame["LIST_REF"].tolist()
    assert (loaded["organisation-entity"] == "8").all()

    by_reference = read_layer_file(path, "conservation-area", reference_field="LIST_REF").frame["entity"]
    moved = frame.copy()
    moved["geometry"] = moved.geometry.buffer(0.0001)
    moved_path = tmp_path / "redrawn.gpkg"
    moved.to_file(moved_path, driver="GPKG")
    redrawn = read_layer_file(moved_path, "conservation-area", reference_field="LIST_REF").frame["entity"]
    assert by_reference.tolist() == redrawn.tolist(), (
        "ids follow the reference, not the shape, when there is one"
    )


def test_bad_field_options_are_refused_with_the_columns_named(tmp_path, valid_banes):
    frame = valid_banes.assign(CODE=1)
    path = tmp_path / "areas.gpkg"
    frame.to_file(path, driver="GPKG")
    with pytest.raises(LoadError, match="--name-field 'title' is not a column") as refused:
        read_layer_file(path, "conservation-area", name_field="title")
    assert "designatio" in str(refused.value)
    with pytest.raises(LoadError, match="unique whole number"):
        read_layer_file(path, "conservation-area", id_field="CODE")
