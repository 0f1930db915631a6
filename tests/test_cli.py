"""The ``redline`` command line: loading layers, listing them, checking a site, and API keys.

Exit codes: 0 done, 1 nothing could be done (e.g. nothing in a file loaded), 2 bad input with a message
that names the problem. Most tests run the installed ``redline`` script; the many bad-input cases call
``api.cli.main`` in the same process, which is what the script runs.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from datasets.cache import LayerCache
from datasets.crs import bng_to_lonlat

REDLINE = Path(sys.executable).with_name("redline")
BANES_CA = "banes-geographic-data__banes_conservation_ar.geojson"

# The Cobourg Road, Southwark site PlanX sent the platform (bops__planx_constraints_proposed_params.json)
COBOURG = {
    "type": "Polygon",
    "coordinates": [
        [
            [-0.07629275321961124, 51.48596289289142],
            [-0.0763061642646857, 51.48591028066045],
            [-0.07555112242699404, 51.48584764697301],
            [-0.07554173469544191, 51.48590192950712],
            [-0.07629275321961124, 51.48596289289142],
        ]
    ],
}


def redline(*args: str, data_dir: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    assert REDLINE.exists(), f"the redline console script is not installed beside {sys.executable}"
    env = {**os.environ, "REDLINE_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [str(REDLINE), *args], env=env, cwd=data_dir.parent, input=stdin, capture_output=True, timeout=120
    )


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory) -> Path:
    """A data folder holding the bundled samples, loaded by ``redline datasets load-samples``."""
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    done = redline("datasets", "load-samples", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    return data_dir


def write(path: Path, geometry) -> Path:
    path.write_text(json.dumps(geometry))
    return path


# -- datasets load-samples | list | load -----------------------------------------------------------


def test_load_samples_fills_the_cache_and_list_shows_each_dataset(samples_dir):
    manifest = json.loads((samples_dir / "manifest.json").read_text())["datasets"]
    assert {"conservation-area", "listed-building-outline", "area-of-outstanding-natural-beauty"} <= set(
        manifest
    )

    listed = redline("datasets", "list", data_dir=samples_dir)

    assert listed.returncode == 0
    lines = listed.stdout.decode().splitlines()
    assert lines[0].split() == ["dataset", "features", "age", "stale", "source"]
    at = next(i for i, line in enumerate(lines) if line.startswith("listed-building-outline "))
    row = lines[at].split()
    assert row[1] == str(manifest["listed-building-outline"]["features"])
    assert row[3:5] == ["no", "datasets/data/samples/listed-building-outline.parquet"]
    assert lines[at + 1].split()[:2] == ["covers", "nowhere:"]  # the sample outlines are a scattering, complete nowhere
    assert len(lines) == 1 + 2 * len(manifest)


def test_load_samples_missing_only_adds_what_is_not_cached(tmp_path, cli, samples_dir):
    data_dir = tmp_path / "data"
    shutil.copytree(samples_dir, data_dir)
    LayerCache(data_dir).remove("battlefield")
    before = json.loads((data_dir / "manifest.json").read_text())["datasets"]

    code, out, _ = cli("datasets", "load-samples", "--missing", data_dir=data_dir)

    assert code == 0
    assert out.splitlines() == ["battlefield: 6", f"loaded 1 sample datasets into {data_dir}"]
    after = json.loads((data_dir / "manifest.json").read_text())["datasets"]
    assert set(after) == set(before) | {"battlefield"}
    assert all(after[name] == entry for name, entry in before.items()), (
        "cached datasets are left as they were"
    )


def test_datasets_load_prints_a_summary_and_list_shows_the_source(tmp_path, real_data):
    data_dir = tmp_path / "data"
    loaded = redline(
        "datasets", "load", str(real_data / BANES_CA), "--dataset", "conservation-area", data_dir=data_dir
    )

    assert loaded.returncode == 0, loaded.stderr
    out = loaded.stdout.decode()
    assert "conservation-area: loaded 36, repaired 10, skipped 0" in out
    assert "bounds (lon/lat): -2.67970, 51.27925, -2.29304, 51.42113" in out


def test_datasets_list_shows_count_source_age_and_the_last_failure(tmp_path, cli, real_data):
    data_dir = tmp_path / "data"
    assert (
        cli(
            "datasets", "load", str(real_data / BANES_CA), "--dataset", "conservation-area", data_dir=data_dir
        )[0]
        == 0
    )
    LayerCache(data_dir).record_failure("conservation-area", "HTTP 503")

    code, out, _ = cli("datasets", "list", "--json", data_dir=data_dir)
    entry = json.loads(out)["conservation-area"]
    assert code == 0 and entry["features"] == 36
    assert entry["source"]["path"] == str((real_data / BANES_CA).resolve())
    assert len(entry["source"]["sha256"]) == 64
    code, out, _ = cli("datasets", "list", data_dir=data_dir)
    name, features, age, stale, source, *rest = out.splitlines()[1].split()
    assert (name, features, stale, source) == ("conservation-area", "36", "no", str((real_data / BANES_CA).resolve()))
    assert age.endswith("s") and " ".join(rest) == "(last refresh failed: HTTP 503)"
    assert out.splitlines()[2].split() == ["covers", "nowhere", "yet:", *"no --coverage was given, so it answers only where its features meet a site".split()]


def test_datasets_list_on_an_empty_cache_says_how_to_fill_it(tmp_path, cli):
    code, out, _ = cli("datasets", "list", data_dir=tmp_path / "data")
    assert code == 0 and "the cache is empty" in out and "load-samples" in out


def test_loading_over_a_cached_dataset_needs_replace_or_append(tmp_path, cli, real_data):
    data_dir = tmp_path / "data"
    frame = gpd.read_file(real_data / BANES_CA)
    frame[:20].to_file(tmp_path / "first.gpkg", driver="GPKG")
    frame[20:].to_file(tmp_path / "rest.gpkg", driver="GPKG")
    load = ("datasets", "load")
    assert (
        cli(*load, str(tmp_path / "first.gpkg"), "--dataset", "conservation-area", data_dir=data_dir)[0] == 0
    )

    code, _, err = cli(
        *load, str(tmp_path / "rest.gpkg"), "--dataset", "conservation-area", data_dir=data_dir
    )
    assert code == 2 and "already cached" in err and "--replace" in err and "--append" in err

    code, _, err = cli(
        *load, str(tmp_path / "first.gpkg"), "--dataset", "conservation-area", "--append", data_dir=data_dir
    )
    assert code == 2 and "already in conservation-area" in err

    code, out, _ = cli(
        *load, str(tmp_path / "rest.gpkg"), "--dataset", "conservation-area", "--append", data_dir=data_dir
    )
    assert code == 0 and "loaded 16" in out
    manifest = json.loads((data_dir / "manifest.json").read_text())["datasets"]
    assert manifest["conservation-area"]["features"] == 36

    code, _, _ = cli(
        *load, str(tmp_path / "rest.gpkg"), "--dataset", "conservation-area", "--replace", data_dir=data_dir
    )
    assert code == 0
    assert (
        json.loads((data_dir / "manifest.json").read_text())["datasets"]["conservation-area"]["features"]
        == 16
    )


def test_load_exits_non_zero_only_when_nothing_could_be_loaded(tmp_path, cli):
    data_dir = tmp_path / "data"
    square = shapely.box(-2.36, 51.38, -2.35, 51.39)
    features = [
        {"type": "Feature", "properties": {"name": "kept"}, "geometry": shapely.geometry.mapping(square)},
        {"type": "Feature", "properties": {"name": "no shape"}, "geometry": None},
    ]
    partly = write(tmp_path / "partly.geojson", {"type": "FeatureCollection", "features": features})
    code, out, _ = cli(
        "datasets", "load", str(partly), "--dataset", "tree-preservation-zone", data_dir=data_dir
    )
    assert code == 0
    assert "loaded 1, repaired 0, skipped 1" in out and "skipped row 2: the geometry is empty or missing" in out

    nothing = write(tmp_path / "nothing.geojson", {"type": "FeatureCollection", "features": features[1:]})
    code, _, err = cli("datasets", "load", str(nothing), "--dataset", "tree", data_dir=data_dir)
    assert code == 1
    assert "nothing in" in err and "could be loaded" in err and "skipped row 1" in err
    assert "tree" not in json.loads((data_dir / "manifest.json").read_text())["datasets"]


def test_load_refuses_bad_files_with_exit_code_2(tmp_path, cli, real_data):
    data_dir = tmp_path / "data"
    grid = gpd.read_file(real_data / BANES_CA).head(3).to_crs(27700)
    grid.to_file(tmp_path / "noprj.shp")
    (tmp_path / "noprj.prj").unlink()

    code, _, err = cli(
        "datasets", "load", str(tmp_path / "noprj.shp"), "--dataset", "conservation-area", data_dir=data_dir
    )
    assert code == 2 and "--crs" in err
    assert (
        cli(
            "datasets",
            "load",
            str(tmp_path / "noprj.shp"),
            "--dataset",
            "conservation-area",
            "--crs",
            "27700",
            data_dir=data_dir,
        )[0]
        == 0
    )

    code, _, err = cli("datasets", "load", str(tmp_path / "absent.gpkg"), "--dataset", "x", data_dir=data_dir)
    assert code == 2 and "does not exist" in err

    code, _, err = cli(
        "datasets", "load", str(real_data / BANES_CA), "--dataset", "../../escaped", data_dir=data_dir
    )
    assert code == 2 and "'../../escaped' is not a usable dataset name" in err
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.glob(".escaped*"))


# -- check -----------------------------------------------------------------------------------------


def test_check_prints_the_native_answer(tmp_path, samples_dir):
    site = write(tmp_path / "cobourg.geojson", COBOURG)

    done = redline("check", str(site), data_dir=samples_dir)

    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer) == {"site", "constraints", "provenance"}
    assert answer["site"]["grid_reference"].startswith("TQ 336")
    assert answer["site"]["warnings"] == []
    by_key = {c["key"]: c for c in answer["constraints"]}
    assert by_key["listed"]["status"] == "intersects"
    assert [e["entity"] for e in by_key["listed"]["entities"]] == [42102419]
    # the sample conservation areas are Bath's and the North East's: in Southwark their absence proves nothing
    assert by_key["designated.conservationArea"]["status"] == "unknown"
    assert "does not cover" in by_key["designated.conservationArea"]["reason"]
    assert (
        by_key["tpo"]["status"] == "unknown" and by_key["tpo"]["reason"]
    )  # no tree layers among the samples
    assert "listed-building-outline" in answer["provenance"]["datasets"]


def test_check_reads_a_site_from_stdin(cli, samples_dir, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(COBOURG).encode())))
    code, out, err = cli("check", "-", data_dir=samples_dir)
    assert code == 0, err
    assert any(c["key"] == "listed" and c["status"] == "intersects" for c in json.loads(out)["constraints"])


@pytest.mark.parametrize("fmt", ["planx", "odp", "geojson"])
def test_check_speaks_planx_odp_and_geojson(tmp_path, cli, samples_dir, fmt):
    site = write(tmp_path / "cobourg.geojson", COBOURG)

    code, out, err = cli("check", str(site), "--format", fmt, data_dir=samples_dir)

    assert code == 0, err
    answer = json.loads(out)
    if fmt == "planx":
        assert answer["constraints"]["listed"]["value"] is True
        assert answer["constraints"]["listed"]["data"][0]["entity"] == 42102419
        # Cobourg Road is in Southwark, where the samples' conservation areas (Bath's) prove nothing:
        # left out of constraints, which PlanX would read as "not", and listed apart with the reason
        assert "designated.conservationArea" not in answer["constraints"]
        assert "does not cover" in answer["unknown"]["designated.conservationArea"]["reason"]
        assert answer["metadata"]["listed"]["dataset"] in ("listed-building", "listed-building-outline")
    elif fmt == "odp":
        listed = next(d for d in answer["designations"] if d["value"] == "listed")
        assert listed["intersects"] is True
        assert listed["entities"][0]["source"]["url"] == "https://www.planning.data.gov.uk/entity/42102419"
    else:
        assert answer["type"] == "FeatureCollection"
        assert [f["id"] for f in answer["features"]] == [42102419]


def test_tolerance_options_move_small_overlaps_to_nearby(tmp_path, cli, samples_dir):
    site = write(tmp_path / "cobourg.geojson", COBOURG)

    code, out, err = cli("check", str(site), "--tolerance-m2", "100000", data_dir=samples_dir)

    assert code == 0, err
    listed = next(c for c in json.loads(out)["constraints"] if c["key"] == "listed")
    assert listed["status"] != "intersects" and listed["entities"] == []
    assert [e["entity"] for e in listed["nearby"]] == [42102419]
    assert json.loads(out)["provenance"]["tolerance"] == {"m2": 100000.0, "pct": 0.1}


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--tolerance-pct", "nan", "must be a finite number"),
        ("--tolerance-m2", "-5", "must be a finite number, 0 or more"),
        ("--tolerance-m2", "half", "'half' is not a number"),
        ("--council", "lambth", "no article 4 rules for the council 'lambth' (councils with rules: adur-worthing, "),
    ],
)
def test_bad_check_options_exit_2_naming_the_option(tmp_path, cli, samples_dir, option, value, words):
    site = write(tmp_path / "cobourg.geojson", COBOURG)
    code, out, err = cli("check", str(site), option, value, data_dir=samples_dir)
    assert code == 2 and out == ""
    assert words in err


# -- bad sites: each its own message, exit code 2 ---------------------------------------------------

ORIGIN = (533680.0, 178060.0)  # British National Grid, near Cobourg Road


def ring_from_grid(points_m) -> list[list[float]]:
    """Offsets in metres from ORIGIN to a closed lon/lat ring."""
    e = np.array([ORIGIN[0] + x for x, _ in points_m])
    n = np.array([ORIGIN[1] + y for _, y in points_m])
    lon, lat = bng_to_lonlat(e, n)
    ring = [[round(a, 8), round(b, 8)] for a, b in zip(lon, lat, strict=True)]
    return ring + [ring[0]]


SQUARE = ring_from_grid([(0, 0), (40, 0), (40, 40), (0, 40)])
BAD_SITES = {
    # name: (GeoJSON text, words the message must hold)
    "self-intersecting bowtie": (
        {"type": "Polygon", "coordinates": [ring_from_grid([(0, 0), (40, 40), (40, 0), (0, 40)])]},
        ["crosses itself", "not repaired"],
    ),
    "unclosed ring": ({"type": "Polygon", "coordinates": [SQUARE[:-1]]}, ["not closed"]),
    "latitude and longitude swapped": (
        {"type": "Polygon", "coordinates": [[[lat, lon] for lon, lat in SQUARE]]},
        ["swapped", "longitude first"],
    ),
    "grid metres as GeoJSON": (
        {
            "type": "Polygon",
            "coordinates": [[[533680, 178060], [533720, 178060], [533720, 178100], [533680, 178060]]],
        },
        ["British National Grid", "metres"],
    ),
    "outside Great Britain": (
        {"type": "Polygon", "coordinates": [[[lon + 12, lat - 10] for lon, lat in SQUARE]]},
        ["outside Great Britain"],
    ),
    "empty geometry": ({"type": "Polygon", "coordinates": []}, ["empty"]),
    "NaN": (
        json.dumps({"type": "Polygon", "coordinates": [SQUARE]}).replace(str(SQUARE[2][0]), "NaN", 1),
        ["NaN"],
    ),
    "Infinity": (
        json.dumps({"type": "Polygon", "coordinates": [SQUARE]}).replace(str(SQUARE[2][1]), "Infinity", 1),
        ["Infinity"],
    ),
    "LineString": ({"type": "LineString", "coordinates": SQUARE}, ["LineString", "not a site"]),
    "not JSON": ("PK\x03\x04 boundary.zip", ["not valid JSON"]),
}


@pytest.mark.parametrize("case", list(BAD_SITES))
def test_a_bad_site_exits_2_with_a_message_naming_the_problem(tmp_path, cli, case):
    body, words = BAD_SITES[case]
    site = tmp_path / "site.geojson"
    site.write_text(body if isinstance(body, str) else json.dumps(body))

    code, out, err = cli("check", str(site), data_dir=tmp_path / "data")

    assert code == 2, (case, err)
    assert out == ""
    said, message = err.split("\n", 1)
    assert said == f"redline: data folder {tmp_path / 'data'} (from REDLINE_DATA_DIR)"
    assert message.startswith(f"redline: {site}: ")
    for word in words:
        assert word in err, (case, err)
    assert not (tmp_path / "data").exists(), "refused before any layer is loaded"


def test_every_bad_site_gets_its_own_message(tmp_path, cli):
    messages = set()
    for body, _ in BAD_SITES.values():
        site = tmp_path / "site.geojson"
        site.write_text(body if isinstance(body, str) else json.dumps(body))
        messages.add(cli("check", str(site), data_dir=tmp_path / "data")[2])
    assert len(messages) == len(BAD_SITES)


def test_the_exit_code_reaches_the_shell(tmp_path):
    site = write(tmp_path / "line.geojson", BAD_SITES["LineString"][0])
    done = redline("check", str(site), data_dir=tmp_path / "data")
    assert done.returncode == 2
    assert b"LineString is a line, not a site" in done.stderr


def test_a_50_mb_file_is_refused_before_it_is_read(tmp_path, cli):
    site = tmp_path / "huge.geojson"
    padding = "x" * (50 * 1024 * 1024)
    site.write_text(json.dumps({"type": "Feature", "properties": {"notes": padding}, "geometry": COBOURG}))

    code, _, err = cli("check", str(site), data_dir=tmp_path / "data")

    assert code == 2
    assert "52.4 MB" in err and "more than the 20 MB accepted" in err and "simplify" in err


def test_a_small_self_intersection_is_repaired_with_a_warning(tmp_path, cli, samples_dir):
    # a 40 m square whose last edge crosses the top edge, leaving a loop of about 1 m²
    looped = ring_from_grid([(0, 0), (40, 0), (40, 40), (0, 40), (-1, 41), (1, 41)])
    site = write(tmp_path / "loop.geojson", {"type": "Polygon", "coordinates": [looped]})

    code, out, err = cli("check", str(site), data_dir=samples_dir)

    assert code == 0, err
    warnings = json.loads(out)["site"]["warnings"]
    assert (
        len(warnings) == 1
        and "the boundary was repaired" in warnings[0]
        and "self-intersection" in warnings[0]
    )


def test_3d_coordinates_are_accepted_with_z_ignored(tmp_path, cli, samples_dir):
    flat = write(tmp_path / "flat.geojson", COBOURG)
    raised = write(
        tmp_path / "raised.geojson",
        {"type": "Polygon", "coordinates": [[[lon, lat, 12.5] for lon, lat in COBOURG["coordinates"][0]]]},
    )

    code, out, err = cli("check", str(raised), data_dir=samples_dir)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["site"]["warnings"] == ["heights (Z) were ignored: the check is two-dimensional"]
    _, flat_out, _ = cli("check", str(flat), data_dir=samples_dir)
    flat_answer = json.loads(flat_out)
    assert answer["site"]["area_m2"] == flat_answer["site"]["area_m2"]
    assert [c["status"] for c in answer["constraints"]] == [c["status"] for c in flat_answer["constraints"]]


def test_check_of_a_missing_file_or_a_folder_exits_2(tmp_path, cli):
    code, _, err = cli("check", str(tmp_path / "nowhere.geojson"), data_dir=tmp_path / "data")
    assert code == 2 and "does not exist" in err
    code, _, err = cli("check", str(tmp_path), data_dir=tmp_path / "data")
    assert code == 2 and "is a folder" in err


# -- keys ------------------------------------------------------------------------------------------


def test_keys_are_created_shown_once_listed_and_revoked(tmp_path, cli):
    data_dir = tmp_path / "data"
    code, out, _ = cli(
        "keys", "create", "--name", "planx", "--scope", "check", "--scope", "officer", data_dir=data_dir
    )
    assert code == 0
    token = out.strip().splitlines()[-1]
    assert token.startswith("rl_") and len(token) > 40
    assert token not in (data_dir / "keys.json").read_text(), "only the key's hash is stored"

    code, out, _ = cli("keys", "list", data_dir=data_dir)
    assert code == 0 and "planx" in out and "check,officer" in out and "active" in out and token not in out

    assert cli("keys", "revoke", "planx", data_dir=data_dir)[0] == 0
    assert "revoked" in cli("keys", "list", data_dir=data_dir)[1]
    code, _, err = cli("keys", "revoke", "planx", data_dir=data_dir)
    assert code == 2 and "no active key" in err

    code, _, err = cli("keys", "create", "--name", "x", "--scope", "superuser", data_dir=data_dir)
    assert code == 2 and "superuser" in err and "officer" in err
