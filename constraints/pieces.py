"""The grid pieces as flat arrays, and a packed R-tree over their boxes compiled with numba.

As shapely objects the national index's two million pieces held 1.65 GB in GEOS (plus 254 MB
prepared and 131 MB of ``STRtree``), about twice what their coordinates take as numbers. Here the
polygon pieces are the arrays of ``shapely.to_ragged_array`` (all vertices in one ``(n, 2)`` float64
array, the rings' and the polygons' offsets into it), with each piece's bounds and area; the few
point and line pieces (listed buildings, tree preservation orders) stay shapely objects. A check
asks GEOS about a handful of pieces, so :meth:`PieceStore.geometries` builds those on demand,
coordinate for coordinate what was stored, and every GEOS answer is what it was for the held objects.

:class:`PieceTree` is a static, packed R-tree (as the flatbush library builds one): the boxes sorted
along a Hilbert curve, sixteen to a node, every level in one array. A query walks it in one compiled
call, for one site or for all of a batch's sites at once, and returns each site's pieces in a fixed
order (see ``rank``): the order in which shapely's ``STRtree`` returned them, so that answers list an
entity's pieces, and thus the entities, as they did.

Examples
--------
>>> squares = np.array([shapely.box(x, 0, x + 1, 1) for x in range(40)] + [shapely.Point(5.5, 0.5)])
>>> store = PieceStore.from_geometries(squares)
>>> len(store), store.area[:2].tolist(), store.geometries(np.array([40, 3]))[1].equals(squares[3])
(41, [1.0, 1.0], True)
>>> tree = PieceTree(store.bounds)
>>> tree.query_box(4.5, 0.2, 5.5, 0.8).tolist()
[4, 5, 40]
"""

from __future__ import annotations

import ctypes
import mmap
from pathlib import Path

import numba
import numpy as np
import shapely
from shapely import GeometryType

from datasets.cache import atomic_path
from datasets.compiled import compiled

NODE_SIZE = 16  # children per node: flatbush's default, a good balance of box tests per level
STRTREE_NODE_CAPACITY = 10  # what the index's shapely STRtree was built with: its order depends on it

_BOXES = numba.float64[:, ::1]
_IDS = numba.int64[::1]




# -- the store ------------------------------------------------------------------------------------


@compiled(numba.types.Tuple((numba.float64[:, ::1], _IDS, _IDS))(numba.float64[:, ::1], _IDS, _IDS, _IDS))
def gather_polygons(xy, ring_offsets, polygon_offsets, polygons):
    """The ragged arrays of just the polygons numbered ``polygons`` (in that order), offsets from 0."""
    rings = 0
    vertices = 0
    for p in polygons:
        first, last = polygon_offsets[p], polygon_offsets[p + 1]
        rings += last - first
        vertices += ring_offsets[last] - ring_offsets[first]
    out_xy = np.empty((vertices, 2))
    out_rings = np.empty(rings + 1, dtype=np.int64)
    out_polygons = np.empty(len(polygons) + 1, dtype=np.int64)
    out_rings[0] = 0
    out_polygons[0] = 0
    ring = 0
    vertex = 0
    for k in range(len(polygons)):
        p = polygons[k]
        for r in range(polygon_offsets[p], polygon_offsets[p + 1]):
            for v in range(ring_offsets[r], ring_offsets[r + 1]):
                out_xy[vertex, 0] = xy[v, 0]
                out_xy[vertex, 1] = xy[v, 1]
                vertex += 1
            ring += 1
            out_rings[ring] = vertex
        out_polygons[k + 1] = ring
    return out_xy, out_rings, out_polygons


@compiled(numba.void(numba.float64[:, ::1], _IDS, _IDS, _IDS, numba.float64[:, ::1], _IDS, _IDS, _IDS))
def scatter_polygons(xy, ring_offsets, polygon_offsets, to, out_xy, out_ring_offsets, out_polygon_offsets, out_first_vertex):
    """Put polygon ``k`` of the ragged arrays ``(xy, ring_offsets, polygon_offsets)`` in place ``to[k]`` of the
    output ones, whose polygon offsets and each polygon's first vertex (``out_first_vertex``) are already set."""
    for k in range(len(to)):
        p = to[k]
        ring = out_polygon_offsets[p]
        vertex = out_first_vertex[p]
        for r in range(polygon_offsets[k], polygon_offsets[k + 1]):
            for v in range(ring_offsets[r], ring_offsets[r + 1]):
                out_xy[vertex, 0] = xy[v, 0]
                out_xy[vertex, 1] = xy[v, 1]
                vertex += 1
            ring += 1
            out_ring_offsets[ring] = vertex


