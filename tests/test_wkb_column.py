"""A layer's EPSG:4326 geometries are held as mapped WKB and read back exactly as shapely would."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import shapely

from constraints.wkb_column import LINE, POINT, POLYGON, WkbColumn, joined_wkb, map_wkb_file, write_wkb_file

GEOMETRIES = [
    shapely.Point(1, 2),
    shapely.LineString([(0, 0), (1, 1)]),
    shapely.box(0, 0, 1, 1),
    shapely.MultiPoint([(0, 0), (1, 1)]),
    shapely.MultiLineString([[(0, 0), (1, 1)]]),
    shapely.MultiPolygon([shapely.box(0, 0, 1, 1)]),
    shapely.GeometryCollection([shapely.box(0, 0, 1, 1)]),
    shapely.Point(3, 4, 5),
]


def test_kinds_come_from_the_wkb_headers_in_either_byte_order_as_from_the_geometries(tmp_path):
    expected = [POINT, LINE, POLYGON, POINT, LINE, POLYGON, POLYGON, POINT]
    for byte_order in (0, 1):
        wkb = pa.array(shapely.to_wkb(GEOMETRIES, byte_order=byte_order, include_srid=True), pa.binary())
        assert WkbColumn(wkb).kinds().tolist() == expected
        assert WkbColumn(wkb.slice(2)).kinds().tolist() == expected[2:]
        write_wkb_file(wkb, tmp_path / f"g{byte_order}.arrow")
        assert map_wkb_file(tmp_path / f"g{byte_order}.arrow").kinds().tolist() == expected


def test_a_mapped_column_is_indexed_like_an_array_of_geometries(tmp_path):
    write_wkb_file(pa.array(shapely.to_wkb(GEOMETRIES)), tmp_path / "g.arrow")
    column = map_wkb_file(tmp_path / "g.arrow")
    assert len(column) == len(GEOMETRIES)
    assert column[2].equals(GEOMETRIES[2]) and column[np.int64(-1)].equals(GEOMETRIES[-1])
    assert [g.geom_type for g in column[np.array([0, 5])]] == ["Point", "MultiPolygon"]
    assert [g.geom_type for g in column[np.arange(8) == 1]] == ["LineString"]
    assert len(column[np.array([], dtype=np.int64)]) == 0
    everything = np.asarray(column)
    assert all(shapely.equals_exact(everything, np.array(GEOMETRIES, dtype=object), 0.0))
    assert len(shapely.STRtree(column).query(shapely.box(0.5, 0.5, 2, 2))) == 7


def test_an_empty_layer_maps_to_an_empty_column(tmp_path):
    write_wkb_file(pa.array([], pa.binary()), tmp_path / "e.arrow")
    column = map_wkb_file(tmp_path / "e.arrow")
    assert len(column) == 0 and column.kinds().tolist() == [] and len(np.asarray(column)) == 0


def test_wkb_read_in_chunks_joins_into_the_file_the_whole_column_writes(tmp_path):
    """However a column was read (binary or large binary, chunks sliced out of bigger arrays, empty
    chunks), its joined chunks are written byte for byte as the whole column is."""
    wkb = pa.array(shapely.to_wkb(GEOMETRIES * 5), pa.binary())
    chunks = [wkb.slice(0, 3), wkb.slice(3, 0), wkb.slice(3, 11).cast(pa.large_binary()), wkb.slice(14)]
    joined = joined_wkb(iter(chunks))
    assert joined.type == pa.large_binary() and joined.equals(wkb.cast(pa.large_binary()))
    write_wkb_file(wkb, tmp_path / "whole.arrow")
    write_wkb_file(joined, tmp_path / "joined.arrow")
    assert (tmp_path / "joined.arrow").read_bytes() == (tmp_path / "whole.arrow").read_bytes()
    assert len(joined_wkb(iter([]))) == 0


def test_a_missing_geometry_is_refused_when_chunks_are_joined():
    with pytest.raises(ValueError, match="missing"):
        joined_wkb(iter([pa.array([shapely.to_wkb(shapely.Point(0, 0)), None], pa.binary())]))
