"""Geometries held as WKB in a memory-mapped Arrow file and decoded only when asked for.

A layer's EPSG:4326 geometries are needed only to show an entity (GeoJSON answers, entity search,
the widget's map), never by the check itself, which works on the grid pieces. As shapely objects they
were a third of the national index's memory (1.5 GB); as WKB in a file mapped into memory they cost
nothing until a page is read, and the operating system can drop those pages again under pressure.

Examples
--------
>>> import pyarrow as pa
>>> column = WkbColumn(pa.array(shapely.to_wkb([shapely.Point(0, 1), shapely.Point(2, 3)]), pa.large_binary()))
>>> len(column), column[1].wkt, [g.x for g in column[np.array([True, False])]]
(2, 'POINT (2 3)', [0.0])
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import shapely

from datasets.cache import atomic_path

POINT, LINE, POLYGON = 0, 1, 2
#: WKB geometry type -> the index's kind (1 Point, 2 LineString, 4 MultiPoint, 5 MultiLineString)
_WKB_KIND = np.full(8, POLYGON, dtype=np.int8)
_WKB_KIND[[1, 4]] = POINT
_WKB_KIND[[2, 5]] = LINE


class WkbColumn:
    """A read-only array of geometries, indexed like a numpy object array of shapely geometries.

    ``column[i]`` is one geometry; ``column[rows]`` and ``column[mask]`` an object array of them;
    ``np.asarray(column)`` decodes them all (what ``shapely.STRtree(column)`` does).
    """

    def __init__(self, wkb: pa.Array, mapping: mmap.mmap | None = None):
        self._wkb = wkb
        self._mapping = mapping  # the file's mapping when the WKB lives in one (see map_wkb_file)

    def __len__(self) -> int:
        return len(self._wkb)

    def __getitem__(self, key):
        if isinstance(key, int | np.integer):
            return shapely.from_wkb(self._wkb[int(key)].as_py())
        if isinstance(key, slice):
            return shapely.from_wkb(self._wkb[key].to_numpy(zero_copy_only=False))
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        taken = self._wkb.take(pa.array(key.astype(np.int64, copy=False)))
        return shapely.from_wkb(taken.to_numpy(zero_copy_only=False))

    def __iter__(self):
        return iter(self[:])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:]

    def drop_resident_pages(self) -> None:
        """Give back the memory of the pages read so far: reading every WKB header to learn the kinds,
        or every geometry to cut the grid pieces, brings the whole file in (half a gigabyte at national
        scale) though a check never reads it. The pages stay in the file (and the page cache) and are
        read back when a geometry is next asked for. Nothing to do for WKB that is not mapped."""
        if self._mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mapping.madvise(mmap.MADV_DONTNEED)

    def batches(self, size_bytes: int) -> list[int]:
        """Row numbers that split the column into runs of about ``size_bytes`` of WKB each, from 0 to
        ``len(self)``: the runs a layer is read in when all of it at once would not fit comfortably
        (WKB takes 16 bytes a vertex, so bytes measure the work and the memory of decoding)."""
        wkb = self._wkb
        if len(wkb) == 0:
            return [0, 0]
        ends = _value_offsets(wkb)
        ends = ends[1:] - ends[0]
        cuts = np.searchsorted(ends, np.arange(size_bytes, int(ends[-1]), size_bytes), side="right")
        return sorted({0, *cuts.tolist(), len(wkb)})

    def kinds(self) -> np.ndarray:
        """POINT, LINE or POLYGON per row, read from the WKB headers without decoding geometry."""
        wkb = self._wkb
        if len(wkb) == 0:
            return np.zeros(0, dtype=np.int8)
        if wkb.null_count:
            raise ValueError("a geometry is missing")
        offsets = _value_offsets(wkb)[:-1]
        data = np.frombuffer(wkb.buffers()[2], dtype=np.uint8)
        little = data[offsets] == 1
        b = [data[offsets + i].astype(np.uint32) for i in range(1, 5)]
        code = np.where(little, b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24, b[3] | b[2] << 8 | b[1] << 16 | b[0] << 24)
        code = (code & 0x0FFFFFFF) % 1000  # EWKB flags, then ISO's Z/M thousands
        return _WKB_KIND[np.where(code < 8, code, 7)]


def joined_wkb(chunks: Iterable[pa.Array]) -> pa.Array:
    """The WKB of ``chunks`` (a column read a batch at a time) as one large-binary array, the one batch
    :func:`write_wkb_file` writes.

    Each chunk's bytes are copied out of Arrow as it comes and Arrow told to give its memory back, and
    each copy let go as soon as it is in the joined array: concatenating with Arrow held a national
    layer's 600 MB of WKB twice, and its allocator then kept what it had freed (gigabytes, through the
    cut of the layer that followed).
    """
    held = []
    for chunk in chunks:
        if chunk.null_count:
            raise ValueError("a geometry is missing")
        ends = _value_offsets(chunk)
        data = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)[ends[0] : ends[-1]].copy() if len(chunk) else np.zeros(0, np.uint8)
        held.append((ends[1:] - ends[0], data))
        del chunk, data
        pa.default_memory_pool().release_unused()
    pa.default_memory_pool().release_unused()  # and what the reader held till its end
    offsets = np.zeros(sum(len(ends) for ends, _ in held) + 1, dtype=np.int64)
    joined = np.empty(sum(len(data) for _, data in held), dtype=np.uint8)
    row = at = 0
    while held:
        ends, data = held.pop(0)
        joined[at : at + len(data)] = data
        offsets[row + 1 : row + len(ends) + 1] = ends + at
        row, at = row + len(ends), at + len(data)
        del ends, data
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), row, [None, pa.py_buffer(offsets), pa.py_buffer(joined)], null_count=0)


def _value_offsets(wkb: pa.Array) -> np.ndarray:
    """Where each value of a (large) binary array starts in its data buffer, and where the last ends."""
    width = np.int64 if pa.types.is_large_binary(wkb.type) else np.int32
    return np.frombuffer(wkb.buffers()[1], dtype=width)[wkb.offset : wkb.offset + len(wkb) + 1].astype(np.int64)


def write_wkb_file(wkb: pa.Array, path: Path) -> None:
    """Persist WKB as an uncompressed Arrow file (one batch), atomically, so it can be mapped."""
    table = pa.table({"wkb": wkb.cast(pa.large_binary())})
    with atomic_path(path) as tmp:
        with ipc.new_file(tmp, table.schema) as writer:
            writer.write_table(table, max_chunksize=max(len(table), 1))


def map_wkb_file(path: Path) -> WkbColumn:
    """The geometries of a file written by :func:`write_wkb_file`, mapped rather than read."""
    with open(path, "rb") as file:
        if not file.seek(0, 2):
            raise OSError(f"{path} is empty")
        # mapped by Python rather than by Arrow, so that the pages can be given back (drop_resident_pages)
        mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    table = ipc.open_file(pa.BufferReader(pa.py_buffer(mapping))).read_all()
    column = table.column("wkb")
    wkb = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return WkbColumn(wkb, mapping)
