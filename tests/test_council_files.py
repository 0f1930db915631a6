"""Files as councils really have them go through ``redline datasets load`` and ``redline batch`` alike:
each bad row is skipped and named with its row number and reason, and one bad row never ends a run.

Every file is written here, in a temporary folder, from a few small sites in Westminster.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from api.cli import main
from api.settings import get_settings
from constraints.batch import read_sites, run_batch
from datasets.cache import LayerCache
from datasets.crs import to_bng

# Three small sites near Parliament Square, in lon/lat.
SITES = [shapely.box(-0.1280 + i * 0.002, 51.5000, -0.1270 + i * 0.002, 51.5006) for i in range(3)]
WKT = [s.wkt for s in SITES]


def _csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def csv_named(column: str):
    """A WKT column under a council's own name, with an empty cell and a broken one."""

    def make(folder: Path) -> Path:
        lines = [f"ref,{column}", f'A,"{WKT[0]}"', "B,", 'C,"POLYGON((-0.128 51.5, -0.127"', f'D,"{WKT[1]}"']
        return _csv(folder / f"sites-{column}.csv", "\n".join(lines) + "\n")

    return make, [(2, f"the {kebab(column)} cell is empty"), (3, f"the {kebab(column)} cell is not WKT")], 2


def kebab(column: str) -> str:
    from datasets.loaders import kebab as to_kebab

    return to_kebab(column)


def csv_lat_lon(folder: Path) -> Path:
    lines = ["Name,Latitude,Longitude", "Gate,51.5003,-0.1275", "Lodge,,-0.1255", "Yard,north,-0.1235", "Hall,51.5004,-0.1233"]
    return _csv(folder / "points.csv", "\n".join(lines) + "\n")


def csv_bom_windows_1252(folder: Path) -> Path:
    """Excel's BOM is UTF-8 only; a Windows-1252 file with a pound sign and an accent is the other case."""
    lines = ["name;WKT", f"Caf\u00e9 \u00a3;{WKT[0]}", "Empty;", f"Pr\u00eat;{WKT[2]}"]
    return _csv(folder / "cp1252.csv", "\n".join(lines) + "\n", "cp1252")


def csv_long_line(folder: Path) -> Path:
    """A line with a cell more than the header (an unquoted comma in a name)."""
    lines = ["name,wkt", f'Gate,"{WKT[0]}"', "Smith, J and Sons,POINT (-0.1275 51.5003)", f'Hall,"{WKT[2]}"']
    return _csv(folder / "long.csv", "\n".join(lines) + "\n")


def csv_bom(folder: Path) -> Path:
    lines = ["geometry,name", f'"{WKT[0]}",first', ",blank"]
    return _csv(folder / "bom.csv", "\ufeff" + "\n".join(lines) + "\n", "utf-8")


def geojson_mixed(folder: Path) -> Path:
    polygon = json.loads(shapely.to_geojson(SITES[0]))
    features = [
        {"type": "Feature", "properties": {"name": "area"}, "geometry": polygon},
        {"type": "Feature", "properties": {"name": "gate"}, "geometry": {"type": "Point", "coordinates": [-0.1275, 51.5003]}},
        {"type": "Feature", "properties": {"name": "no geometry"}, "geometry": None},
        {
            "type": "Feature",
            "properties": {"name": "two points"},
            "geometry": {"type": "Polygon", "coordinates": [[[-0.128, 51.5], [-0.127, 51.5]]]},
        },
        {"type": "Feature", "properties": {"name": "multi"}, "geometry": json.loads(shapely.to_geojson(shapely.MultiPolygon(SITES[1:])))},
    ]
    path = folder / "mixed.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def zipped_shapefile_cp1252(folder: Path) -> Path:
    """British National Grid, names in Windows-1252 said by a .cpg, in a folder inside the zip."""
    frame = gpd.GeoDataFrame(
        {"name": ["Caf\u00e9 \u00a3", "nothing", "Str\u00f6m"]},
        geometry=[to_bng(SITES[0]), None, to_bng(SITES[2])],
        crs=27700,
    )
    shp = folder / "shp"
    shp.mkdir()
    frame.to_file(shp / "areas.shp", encoding="cp1252")
    assert (shp / "areas.cpg").read_text().upper() == "CP1252"
    path = folder / "areas.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for part in shp.iterdir():
            zf.write(part, f"Conservation Areas/{part.name}")
    return path


# (file maker, rows the loader skips with a reason fragment, features loaded)
FILES = {
    **{f"csv-{c}": csv_named(c) for c in ("geometry", "WKT", "wkt", "geom", "the_geom")},
    "csv-lat-lon": (csv_lat_lon, [(2, "the latitude cell is empty"), (3, "the latitude 'north' is not a number")], 2),
    "csv-windows-1252": (csv_bom_windows_1252, [(2, "the wkt cell is empty")], 2),
    "csv-bom": (csv_bom, [(2, "the geometry cell is empty")], 1),
    "csv-long-line": (csv_long_line, [(2, "the line has 3 fields where the header has 2")], 2),
    "geojson-mixed": (
        geojson_mixed,
        [(3, "the geometry is empty or missing"), (4, "the geometry cannot be read: Points of LinearRing")],
        3,
    ),
    "zip-shapefile-cpg": (zipped_shapefile_cp1252, [(2, "the geometry is empty or missing")], 2),
}


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)

    def call(*argv: str, data_dir: Path) -> tuple[int, str, str]:
        monkeypatch.setenv("REDLINE_DATA_DIR", str(data_dir))
        get_settings.cache_clear()
        try:
            code = main(list(argv))
        finally:
            get_settings.cache_clear()
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield call


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as local:
        yield local


