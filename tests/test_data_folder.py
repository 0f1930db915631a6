"""The same answer wherever it is asked: the data folder does not follow the working directory, and
every command says which folder it uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import shapely

REDLINE = Path(sys.executable).with_name("redline")
# A council's own conservation area near Parliament Square, and a site inside it.
AREA = shapely.box(-0.1290, 51.4995, -0.1260, 51.5010)
SITE = shapely.box(-0.1280, 51.5000, -0.1275, 51.5004)


def run(*args: str, cwd: Path, home: Path, **env: str) -> subprocess.CompletedProcess:
    """``redline ARGS`` run from ``cwd`` by a user whose home is ``home`` and who set no REDLINE_DATA_DIR."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REDLINE_") and k != "XDG_DATA_HOME"}
    environ.update(HOME=str(home), **env)
    return subprocess.run([str(REDLINE), *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=180)


def write_geojson(path: Path, geometry, name: str) -> Path:
    feature = {"type": "Feature", "properties": {"name": name}, "geometry": json.loads(shapely.to_geojson(geometry))}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def conservation_area(answer: dict) -> dict:
    return next(c for c in answer["constraints"] if c["key"] == "designated.conservationArea")


def test_check_from_another_folder_answers_from_the_layers_loaded_elsewhere(tmp_path):
    home, office, elsewhere = tmp_path / "home", tmp_path / "gis", tmp_path / "elsewhere"
    for folder in (home, office, elsewhere):
        folder.mkdir()
    area = write_geojson(office / "ca.geojson", AREA, "Parliament Square (council copy)")
    site = write_geojson(office / "site.geojson", SITE, "site")
    folder = home / ".local" / "share" / "redline"

    loaded = run("datasets", "load", str(area), "--dataset", "conservation-area", cwd=office, home=home)
    assert loaded.returncode == 0, loaded.stderr
    assert f"data folder {folder} (the default for this user)" in loaded.stderr

    answers = []
    for cwd in (office, elsewhere):
        checked = run("check", str(site), cwd=cwd, home=home)
        assert checked.returncode == 0, checked.stderr
        assert f"data folder {folder}" in checked.stderr
        answers.append(conservation_area(json.loads(checked.stdout)))
    assert answers[0] == answers[1]
    assert answers[1]["status"] == "intersects"
    assert [e["name"] for e in answers[1]["entities"]] == ["Parliament Square (council copy)"]
    assert not (elsewhere / ".redline").exists()


def test_a_data_folder_in_the_working_directory_that_is_not_used_is_pointed_out(tmp_path):
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    (project / ".redline").mkdir(parents=True)
    (project / ".redline" / "manifest.json").write_text('{"datasets": {}}')

    listed = run("datasets", "list", cwd=project, home=home)

    assert listed.returncode == 0, listed.stderr
    assert f"the layers in {project / '.redline'} are not used" in listed.stderr
    assert f"REDLINE_DATA_DIR={project / '.redline'}" in listed.stderr


def test_redline_data_dir_and_xdg_data_home_choose_the_folder(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    xdg = run("datasets", "list", cwd=tmp_path, home=home, XDG_DATA_HOME=str(tmp_path / "xdg"))
    assert f"data folder {tmp_path / 'xdg' / 'redline'} (the default for this user)" in xdg.stderr
    chosen = run("datasets", "list", cwd=tmp_path, home=home, REDLINE_DATA_DIR="layers")
    assert f"data folder {tmp_path / 'layers'} (from REDLINE_DATA_DIR)" in chosen.stderr
