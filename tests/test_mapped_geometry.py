"""A layer's EPSG:4326 geometries live in a mapped file: reading them brings pages in, and the index
gives those pages back once built, since a check never reads them (see constraints/wkb_column.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import shapely

from constraints.wkb_column import map_wkb_file, write_wkb_file


def resident_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def polygons(n: int, vertices: int = 40) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    ring = np.column_stack([np.cos(angles), np.sin(angles)])
    return shapely.polygons([ring * (1 + i % 7) + (i % 300, i // 300) for i in range(n)])


def test_the_geometries_read_the_same_after_their_pages_are_given_back(tmp_path):
    geometries = np.concatenate([polygons(500), shapely.points(np.arange(20.0), np.arange(20.0))])
    path = tmp_path / "layer.arrow"
    write_wkb_file(pa.array(shapely.to_wkb(geometries)), path)
    column = map_wkb_file(path)
    kinds = column.kinds()
    column.drop_resident_pages()
    assert shapely.equals_exact(column[:], geometries, tolerance=0).all()
    assert (column.kinds() == kinds).all() and column[503].equals(geometries[503])


def test_giving_the_pages_back_takes_them_out_of_the_process_memory(tmp_path):
    path = tmp_path / "layer.arrow"
    write_wkb_file(pa.array(shapely.to_wkb(polygons(100_000))), path)  # about 66 MB of WKB
    column = map_wkb_file(path)
    before = resident_mb()
    column.kinds()  # reads every geometry's header: every page of the file comes in
    read = resident_mb()
    column.drop_resident_pages()
    assert read - before > 40
    assert resident_mb() < read - 40