def _named(skipped, expected) -> bool:
    return len(skipped) == len(expected) and all(
        row == want_row and fragment in reason for (row, reason), (want_row, fragment) in zip(skipped, expected, strict=True)
    )


@pytest.mark.parametrize("name", FILES)
def test_datasets_load_skips_and_names_each_bad_row(tmp_path, cli, name):
    make, bad, loaded = FILES[name]
    path = make(tmp_path)
    data = tmp_path / "data"

    code, out, err = cli("datasets", "load", str(path), "--dataset", "local-sites", data_dir=data)

    assert code == 0, err
    assert f"loaded {loaded}, repaired 0, skipped {len(bad)}" in out
    for row, fragment in bad:
        assert f"skipped row {row}: {fragment}" in out
    assert len(LayerCache(data).read("local-sites")) == loaded


@pytest.mark.parametrize("name", FILES)
def test_batch_completes_and_its_errors_file_names_the_same_rows(tmp_path, sample_cache, cluster, name):
    make, bad, _ = FILES[name]
    path = make(tmp_path)
    out = tmp_path / "results.csv"

    report = run_batch(path, out, cache_root=sample_cache.root, scheduler=cluster.scheduler_address, progress=False)

    errors = pd.read_csv(report.errors_path)
    assert list(errors.columns) == ["row", "reason"]
    assert _named(list(errors.itertuples(index=False, name=None)), bad)
    result = pd.read_csv(out)
    assert report.checked == report.sites - len(bad) and set(result["row"]) == set(range(1, report.sites + 1)) - {r for r, _ in bad}


def test_text_in_windows_1252_and_from_a_cpg_keeps_its_accents(tmp_path):
    from datasets.loaders import read_layer_file

    report = read_layer_file(csv_bom_windows_1252(tmp_path), "local-sites")
    assert report.frame["name"].tolist() == ["Caf\u00e9 \u00a3", "Pr\u00eat"]
    assert "note: read as Windows-1252 text (not UTF-8)" in report.summary()
    frame = read_layer_file(zipped_shapefile_cp1252(tmp_path), "local-sites").frame
    assert frame["name"].tolist() == ["Caf\u00e9 \u00a3", "Str\u00f6m"]


def test_a_batch_row_that_cannot_be_a_site_is_named_beside_those_that_can(tmp_path):
    table = read_sites(geojson_mixed(tmp_path), id_field="name")
    assert table.ids.tolist() == ["area", "gate", "multi"]
    assert [(row, name) for row, name, _ in table.errors] == [(3, "no geometry"), (4, "two points")]


def test_coordinates_in_x_and_y_say_nothing_of_their_system_so_crs_is_asked_for(tmp_path):
    from datasets.loaders import LoadError, read_layer_file

    path = _csv(tmp_path / "xy.csv", "x,y\n530000,179500\n")
    with pytest.raises(LoadError, match="--crs"):
        read_layer_file(path, "local-sites")
    assert read_layer_file(path, "local-sites", crs=27700).loaded == 1


def test_batch_without_the_dask_extra_says_how_to_install_it(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else real(name, *a))
    code = main(["batch", "sites.gpkg", "--out", "results.csv"])
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install 'redline[batch]'" in err and "Traceback" not in err


def test_batch_rows_carry_the_reason_for_unknown_and_the_nearby_entities(sample_cache):
    from constraints.batch import check_sites
    from constraints.index import ConstraintIndex
    from constraints.site import parse_site
    from datasets.catalogue import load_catalogue

    index = ConstraintIndex.from_cache(sample_cache, load_catalogue())
    # sites straddling the sample features' outlines, so some only touch (nearby) and some lie where
    # a layer is missing or does not cover (unknown)
    outlines = []
    for name in sample_cache.datasets():
        geometry = sample_cache.read(name).geometry.to_numpy()
        outlines.append(shapely.get_coordinates(shapely.boundary(geometry[shapely.area(geometry) > 0]))[::50])
    xy = [p for chunk in outlines for p in chunk][:300]
    sites = [shapely.box(x - 0.0003, y - 0.0002, x + 0.0003, y + 0.0002) for x, y in xy]
    ids = list(range(1, len(sites) + 1))

    import numpy as np
    import pyarrow as pa

    table, _ = check_sites(index, np.array(ids), np.array(ids), sites, id_field="row", id_type=pa.int64())
    rows = table.to_pylist()

    expected = {}
    for i, site in zip(ids, sites, strict=True):
        for c in index.check(parse_site(site))["constraints"]:
            expected[(i, c["key"])] = (c["reason"] if c["status"] == "unknown" else None, [int(e["entity"]) for e in c["nearby"]])
    got = {(r["row"], r["key"]): (r["reason"], r["nearby"]) for r in rows}
    assert got == expected
    assert any(nearby for _, nearby in got.values()), "no site touched a feature: the test proves nothing"
    assert any(reason for reason, _ in got.values())