POLYGON_PIECE, POINT_PIECE, OTHER_PIECE = 0, 1, 2  # how a piece is held (``PieceStore.kind``)


class PieceStore:
    """Pieces as numbers: polygons in the ragged-array layout, points as an (m, 2) array, anything
    else (lines, multi-part pieces) as shapely objects.

    Piece ``i`` is, by ``kind[i]``, polygon ``slot[i]`` of the ragged arrays (``xy``, ``ring_offsets``,
    ``polygon_offsets``), point ``point_xy[slot[i]]`` or ``other[slot[i]]``. ``bounds`` (n, 4),
    ``area`` (0 for points and lines) and ``valid`` (GEOS's ``is_valid``) are per piece. Indexing it (``store[ids]``) gives shapely
    geometries, as the object array it replaces did.
    """

    def __init__(self, xy, ring_offsets, polygon_offsets, point_xy, other, kind, slot, bounds, area, valid):
        self.xy = xy
        self.ring_offsets = ring_offsets
        self.polygon_offsets = polygon_offsets
        self.point_xy = point_xy
        self.other = other
        self.kind = kind
        self.slot = slot
        self.bounds = bounds
        self.area = area
        # what constraints.polygon_overlay assumes of a polygon: checked once, when the pieces are cut
        self.valid = valid

    @classmethod
    def empty(cls) -> PieceStore:
        none = np.zeros(0, dtype=np.int64)
        return cls(np.zeros((0, 2)), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros((0, 2)), np.array([], dtype=object),
                   np.zeros(0, np.int8), none, np.zeros((0, 4)), np.zeros(0), np.zeros(0, bool))

    @classmethod
    def from_geometries(cls, pieces: np.ndarray) -> PieceStore:
        """The store of an array of shapely pieces (their areas and bounds as GEOS gives them)."""
        pieces = np.asarray(pieces, dtype=object)
        type_id = shapely.get_type_id(pieces)
        kind = np.full(len(pieces), OTHER_PIECE, dtype=np.int8)
        kind[type_id == GeometryType.POLYGON] = POLYGON_PIECE
        # an empty point has no coordinates to hold: it stays an object
        kind[(type_id == GeometryType.POINT) & ~shapely.is_empty(pieces)] = POINT_PIECE
        slot = _slots(kind)
        polygons = pieces[kind == POLYGON_PIECE]
        if len(polygons):
            # the plane only: areas and predicates never read a third coordinate
            _, xy, (ring_offsets, polygon_offsets) = shapely.to_ragged_array(polygons, include_z=False)
        else:
            xy, ring_offsets, polygon_offsets = np.zeros((0, 2)), np.zeros(1, np.int64), np.zeros(1, np.int64)
        point_xy = shapely.get_coordinates(pieces[kind == POINT_PIECE]).reshape(-1, 2)
        return cls(np.ascontiguousarray(xy, dtype=np.float64), ring_offsets.astype(np.int64), polygon_offsets.astype(np.int64),
                   np.ascontiguousarray(point_xy, dtype=np.float64), pieces[kind == OTHER_PIECE], kind, slot,
                   shapely.bounds(pieces), shapely.area(pieces), shapely.is_valid(pieces))

    @classmethod
    def concatenate(cls, stores: list[PieceStore]) -> PieceStore:
        """One store of several, their pieces one after the other, in memory of its own.

        The vertices go one store at a time into an array made for all of them; those of a store
        mapped from its file (:meth:`load`) are read from the file straight into it, so the build
        never holds two copies of the vertices, nor faults in the mapping's pages one at a time.
        """
        if not stores:
            return cls.empty()
        vertex_base = np.cumsum([0] + [len(s.xy) for s in stores])
        ring_base = np.cumsum([0] + [len(s.ring_offsets) - 1 for s in stores])
        xy = np.empty((int(vertex_base[-1]), 2))
        for i, s in enumerate(stores):
            _copy_into(xy[vertex_base[i] : vertex_base[i + 1]], s.xy)
        ring_offsets = np.concatenate([[0]] + [s.ring_offsets[1:] + vertex_base[i] for i, s in enumerate(stores)]).astype(np.int64)
        polygon_offsets = np.concatenate([[0]] + [s.polygon_offsets[1:] + ring_base[i] for i, s in enumerate(stores)]).astype(np.int64)
        kind = np.concatenate([s.kind for s in stores])
        return cls(xy, ring_offsets, polygon_offsets, np.concatenate([s.point_xy for s in stores]).reshape(-1, 2),
                   np.concatenate([s.other for s in stores]), kind, _slots(kind),
                   np.concatenate([s.bounds for s in stores]), np.concatenate([s.area for s in stores]), np.concatenate([s.valid for s in stores]))

    @classmethod
    def gather(cls, stores: list[PieceStore], order: np.ndarray) -> PieceStore:
        """``concatenate(stores).take(order)`` holding the vertices once rather than twice: ``stores`` is
        emptied as their polygons are put in place, and each store's memory given back as soon as its
        polygons are in the new store (so a caller keeps no other reference to them).

        ``order`` names every piece of the stores, one after the other, exactly once.
        """
        if not stores:
            return cls.empty()
        kind_in = np.concatenate([s.kind for s in stores])
        order = np.asarray(order, dtype=np.int64)
        if len(order) != len(kind_in) or not np.array_equal(np.bincount(order, minlength=len(kind_in)), np.ones(len(kind_in), np.int64)):
            raise ValueError(f"an order of {len(order)} pieces that is no permutation of the stores' {len(kind_in)}")
        kind = kind_in[order]
        slot_in, slot = _slots(kind_in), _slots(kind)
        place = np.empty(len(order), dtype=np.int64)
        place[order] = np.arange(len(order))
        # each polygon of the stores (one after the other), its number in the new store, rings and vertices
        to = slot[place[kind_in == POLYGON_PIECE]]
        rings, vertices = np.empty(len(to), np.int64), np.empty(len(to), np.int64)
        rings[to] = np.concatenate([np.diff(s.polygon_offsets) for s in stores])
        vertices[to] = np.concatenate([s.ring_offsets[s.polygon_offsets[1:]] - s.ring_offsets[s.polygon_offsets[:-1]] for s in stores])
        polygon_offsets = np.concatenate([[0], np.cumsum(rings)]).astype(np.int64)
        first_vertex = np.concatenate([[0], np.cumsum(vertices)]).astype(np.int64)
        xy = np.empty((int(first_vertex[-1]), 2))  # its pages are taken as it is filled, as the stores' are given back
        ring_offsets = np.zeros(int(polygon_offsets[-1]) + 1, dtype=np.int64)
        point_xy = np.concatenate([s.point_xy for s in stores]).reshape(-1, 2)[slot_in[order[kind == POINT_PIECE]]]
        other = np.concatenate([s.other for s in stores])[slot_in[order[kind == OTHER_PIECE]]]
        bounds, area, valid = (np.concatenate([getattr(s, name) for s in stores])[order] for name in ("bounds", "area", "valid"))
        first_polygon = 0
        while stores:
            store = stores.pop(0)
            polygons = len(store.polygon_offsets) - 1
            scatter_polygons(store.xy, store.ring_offsets, store.polygon_offsets, to[first_polygon : first_polygon + polygons],
                             xy, ring_offsets, polygon_offsets, first_vertex)
            first_polygon += polygons
            del store
            give_back_freed_memory()
        return cls(xy, ring_offsets, polygon_offsets, point_xy, other, kind, slot, bounds, area, valid)

    def __len__(self) -> int:
        return len(self.area)

    @property
    def nbytes(self) -> int:
        """The bytes its arrays hold (the shapely objects of ``other`` not counted)."""
        arrays = (self.xy, self.ring_offsets, self.polygon_offsets, self.point_xy, self.other, self.kind, self.slot, self.bounds, self.area, self.valid)
        return sum(a.nbytes for a in arrays)

    def polygons(self, polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(xy, ring_offsets, polygon_offsets)`` of just the polygons numbered ``polygons``, in that order."""
        return gather_polygons(self.xy, self.ring_offsets, self.polygon_offsets, np.ascontiguousarray(polygons, dtype=np.int64))

    def geometries(self, ids: np.ndarray) -> np.ndarray:
        """The pieces ``ids`` as shapely geometries (an object array, new objects, not prepared)."""
        ids = np.asarray(ids, dtype=np.int64)
        kind, slot = self.kind[ids], self.slot[ids]
        polygon = kind == POLYGON_PIECE
        if polygon.all():
            return self._polygons(slot) if len(ids) else np.empty(0, dtype=object)
        out = np.empty(len(ids), dtype=object)
        if polygon.any():
            out[polygon] = self._polygons(slot[polygon])
        point = kind == POINT_PIECE
        if point.any():
            out[point] = shapely.points(self.point_xy[slot[point]])
        other = kind == OTHER_PIECE
        if other.any():
            out[other] = self.other[slot[other]]
        return out

    def _polygons(self, slots):
        xy, rings, polygon_offsets = self.polygons(slots)
        return shapely.from_ragged_array(GeometryType.POLYGON, xy, (rings, polygon_offsets))

    def take(self, ids: np.ndarray) -> PieceStore:
        """A store of the pieces ``ids`` (in that order), e.g. one layer's to reuse in a new snapshot."""
        ids = np.asarray(ids, dtype=np.int64)
        kind, slot = self.kind[ids], self.slot[ids]
        xy, rings, polygon_offsets = self.polygons(slot[kind == POLYGON_PIECE])
        return PieceStore(xy, rings, polygon_offsets, self.point_xy[slot[kind == POINT_PIECE]], self.other[slot[kind == OTHER_PIECE]],
                          kind, _slots(kind), self.bounds[ids], self.area[ids], self.valid[ids])

    def save(self, path: Path, xy_path: Path, **extra: np.ndarray) -> None:
        """Persist the store (and ``extra`` arrays) as ``path`` (``.npz``) and its polygons' vertices as
        ``xy_path`` (``.npy``, mapped when read back). Pieces held as objects are kept as WKB."""
        wkb = shapely.to_wkb(self.other) if len(self.other) else np.array([], dtype=object)
        wkb_offsets = np.cumsum([0] + [len(b) for b in wkb], dtype=np.int64)
        wkb_bytes = np.frombuffer(b"".join(wkb), dtype=np.uint8)
        with atomic_path(xy_path) as tmp, open(tmp, "wb") as file:
            np.save(file, self.xy)
        # written last: its presence says the vertices beside it are whole
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            np.savez(file, ring_offsets=self.ring_offsets, polygon_offsets=self.polygon_offsets, point_xy=self.point_xy,
                     other_wkb=wkb_bytes, other_wkb_offsets=wkb_offsets, kind=self.kind, bounds=self.bounds, area=self.area, valid=self.valid, **extra)

    @classmethod
    def load(cls, path: Path, xy_path: Path, extra: tuple[str, ...] = ()) -> tuple[PieceStore, list[np.ndarray]]:
        """A store written by :meth:`save`, its vertices mapped rather than read, and the ``extra`` arrays."""
        with np.load(path, allow_pickle=False) as arrays:
            a = {name: arrays[name] for name in arrays.files}
        xy = np.load(xy_path, mmap_mode="r")  # read-only: concatenate copies it into a snapshot's own store
        kind = a["kind"]
        offsets, data = a["other_wkb_offsets"], a["other_wkb"].tobytes()
        other = np.empty(len(offsets) - 1, dtype=object)
        other[:] = [data[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        store = cls(xy, a["ring_offsets"], a["polygon_offsets"], a["point_xy"], shapely.from_wkb(other), kind, _slots(kind), a["bounds"], a["area"], a["valid"])
        counts = np.bincount(kind, minlength=3)
        if (xy.ndim != 2 or xy.shape[1] != 2 or store.ring_offsets[-1] != len(xy) or store.polygon_offsets[-1] != len(store.ring_offsets) - 1
                or counts[POLYGON_PIECE] != len(store.polygon_offsets) - 1 or counts[POINT_PIECE] != len(store.point_xy)
                or counts[OTHER_PIECE] != len(store.other) or not len(kind) == len(store.bounds) == len(store.area) == len(store.valid)):
            raise ValueError(f"{path}: its arrays do not agree with one another")
        return store, [a[name] for name in extra]

    def __getitem__(self, key):
        if isinstance(key, int | np.integer):
            return self.geometries(np.array([key]))[0]
        if isinstance(key, slice):
            return self.geometries(np.arange(len(self))[key])
        key = np.asarray(key)
        return self.geometries(np.flatnonzero(key) if key.dtype == bool else key)


def give_back_freed_memory() -> None:
    """Return to the system the heap pages that freed objects left empty (glibc keeps them otherwise):
    the build frees millions of small GEOS objects (cut pieces, the throwaway tree of ``strtree_rank``)
    and the arrays of the pieces of each batch of a layer's cut."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _slots(kind: np.ndarray) -> np.ndarray:
    """Each piece's place among the pieces of its kind."""
    slot = np.empty(len(kind), dtype=np.int64)
    for k in (POLYGON_PIECE, POINT_PIECE, OTHER_PIECE):
        of_kind = kind == k
        slot[of_kind] = np.arange(int(of_kind.sum()))
    return slot


def _copy_into(out: np.ndarray, xy: np.ndarray) -> None:
    """Copy ``xy`` into ``out`` (C-contiguous, the same shape and dtype).

    Vertices mapped from a ``.npy`` file (:meth:`PieceStore.load`) are read from the file with one
    ``readinto``: copying from the mapping faulted its ~200,000 pages in one by one (~2.7 s for the
    scale-1 index's 825 MB against ~0.4 s read), and left them resident until given back.
    """
    filename, offset = getattr(xy, "filename", None), getattr(xy, "offset", None)
    # the whole mapping only: a view of one keeps its parent's offset, not its own
    whole = isinstance(xy, np.memmap) and xy.base is not None and xy.base is getattr(xy, "_mmap", None)
    if (whole and len(out) and filename is not None and offset is not None and xy.flags.c_contiguous
            and xy.dtype == out.dtype and xy.shape == out.shape and out.flags.c_contiguous):
        target = memoryview(out).cast("B")
        with open(filename, "rb", buffering=0) as file:
            file.seek(offset)
            done = 0
            while done < len(target):  # readinto may stop short (large reads come in pieces)
                got = file.readinto(target[done:])
                if not got:
                    raise ValueError(f"{filename}: shorter than its header says")
                done += got
        return
    out[...] = xy
    _give_back(xy)


def _give_back(array: np.ndarray) -> None:
    """Give back the resident pages of an array mapped from a file (they stay in the page cache)."""
    mapping = getattr(array, "_mmap", None)
    if isinstance(mapping, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


# -- the tree -------------------------------------------------------------------------------------


@numba.njit(inline="always")
def _hilbert(x, y, order):
    """The position of cell (x, y) along the Hilbert curve filling a 2**order square."""
    n = 1 << order
    d = 0
    s = n >> 1
    while s > 0:
        rx = 1 if (x & s) > 0 else 0
        ry = 1 if (y & s) > 0 else 0
        d += s * s * ((3 * rx) ^ ry)
        if ry == 0:
            if rx == 1:
                x = n - 1 - x
                y = n - 1 - y
            x, y = y, x
        s >>= 1
    return d


@compiled(numba.int64[::1](_BOXES))
def hilbert_keys(bounds):
    """Each box's centre's position along a Hilbert curve over all the boxes (16 bits a side)."""
    n = bounds.shape[0]
    xmin = ymin = np.inf
    xmax = ymax = -np.inf
    for i in range(n):
        cx = (bounds[i, 0] + bounds[i, 2]) / 2
        cy = (bounds[i, 1] + bounds[i, 3]) / 2
        if cx < xmin:
            xmin = cx
        if cx > xmax:
            xmax = cx
        if cy < ymin:
            ymin = cy
        if cy > ymax:
            ymax = cy
    width = xmax - xmin if xmax > xmin else 1.0
    height = ymax - ymin if ymax > ymin else 1.0
    keys = np.zeros(n, dtype=np.int64)
    top = 65535.0
    for i in range(n):
        cx = (bounds[i, 0] + bounds[i, 2]) / 2
        cy = (bounds[i, 1] + bounds[i, 3]) / 2
        if cx == cx and cy == cy:  # an empty piece (NaN bounds) goes anywhere: no query ever meets it
            keys[i] = _hilbert(int(top * (cx - xmin) / width), int(top * (cy - ymin) / height), 16)
    return keys


@compiled(numba.types.Tuple((_BOXES, _IDS, _IDS))(_BOXES, _IDS, numba.int64))
def pack(bounds, order, node_size):
    """The packed tree: the boxes in ``order`` as leaves, then each level's nodes, up to one root.

    Returns every node's box, its reference (a leaf: the piece; above: its first child) and the end
    of its children (leaves: unused).
    """
    n = len(order)
    total = n
    count = n
    while count > 1:
        count = (count + node_size - 1) // node_size
        total += count
    if n == 0:
        total = 0
    boxes = np.empty((total, 4))
    ref = np.empty(total, dtype=np.int64)
    end = np.zeros(total, dtype=np.int64)
    for i in range(n):
        boxes[i] = bounds[order[i]]
        ref[i] = order[i]
    start = 0
    count = n
    at = n
    while count > 1:
        for first in range(start, start + count, node_size):
            last = min(first + node_size, start + count)
            x0 = y0 = np.inf
            x1 = y1 = -np.inf
            for c in range(first, last):
                # written so that NaN (an empty piece) never widens a node
                if boxes[c, 0] < x0:
                    x0 = boxes[c, 0]
                if boxes[c, 1] < y0:
                    y0 = boxes[c, 1]
                if boxes[c, 2] > x1:
                    x1 = boxes[c, 2]
                if boxes[c, 3] > y1:
                    y1 = boxes[c, 3]
            boxes[at, 0], boxes[at, 1], boxes[at, 2], boxes[at, 3] = x0, y0, x1, y1
            ref[at] = first
            end[at] = last
            at += 1
        start += count
        count = (count + node_size - 1) // node_size
    return boxes, ref, end


@numba.njit(inline="always")
def _walk(boxes, ref, end, leaves, x0, y0, x1, y1, stack, out, count):
    """Append to ``out`` (from ``count``) the pieces whose boxes meet (x0, y0, x1, y1); the new count,
    or -1 when ``out`` is too small (nothing in it is then to be read past ``count``)."""
    capacity = out.shape[0]
    stack[0] = boxes.shape[0] - 1  # the root
    top = 1
    while top > 0:
        top -= 1
        node = stack[top]
        if not (boxes[node, 0] <= x1 and boxes[node, 2] >= x0 and boxes[node, 1] <= y1 and boxes[node, 3] >= y0):
            continue
        if node < leaves:
            if count == capacity:
                return -1
            out[count] = ref[node]
            count += 1
        else:
            for child in range(ref[node], end[node]):
                stack[top] = child
                top += 1
    return count


@numba.njit(inline="always")
def query_into(boxes, ref, end, leaves, rank, x0, y0, x1, y1, stack, hits, count):
    """Append to ``hits`` (from ``count``) the pieces whose boxes meet (x0, y0, x1, y1), in ascending
    ``rank``: ``(hits, count)``, ``hits`` grown (a new array) when it had too little room. ``stack`` is
    scratch for the walk (NODE_SIZE a level)."""
    # no pieces, or an empty (NaN) query: nothing
    if boxes.shape[0] > 0 and x0 <= x1 and y0 <= y1:
        first = count
        found = _walk(boxes, ref, end, leaves, x0, y0, x1, y1, stack, hits, count)
        while found < 0:  # out of room: more room, and walk again
            grown = np.empty(2 * hits.shape[0], dtype=np.int64)
            grown[:count] = hits[:count]
            hits = grown
            found = _walk(boxes, ref, end, leaves, x0, y0, x1, y1, stack, hits, count)
        count = found
        if count - first > 1:
            keys = np.empty(count - first, dtype=np.int64)
            for k in range(count - first):
                keys[k] = rank[hits[first + k]]
            order = np.argsort(keys)
            mine = hits[first:count].copy()
            for k in range(count - first):
                hits[first + k] = mine[order[k]]
    return hits, count


@compiled(numba.types.Tuple((_IDS, _IDS))(_BOXES, _IDS, _IDS, numba.int64, _BOXES, _IDS))
def search(boxes, ref, end, leaves, queries, rank):
    """For each query box, the pieces whose boxes meet it (edges included, as GEOS's envelopes meet),
    each query's in ascending ``rank``: ``(query_of, hits)``, grouped by query in order."""
    # a walk holds at most NODE_SIZE nodes a level on its stack: 64 levels of 16 is beyond any tree
    stack = np.empty(64 * NODE_SIZE, dtype=np.int64)
    hits = np.empty(max(64, 16 * queries.shape[0]), dtype=np.int64)
    ends = np.zeros(queries.shape[0], dtype=np.int64)
    count = 0
    for q in range(queries.shape[0]):
        hits, count = query_into(boxes, ref, end, leaves, rank, queries[q, 0], queries[q, 1], queries[q, 2], queries[q, 3], stack, hits, count)
        ends[q] = count
    query_of = np.empty(count, dtype=np.int64)
    start = 0
    for q in range(queries.shape[0]):
        query_of[start : ends[q]] = q
        start = ends[q]
    return query_of, hits[:count].copy()


def strtree_rank(bounds: np.ndarray) -> np.ndarray:
    """Each piece's place in the order shapely's ``STRtree`` (node capacity 10) returns pieces in.

    A GEOS STRtree query gives its items in the order of its leaves, which depends on nothing but the
    items' boxes and their order. So a throwaway STRtree over two-point lines with the very same boxes
    (a few hundred bytes each, for the second it takes to build) returns, for a box around all of them,
    every piece in that order: sorting a query's pieces by it lists them as the index's STRtree did.
    """
    n = len(bounds)
    valid = ~np.isnan(bounds).any(axis=1)
    lines = np.full(n, None, dtype=object)
    lines[valid] = shapely.linestrings(bounds[valid].reshape(-1, 2, 2))
    tree = shapely.STRtree(lines, node_capacity=STRTREE_NODE_CAPACITY)
    del lines
    rank = np.full(n, n, dtype=np.int64)  # an empty piece: last (no query meets it anyway)
    if valid.any():
        everything = tree.query(shapely.box(*np.nanmin(bounds[:, :2], axis=0), *np.nanmax(bounds[:, 2:], axis=0)))
        rank[everything] = np.arange(len(everything))
    return rank


class PieceTree:
    """A packed Hilbert R-tree over the pieces' boxes; queries return pieces in ``rank`` order.

    ``rank`` (one integer per piece; by default the piece's number) decides the order each query's
    pieces come in. ``store``, when given, lets :meth:`query` test a predicate as ``STRtree.query`` does.
    """

    def __init__(self, bounds: np.ndarray, rank: np.ndarray | None = None, store: PieceStore | None = None):
        bounds = np.ascontiguousarray(bounds, dtype=np.float64).reshape(-1, 4)
        self.leaves = len(bounds)
        order = np.argsort(hilbert_keys(bounds), kind="stable").astype(np.int64)
        self.boxes, self.ref, self.end = pack(bounds, order, NODE_SIZE)
        self.rank = np.arange(self.leaves, dtype=np.int64) if rank is None else np.ascontiguousarray(rank, dtype=np.int64)
        self.store = store

    def __len__(self) -> int:
        return self.leaves

    @property
    def nbytes(self) -> int:
        return self.boxes.nbytes + self.ref.nbytes + self.end.nbytes + self.rank.nbytes

    def query_boxes(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(query_of, hits)``: the pieces whose boxes meet each of ``boxes`` (n, 4), by query, each in rank order."""
        return search(self.boxes, self.ref, self.end, self.leaves, np.ascontiguousarray(boxes, dtype=np.float64).reshape(-1, 4), self.rank)

    def query_box(self, xmin: float, ymin: float, xmax: float, ymax: float) -> np.ndarray:
        """The pieces whose boxes meet one box, in rank order."""
        return self.query_boxes(np.array([[xmin, ymin, xmax, ymax]]))[1]

    def query(self, geometry, predicate: str | None = None) -> np.ndarray:
        """The pieces whose boxes meet ``geometry``'s, and, with ``predicate`` (a shapely binary
        predicate such as ``"intersects"``), of those the pieces for which ``predicate(geometry, piece)``
        holds: what ``shapely.STRtree.query`` answers for one geometry."""
        hits = self.query_box(*shapely.bounds(geometry))
        if predicate is None or not len(hits):
            return hits
        if self.store is None:
            raise ValueError("a predicate needs the tree's pieces")
        shapely.prepare(geometry)
        return hits[getattr(shapely, predicate)(geometry, self.store.geometries(hits))]
