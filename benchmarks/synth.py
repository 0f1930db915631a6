"""Deterministic synthetic national constraint layers over England, for benchmarks.

``generate(scale, seed)`` builds one GeoDataFrame per Planning Data dataset, sized so that
``scale=1`` matches today's national counts (about 1.45 million features), clustered around
towns the way real designations are: listed buildings and conservation areas in town centres,
ancient woodland and SSSIs in the countryside, flood zones along meandering rivers. A few hundred
flood zones are long river bands of 50,000 to 80,000 vertices and the AONBs and national parks
have 10,000 to 100,000 vertices each, so that a benchmark sees the worst cases of the real data.

Geometry is built in EPSG:27700 with vectorised numpy and shapely 2 (no Python loop per small
feature), then converted to EPSG:4326 with OSTN15 (``convertbng``), the way the platform publishes
it. Frames carry the platform columns (``entity``, ``name``, ``reference``, ``dataset``,
``organisation-entity``, ``entry-date``, ``start-date``, ``end-date``) and the dataset fields the
catalogue reads (``listed-building-grade``, ``flood-risk-level``, ...).

``generate_sites(n, layers, seed)`` makes query sites where features are dense, and
``write_to_cache(layers, cache)`` stores the layers in a :class:`datasets.cache.LayerCache`.

Command line::

    python -m benchmarks.synth --scale 0.1 --out ./synthetic-cache [--seed 42]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from benchmarks.common import BENCH_DIR, emit, log, scale_tag
from datasets.cache import BASE_COLUMNS
from datasets.crs import lonlat_to_bng, to_wgs84  # OSTN15, vectorised: one call per layer

# --------------------------------------------------------------------------------------------
# England, towns and national counts
# --------------------------------------------------------------------------------------------

#: A coarse hand-drawn outline of England in British National Grid metres (coast clockwise from
#: Land's End, then the Scottish and Welsh borders). Good to a few kilometres: enough to keep
#: towns and features on land and out of Wales and Scotland.
ENGLAND_OUTLINE_BNG = (
    (134000, 25000), (170000, 12000), (200000, 45000), (248000, 52000), (283000, 37000),
    (300000, 80000), (340000, 91000), (368000, 70000), (400000, 78000), (430000, 95000),
    (470000, 98000), (530000, 103000), (559000, 96000), (609000, 115000), (634000, 140000),
    (639000, 170000), (611000, 167000), (591000, 175000), (588000, 185000), (605000, 192000),
    (617000, 214000), (626000, 232000), (646000, 257000), (655000, 293000), (652000, 307000),
    (622000, 342000), (567000, 341000), (562000, 320000), (533000, 343000), (557000, 363000),
    (551000, 385000), (540000, 411000), (515000, 425000), (534000, 428000), (518000, 467000),
    (525000, 471000), (504000, 488000), (490000, 511000), (461000, 525000), (452000, 533000),
    (440000, 557000), (437000, 569000), (427000, 604000), (418000, 635000), (400000, 653000),
    (384000, 640000), (370000, 607000), (350000, 582000), (332000, 567000), (322000, 562000),
    (311000, 553000), (303000, 537000), (299000, 528000), (294000, 512000), (308000, 496000),
    (317000, 480000), (320000, 468000), (343000, 465000), (333000, 448000), (331000, 436000),
    (333000, 417000), (328000, 407000), (322000, 392000), (330000, 378000), (340000, 366000),
    (350000, 340000), (329000, 329000), (326000, 310000), (330000, 290000), (328000, 272000),
    (330000, 256000), (323000, 242000), (350000, 212000), (353000, 193000), (351000, 178000),
    (331000, 161000), (325000, 148000), (297000, 146000), (272000, 149000), (252000, 148000),
    (243000, 135000), (223000, 126000), (220000, 106000), (192000, 76000), (181000, 62000),
    (152000, 40000),
)  # fmt: skip
ENGLAND = shapely.Polygon(ENGLAND_OUTLINE_BNG)
shapely.prepare(ENGLAND)
_ENGLAND_BOUNDS = ENGLAND.bounds
_ENGLAND_COAST = ENGLAND.buffer(2000.0)  # what large designations are clipped to

#: Real cities (BNG centre, relative weight): they get the biggest clusters. The rest of the
#: towns are placed at random with a heavy-tailed weight, as town sizes are.
CITIES = (
    ("London", 530000, 180000, 30.0), ("Birmingham", 407000, 287000, 8.0),
    ("Manchester", 384000, 398000, 8.0), ("Leeds", 430000, 433000, 5.0),
    ("Liverpool", 336000, 390000, 5.0), ("Sheffield", 435000, 387000, 4.0),
    ("Bristol", 359000, 173000, 4.0), ("Newcastle", 425000, 564000, 4.0),
    ("Nottingham", 457000, 340000, 3.0), ("Leicester", 458000, 304000, 3.0),
    ("Southampton", 442000, 112000, 2.5), ("Brighton", 531000, 106000, 2.0),
    ("Plymouth", 248000, 57000, 2.0), ("Norwich", 623000, 308000, 2.0), ("York", 460000, 452000, 2.0),
    ("Oxford", 451000, 206000, 2.0), ("Cambridge", 545000, 258000, 2.0), ("Bath", 375000, 165000, 2.0),
    ("Exeter", 292000, 92000, 1.5), ("Canterbury", 615000, 157000, 1.5), ("Hull", 509000, 430000, 2.0),
    ("Coventry", 433000, 279000, 2.0), ("Stoke", 388000, 347000, 2.0), ("Derby", 435000, 336000, 2.0),
    ("Reading", 471000, 173000, 2.0), ("Portsmouth", 464000, 101000, 2.0),
    ("Ipswich", 616000, 244000, 1.5), ("Lincoln", 497000, 371000, 1.5), ("Carlisle", 340000, 556000, 1.0),
    ("Chester", 341000, 366000, 1.5),
)  # fmt: skip
N_TOWNS = 300

#: Feature counts at ``scale=1`` (today's national figures on planning.data.gov.uk).
NATIONAL_COUNTS = {
    "listed-building": 400_000,
    "listed-building-outline": 100_000,
    "tree-preservation-zone": 75_000,
    "conservation-area": 11_000,
    "article-4-direction-area": 7_000,
    "ancient-woodland": 45_000,
    "flood-risk-zone": 780_000,
    "site-of-special-scientific-interest": 4_000,
    "scheduled-monument": 20_000,
    "area-of-outstanding-natural-beauty": 34,
    "national-park": 10,
    "green-belt": 190,
}
#: Rivers at ``scale=1``; each gives two long bands (flood zones 3 and 2), 300 in all.
NATIONAL_RIVERS = 150

#: First entity number of each dataset. The ranges follow the platform's own (national-park
#: from 520000, so that the Broads is 520007 as in the catalogue) and stay disjoint up to
#: ``MAX_SCALE``.
ENTITY_BASE = {
    "national-park": 520_000,
    "area-of-outstanding-natural-beauty": 1_000_000,
    "scheduled-monument": 1_400_000,
    "green-belt": 1_900_000,
    "article-4-direction-area": 7_000_000,
    "site-of-special-scientific-interest": 14_500_000,
    "tree-preservation-zone": 19_000_000,
    "listed-building": 31_000_000,
    "listed-building-outline": 42_000_000,
    "conservation-area": 44_000_000,
    "flood-risk-zone": 65_000_000,
    "ancient-woodland": 110_000_000,
}
MAX_SCALE = 25.0

#: The ten English national parks: (name, BNG centre, area km², aspect ratio). The Broads is
#: seventh so that its entity is 520007, the entity the catalogue's ``designated.nationalPark.broads``
#: names.
NATIONAL_PARKS = (
    ("Dartmoor", 265000, 76000, 954, 1.3), ("Exmoor", 285000, 138000, 693, 1.8),
    ("Lake District", 328000, 508000, 2362, 1.2), ("New Forest", 425000, 108000, 566, 1.3),
    ("North York Moors", 470000, 496000, 1434, 1.8), ("Northumberland", 385000, 600000, 1048, 2.0),
    ("Peak District", 411000, 375000, 1437, 1.6), ("The Broads", 637000, 310000, 303, 1.6),
    ("South Downs", 490000, 115000, 1627, 5.0), ("Yorkshire Dales", 395000, 478000, 2178, 1.3),
)  # fmt: skip

#: Green belts: (city, inner and outer radius in km, share of the sectors). Each ring is cut into
#: sectors that share their radial edges exactly, like the per-council pieces of the real layer.
GREEN_BELTS = (
    ("London", 14, 42, 0.33), ("Birmingham", 10, 26, 0.11), ("Manchester", 12, 30, 0.13),
    ("Leeds", 8, 24, 0.10), ("Sheffield", 6, 17, 0.05), ("Nottingham", 6, 16, 0.04),
    ("Bristol", 6, 17, 0.04), ("Newcastle", 6, 18, 0.04), ("Oxford", 4, 12, 0.03),
    ("Cambridge", 4, 12, 0.03), ("York", 3, 9, 0.03), ("Stoke", 5, 13, 0.03), ("Derby", 4, 10, 0.02),
    ("Coventry", 4, 10, 0.02),
)  # fmt: skip

PLATFORM_COLUMNS = BASE_COLUMNS  # the cache's platform columns, in its order


def counts_for(scale: float) -> dict[str, int]:
    """Feature count of every dataset at ``scale``: proportional, at least one of each."""
    _check_scale(scale)
    return {name: max(1, round(count * scale)) for name, count in NATIONAL_COUNTS.items()}


def _check_scale(scale: float) -> None:
    if not (0 < scale <= MAX_SCALE) or not np.isfinite(scale):
        raise ValueError(f"scale must be in (0, {MAX_SCALE:g}], got {scale!r}")


def scale_argument(text: str) -> float:
    """``--scale`` for the benchmarks' command lines: a bad value is argparse's usage error (exit 2)."""
    try:
        scale = float(text)
        _check_scale(scale)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc) if "scale" in str(exc) else f"scale must be a number, got {text!r}") from None
    return scale


def benchmark_parser(module: str, doc: str, default_scale: float = 0.01) -> argparse.ArgumentParser:
    """The command line the benchmarks share: the ``--scale`` of the synthetic layers and their ``--seed``."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    parser.add_argument(
        "--scale", type=scale_argument, default=default_scale, help=f"1 = national counts (default {default_scale:g})"
    )
    parser.add_argument("--seed", type=int, default=42)
    return parser


# --------------------------------------------------------------------------------------------
# Vectorised geometry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Towns:
    x: np.ndarray
    y: np.ndarray
    weight: np.ndarray  # relative size, sums to 1
    radius: np.ndarray  # metres, the spread of a town's features


def _towns(rng: np.random.Generator) -> Towns:
    cx = np.array([c[1] for c in CITIES], dtype=float)
    cy = np.array([c[2] for c in CITIES], dtype=float)
    cw = np.array([c[3] for c in CITIES], dtype=float)
    n_random = N_TOWNS - len(CITIES)
    rx, ry = _uniform_in_england(rng, n_random, inset=4000.0)
    rw = np.clip(0.15 * (rng.pareto(1.3, n_random) + 1.0), 0.15, 1.5)
    weight = np.concatenate([cw, rw])
    radius = 900.0 + 1600.0 * np.sqrt(weight)
    return Towns(np.concatenate([cx, rx]), np.concatenate([cy, ry]), weight / weight.sum(), radius)


_ENGLAND_INSET: dict[float, shapely.Geometry] = {}


def _inside(x: np.ndarray, y: np.ndarray, inset: float = 0.0) -> np.ndarray:
    region = ENGLAND
    if inset:
        if inset not in _ENGLAND_INSET:
            _ENGLAND_INSET[inset] = ENGLAND.buffer(-inset)
            shapely.prepare(_ENGLAND_INSET[inset])
        region = _ENGLAND_INSET[inset]
    return shapely.contains_xy(region, x, y)


def _uniform_in_england(rng, n: int, inset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniformly distributed over England (rejection sampling, vectorised)."""
    minx, miny, maxx, maxy = _ENGLAND_BOUNDS
    xs, ys, have = [np.empty(0)], [np.empty(0)], 0
    while have < n:
        m = int((n - have) * 2.6) + 16  # England fills about 45 % of its bounding box
        x = rng.uniform(minx, maxx, m)
        y = rng.uniform(miny, maxy, m)
        keep = _inside(x, y, inset)
        xs.append(x[keep])
        ys.append(y[keep])
        have += int(keep.sum())
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


def _scatter(rng, n: int, towns: Towns, spread: float, rural: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points: a ``rural`` fraction uniform over England, the rest around towns.

    A town's features are normally distributed around its centre with a standard deviation of
    ``spread`` times the town's radius; points that fall in the sea are drawn again.
    """
    n_rural = int(round(n * rural))
    n_town = n - n_rural
    x = np.empty(n)
    y = np.empty(n)
    x[:n_rural], y[:n_rural] = _uniform_in_england(rng, n_rural)
    todo = np.arange(n_rural, n)
    town = rng.choice(len(towns.x), size=n_town, p=towns.weight)
    for _ in range(30):
        if todo.size == 0:
            break
        t = town[todo - n_rural]
        sigma = towns.radius[t] * spread
        x[todo] = towns.x[t] + rng.normal(0.0, 1.0, todo.size) * sigma
        y[todo] = towns.y[t] + rng.normal(0.0, 1.0, todo.size) * sigma
        todo = todo[~_inside(x[todo], y[todo])]
    if todo.size:  # a handful of stubborn coastal draws: put them anywhere on land
        x[todo], y[todo] = _uniform_in_england(rng, todo.size)
    order = rng.permutation(n)  # interleave rural and town features
    return x[order], y[order]


def _log_uniform(rng, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def _vertex_counts(rng, area: np.ndarray, lo_area: float, hi_area: float, lo: int, hi: int) -> np.ndarray:
    """Vertex counts between ``lo`` and ``hi``, larger features getting more vertices."""
    frac = (np.log(area) - np.log(lo_area)) / max(np.log(hi_area) - np.log(lo_area), 1e-9)
    frac = np.clip(frac + rng.normal(0.0, 0.15, area.size), 0.0, 1.0)
    return (lo + np.round((hi - lo) * frac)).astype(np.int64)


def star_polygons(
    rng: np.random.Generator,
    cx: np.ndarray,
    cy: np.ndarray,
    area: np.ndarray,
    nverts: np.ndarray,
    *,
    roughness: float = 0.25,
    harmonics: float = 0.25,
    max_aspect: float = 2.5,
) -> np.ndarray:
    """Random simple polygons, one per centre, with exact areas, built in one vectorised pass.

    Each polygon is star-shaped about its centre: vertex ``j`` of ``n`` sits at a strictly
    increasing angle ``2 pi (j + jitter) / n`` and a positive radius (a few random low harmonics
    for a lobed outline plus per-vertex ``roughness``), so it is valid by construction. It is then
    stretched by a random aspect ratio (area-preserving), rotated, and scaled so that its area is
    exactly ``area``.
    """
    n_poly = cx.size
    nverts = np.asarray(nverts, dtype=np.int64)
    total = int(nverts.sum())
    starts = np.concatenate([[0], np.cumsum(nverts)[:-1]])
    owner = np.repeat(np.arange(n_poly), nverts)
    j = np.arange(total) - starts[owner]
    n = nverts[owner].astype(float)
    theta = 2.0 * np.pi * (j + rng.uniform(-0.35, 0.35, total)) / n

    r = 1.0 + roughness * rng.uniform(-1.0, 1.0, total)
    for k in (2, 3, 5):  # a few lobes, random per polygon
        amp = harmonics / k * rng.uniform(0.0, 1.0, n_poly)
        phase = rng.uniform(0.0, 2.0 * np.pi, n_poly)
        r += amp[owner] * np.cos(k * theta + phase[owner])
    r = np.maximum(r, 0.2)

    aspect = np.sqrt(rng.uniform(1.0, max_aspect, n_poly))
    rot = rng.uniform(0.0, np.pi, n_poly)
    ux = r * np.cos(theta) * aspect[owner]
    uy = r * np.sin(theta) / aspect[owner]
    # Shoelace area of the unit shape per polygon, then the scale that gives the wanted area.
    nxt = np.arange(total) + 1
    last = starts + nverts - 1
    nxt[last] = starts
    cross = ux * uy[nxt] - ux[nxt] * uy
    unit_area = 0.5 * np.add.reduceat(cross, starts)
    s = np.sqrt(area / unit_area)[owner]
    cos, sin = np.cos(rot)[owner], np.sin(rot)[owner]
    x = cx[owner] + s * (ux * cos - uy * sin)
    y = cy[owner] + s * (ux * sin + uy * cos)
    rings = shapely.linearrings(np.column_stack([x, y]), indices=owner)
    return shapely.polygons(rings)


def _fractal_radius(rng, n: int, amplitude: float, beta: float = 1.7, k_min: int = 1) -> np.ndarray:
    """A smooth random periodic function sampled at ``n`` angles (power-law spectrum, via FFT)."""
    kmax = n // 2 + 1
    k = np.arange(kmax, dtype=float)
    spectrum = np.zeros(kmax, dtype=complex)
    live = k >= k_min
    spectrum[live] = k[live] ** -beta * np.exp(1j * rng.uniform(0, 2 * np.pi, live.sum()))
    noise = np.fft.irfft(spectrum, n)
    noise *= amplitude / max(noise.std(), 1e-12)
    return noise


def blob(rng, cx: float, cy: float, area: float, n: int, aspect: float = 1.3, amplitude: float = 0.3):
    """One large irregular polygon of exactly ``n`` vertices (fractal outline, star-shaped)."""
    theta = 2.0 * np.pi * (np.arange(n) + rng.uniform(-0.3, 0.3, n)) / n
    r = np.exp(_fractal_radius(rng, n, amplitude))
    ux = r * np.cos(theta) * np.sqrt(aspect)
    uy = r * np.sin(theta) / np.sqrt(aspect)
    unit_area = 0.5 * np.sum(ux * np.roll(uy, -1) - np.roll(ux, -1) * uy)
    s = np.sqrt(area / unit_area)
    rot = rng.uniform(0.0, np.pi)
    x = cx + s * (ux * np.cos(rot) - uy * np.sin(rot))
    y = cy + s * (ux * np.sin(rot) + uy * np.cos(rot))
    return shapely.Polygon(np.column_stack([x, y]))


def _clip_to_england(geom):
    """Clip a large polygon to England (dropping sea); keeps it if clipping would empty it."""
    clipped = shapely.intersection(geom, _ENGLAND_COAST)
    clipped = _polygonal(clipped)
    return geom if clipped.is_empty else clipped


def _large_designation(rng, cx: float, cy: float, area: float, aspect: float, amplitude: float):
    """A blob of 10k to 100k vertices (log-uniform) clipped to England.

    Clipping drops the vertices that fall in the sea, so a blob that loses too many is drawn
    again with proportionally more, keeping every large designation within 10k to 100k vertices.
    """
    target = int(_log_uniform(rng, 10_000, 100_000, 1)[0])
    n = target
    for _ in range(6):
        geom = _clip_to_england(blob(rng, cx, cy, area, n, aspect=aspect, amplitude=amplitude))
        count = int(shapely.get_num_coordinates(geom))
        if 10_000 <= count <= 100_000:
            break
        n = max(1000, min(int(n * target / count) + 64, 140_000))
    return geom


def _polygonal(geom):
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _valid(geoms: np.ndarray) -> np.ndarray:
    """Repair the rare invalid polygon (``make_valid``, polygonal part kept)."""
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms = geoms.copy()
        geoms[bad] = [_polygonal(shapely.make_valid(g)) for g in geoms[bad]]
    return geoms


# --------------------------------------------------------------------------------------------
# Rivers and flood zones
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class River:
    x: np.ndarray  # centreline, BNG metres
    y: np.ndarray
    heading: np.ndarray


def _river(rng, towns: Towns) -> River:
    """A meandering centreline of 25k to 40k vertices, entirely in England.

    The heading swings around a base direction by at most about 70 degrees (sums of sines with
    wavelengths from 1 to 40 km), so the line never doubles back on itself and its curvature
    radius stays above about 400 m: wider than the flood bands built on it, which therefore
    cannot self-intersect.
    """
    for _ in range(50):
        t = rng.choice(len(towns.x), p=towns.weight)
        x0 = towns.x[t] + rng.normal(0, 3000)
        y0 = towns.y[t] + rng.normal(0, 3000)
        length = rng.uniform(60_000, 220_000)
        step = 20.0
        s = np.arange(0.0, length, step)
        base = rng.uniform(0, 2 * np.pi)
        dev = np.zeros_like(s)
        for amp, lo, hi in ((0.55, 3000, 8000), (0.4, 15000, 40000), (0.12, 900, 1500)):
            dev += (
                amp
                * rng.uniform(0.6, 1.0)
                * np.sin(2 * np.pi * s / rng.uniform(lo, hi) + rng.uniform(0, 6.3))
            )
        heading = base + dev
        x = x0 + np.concatenate([[0.0], np.cumsum(step * np.cos(heading[:-1]))])
        y = y0 + np.concatenate([[0.0], np.cumsum(step * np.sin(heading[:-1]))])
        # Keep the longest stretch on land, at least 20 km of river.
        inside = _inside(x, y, inset=500.0)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], inside.astype(np.int8), [0]])))
        runs = edges.reshape(-1, 2)
        if runs.size == 0:
            continue
        a, b = runs[np.argmax(runs[:, 1] - runs[:, 0])]
        if (b - a) * step < 20_000:
            continue
        # Resample that stretch to the wanted vertex count (2 to 8 m apart, as in surveyed data).
        n_c = int(rng.integers(25_000, 40_001))
        fine = np.linspace(s[a], s[b - 1], n_c)
        return River(
            np.interp(fine, s[a:b], x[a:b]),
            np.interp(fine, s[a:b], y[a:b]),
            np.interp(fine, s[a:b], heading[a:b]),
        )
    raise RuntimeError("could not place a river in England")  # pragma: no cover - 50 tries


def _band(rng, river: River, half_width: float):
    """The flood band either side of a river: left bank, then right bank reversed (2n vertices)."""
    n = river.x.size
    wobble = 1.0 + _fractal_radius(rng, n, 0.12, beta=2.0, k_min=3)
    w = half_width * wobble + rng.uniform(-1.0, 1.0, n)  # metre-scale survey noise on the edge
    nx, ny = -np.sin(river.heading), np.cos(river.heading)
    left = np.column_stack([river.x + w * nx, river.y + w * ny])
    right = np.column_stack([river.x - w * nx, river.y - w * ny])
    return shapely.Polygon(np.concatenate([left, right[::-1]]))


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def _dates(rng, n: int, start: str, days: int) -> np.ndarray:
    return (
        (np.datetime64(start) + rng.integers(0, days, n).astype("timedelta64[D]")).astype(str).astype(object)
    )


def _numbered(prefix: str, numbers: np.ndarray) -> np.ndarray:
    return np.array([f"{prefix}{i}" for i in numbers.tolist()], dtype=object)


def _organisation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A stand-in local authority per feature: one per 25 km grid square (about 300 in England)."""
    code = 1000 + (np.asarray(x) // 25000).astype(np.int64) * 100 + (np.asarray(y) // 25000).astype(np.int64)
    return code.astype(str).astype(object)


def _frame(rng, dataset: str, geoms: np.ndarray, names, fields: dict | None = None, prefix: str = "") -> dict:
    n = geoms.size
    reps = shapely.get_coordinates(shapely.point_on_surface(geoms)) if n else np.empty((0, 2))
    columns = {
        "entity": ENTITY_BASE[dataset] + np.arange(n, dtype=np.int64),
        "name": names,
        "reference": _numbered(prefix or dataset[:3].upper(), np.arange(1, n + 1) + 1000),
        "dataset": np.full(n, dataset, dtype=object),
        "organisation-entity": _organisation(reps[:, 0], reps[:, 1]),
        "entry-date": _dates(rng, n, "2019-01-01", 2000),
        "start-date": _dates(rng, n, "1950-01-01", 26000),
        "end-date": np.full(n, "", dtype=object),
    }
    columns.update(fields or {})
    return {"columns": columns, "geometry": geoms}


def _small_layer(rng, towns, n, *, area, verts, spread, rural, roughness=0.25, max_aspect=2.5, centres=None):
    if centres is None:
        cx, cy = _scatter(rng, n, towns, spread, rural)
    else:
        cx, cy = centres
    a = _log_uniform(rng, area[0], area[1], n)
    nv = _vertex_counts(rng, a, area[0], area[1], verts[0], verts[1])
    return star_polygons(rng, cx, cy, a, nv, roughness=roughness, max_aspect=max_aspect)


def _generate_bng(scale: float, seed: int) -> dict[str, dict]:
    counts = counts_for(scale)
    # One child generator per dataset: a dataset's features do not depend on the others' counts.
    root = np.random.SeedSequence(seed)
    streams = dict(
        zip(["towns", "rivers", *NATIONAL_COUNTS], root.spawn(len(NATIONAL_COUNTS) + 2), strict=True)
    )
    rng_of = {name: np.random.default_rng(s) for name, s in streams.items()}
    towns = _towns(rng_of["towns"])
    out: dict[str, dict] = {}

    # Listed buildings: points in towns and villages; 100k of them also have an outline.
    rng = rng_of["listed-building"]
    n = counts["listed-building"]
    lx, ly = _scatter(rng, n, towns, spread=0.7, rural=0.3)
    grade = rng.choice(np.array(["I", "II*", "II"], dtype=object), size=n, p=[0.025, 0.055, 0.92])
    out["listed-building"] = _frame(
        rng,
        "listed-building",
        shapely.points(lx, ly),
        _numbered("Listed building ", np.arange(1, n + 1)),
        {"listed-building-grade": grade},
        prefix="",
    )

    rng = rng_of["listed-building-outline"]
    n = counts["listed-building-outline"]
    take = np.arange(n) % lx.size
    geoms = _small_layer(
        rng, towns, n, area=(40, 1500), verts=(4, 14), spread=0, rural=0, roughness=0.12, max_aspect=3.5,
        centres=(lx[take] + rng.normal(0, 3, n), ly[take] + rng.normal(0, 3, n)),
    )  # fmt: skip
    out["listed-building-outline"] = _frame(
        rng,
        "listed-building-outline",
        geoms,
        _numbered("Listed building ", take + 1),
        {"listed-building-grade": grade[take]},
        prefix="LBO",
    )

    layer_specs = {
        # dataset: (area m², vertices, spread, rural, roughness, name prefix)
        "tree-preservation-zone": ((200, 50_000), (5, 40), 1.0, 0.10, 0.3, "TPO area "),
        "conservation-area": ((20_000, 1_500_000), (20, 200), 0.6, 0.15, 0.2, "Conservation area "),
        "article-4-direction-area": ((5_000, 20_000_000), (8, 300), 0.8, 0.05, 0.15, "Article 4 direction "),
        "ancient-woodland": ((20_000, 2_000_000), (15, 150), 3.0, 0.85, 0.3, "Wood "),
        "site-of-special-scientific-interest": ((50_000, 30_000_000), (30, 600), 3.0, 0.9, 0.25, "SSSI "),
        "scheduled-monument": ((200, 100_000), (4, 40), 1.5, 0.6, 0.2, "Scheduled monument "),
    }
    for dataset, (area, verts, spread, rural, rough, label) in layer_specs.items():
        rng = rng_of[dataset]
        n = counts[dataset]
        geoms = _small_layer(
            rng, towns, n, area=area, verts=verts, spread=spread, rural=rural, roughness=rough
        )
        fields = {}
        if dataset == "tree-preservation-zone":
            fields["tree-preservation-order"] = _numbered("TPO/", rng.integers(1, 5000, n))
            fields["tree-preservation-zone-type"] = rng.choice(
                np.array(["area", "woodland", "group"], dtype=object), size=n, p=[0.6, 0.25, 0.15]
            )
        out[dataset] = _frame(rng, dataset, geoms, _numbered(label, np.arange(1, n + 1)), fields)

    # Rivers: long bands for flood zones 3 (narrow) and 2 (wider), then small flood patches
    # strung along the rivers and around towns.
    rng = rng_of["rivers"]
    n_rivers = max(1, round(NATIONAL_RIVERS * scale))
    rivers = [_river(rng, towns) for _ in range(n_rivers)]
    bands, levels = [], []
    for river in rivers:
        w3 = rng.uniform(40, 140)
        bands += [_band(rng, river, w3), _band(rng, river, min(w3 * rng.uniform(1.5, 2.4), 250.0))]
        levels += ["3", "2"]
    rng = rng_of["flood-risk-zone"]
    n_patch = max(0, counts["flood-risk-zone"] - len(bands))
    n_along = int(n_patch * 0.6)
    cx = np.concatenate([r.x for r in rivers])
    cy = np.concatenate([r.y for r in rivers])
    pick = rng.integers(0, cx.size, n_along)
    ax, ay = cx[pick] + rng.normal(0, 700, n_along), cy[pick] + rng.normal(0, 700, n_along)
    tx, ty = _scatter(rng, n_patch - n_along, towns, spread=1.5, rural=0.35)
    patches = _small_layer(
        rng, towns, n_patch, area=(500, 400_000), verts=(6, 40), spread=0, rural=0, roughness=0.3,
        centres=(np.concatenate([ax, tx]), np.concatenate([ay, ty])),
    )  # fmt: skip
    geoms = np.concatenate([_valid(np.array(bands, dtype=object)), patches])
    level = np.concatenate(
        [np.array(levels, dtype=object), rng.choice(np.array(["2", "3"], dtype=object), n_patch)]
    )
    out["flood-risk-zone"] = _frame(
        rng,
        "flood-risk-zone",
        geoms,
        np.array([f"Flood zone {lv}" for lv in level.tolist()], dtype=object),
        {
            "flood-risk-level": level,
            "flood-risk-type": rng.choice(
                np.array(["fluvial", "tidal"], dtype=object), geoms.size, p=[0.85, 0.15]
            ),
        },
        prefix="FZ",
    )

    # AONBs: 34 large rural blobs of 10k to 100k vertices.
    rng = rng_of["area-of-outstanding-natural-beauty"]
    n = counts["area-of-outstanding-natural-beauty"]
    ax, ay = _uniform_in_england(rng, n, inset=15_000.0)
    geoms = [
        _large_designation(rng, ax[i], ay[i], _log_uniform(rng, 150e6, 2000e6, 1)[0], rng.uniform(1, 3), 0.3)
        for i in range(n)
    ]
    out["area-of-outstanding-natural-beauty"] = _frame(
        rng,
        "area-of-outstanding-natural-beauty",
        _valid(np.array(geoms, dtype=object)),
        _numbered("Area of Outstanding Natural Beauty ", np.arange(1, n + 1)),
        prefix="AONB",
    )

    # National parks: the ten real ones at their real places and sizes, more at random beyond.
    rng = rng_of["national-park"]
    n = counts["national-park"]
    geoms, names = [], []
    for i in range(n):
        if i < len(NATIONAL_PARKS):
            name, px, py, km2, aspect = NATIONAL_PARKS[i]
        else:
            px, py = _uniform_in_england(rng, 1, inset=20_000.0)
            name, px, py, km2, aspect = f"National park {i + 1}", px[0], py[0], rng.uniform(300, 2000), 1.5
        geoms.append(_large_designation(rng, px, py, km2 * 1e6, aspect, 0.25))
        names.append(name)
    out["national-park"] = _frame(
        rng,
        "national-park",
        _valid(np.array(geoms, dtype=object)),
        np.array(names, dtype=object),
        prefix="NP",
    )

    # Green belts: rings around cities cut into sectors sharing their edges exactly.
    rng = rng_of["green-belt"]
    out["green-belt"] = _green_belt(rng, counts["green-belt"])
    return out


def _green_belt(rng, n_total: int) -> dict:
    city = {c[0]: (c[1], c[2]) for c in CITIES}
    shares = np.array([g[3] for g in GREEN_BELTS])
    per_city = np.floor(shares / shares.sum() * n_total).astype(int)
    for i in np.argsort(-shares)[: n_total - per_city.sum()]:
        per_city[i] += 1
    geoms, names = [], []
    for (name, r_in, r_out, _), k in zip(GREEN_BELTS, per_city, strict=True):
        if k == 0:
            continue
        m = int(rng.integers(600, 3000)) * k  # vertices round the whole ring
        theta = 2 * np.pi * np.arange(m + 1) / m + rng.uniform(0, 2 * np.pi)
        outer = r_out * 1000 * np.exp(_fractal_radius(rng, m, 0.18))
        inner = np.minimum(r_in * 1000 * np.exp(_fractal_radius(rng, m, 0.18)), 0.7 * outer)
        outer, inner = np.append(outer, outer[0]), np.append(inner, inner[0])
        cx, cy = city[name]
        cuts = np.linspace(0, m, k + 1).astype(int)
        for s in range(k):
            a, b = cuts[s], cuts[s + 1] + 1
            ring = np.concatenate(
                [
                    np.column_stack(
                        [cx + outer[a:b] * np.cos(theta[a:b]), cy + outer[a:b] * np.sin(theta[a:b])]
                    ),
                    np.column_stack(
                        [cx + inner[a:b] * np.cos(theta[a:b]), cy + inner[a:b] * np.sin(theta[a:b])]
                    )[::-1],
                ]
            )
            geoms.append(
                _clip_to_england(shapely.Polygon(ring))
                if k > 1
                else _ring_polygon(cx, cy, outer, inner, theta)
            )
            names.append(f"{name} Green Belt {s + 1}")
    return _frame(
        rng, "green-belt", _valid(np.array(geoms, dtype=object)), np.array(names, dtype=object), prefix="GB"
    )


def _ring_polygon(cx, cy, outer, inner, theta):
    shell = np.column_stack([cx + outer * np.cos(theta), cy + outer * np.sin(theta)])
    hole = np.column_stack([cx + inner * np.cos(theta), cy + inner * np.sin(theta)])
    return _clip_to_england(shapely.Polygon(shell, [hole[::-1]]))


def generate(scale: float, seed: int = 42) -> dict[str, gpd.GeoDataFrame]:
    """Synthetic national layers over England, one GeoDataFrame (EPSG:4326) per dataset.

    Parameters
    ----------
    scale : float
        1 gives today's national counts (see ``NATIONAL_COUNTS``); counts are proportional,
        with at least one feature per dataset. Vertex counts per feature do not scale.
    seed : int
        Seed of the numpy ``Generator``: the same (scale, seed) always gives identical layers.

    Returns
    -------
    dict[str, geopandas.GeoDataFrame]
        Keyed by Planning Data dataset name; platform columns, dataset fields, ``geometry``.
    """
    layers = {}
    for dataset, parts in _generate_bng(scale, seed).items():
        frame = pd.DataFrame(parts["columns"])
        layers[dataset] = gpd.GeoDataFrame(frame, geometry=to_wgs84(parts["geometry"]), crs="EPSG:4326")
    return layers


# --------------------------------------------------------------------------------------------
# Query sites
# --------------------------------------------------------------------------------------------


def generate_sites(n: int, layers: dict[str, gpd.GeoDataFrame], seed: int = 42) -> list[shapely.Polygon]:
    """``n`` query sites (EPSG:4326 polygons) placed where the layers' features are dense.

    Sites have 4 to 60 vertices and 50 m² to 5 ha (log-uniform). They are centred on, or
    straddling the edge of, features sampled from the layers: listed buildings and their
    outlines (45 %), conservation areas and TPO zones (20 %), flood zones, half of those on the
    long river bands (20 %), AONBs, national parks and green belts (10 %, on their edges, the
    worst case for an index), and anywhere in England (5 %).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    groups = [
        (0.30, ["listed-building"], "point"),
        (0.15, ["listed-building-outline"], "inside"),
        (0.12, ["conservation-area"], "edge"),
        (0.08, ["tree-preservation-zone"], "inside"),
        (0.10, ["flood-risk-zone"], "inside"),
        (0.10, ["flood-risk-zone:largest"], "edge"),
        (0.10, ["area-of-outstanding-natural-beauty", "national-park", "green-belt"], "edge"),
    ]
    which = rng.uniform(0, 1, n)
    anchors_lonlat = np.full((n, 2), np.nan)
    lo = 0.0
    for share, datasets, how in groups:
        hit = np.flatnonzero((which >= lo) & (which < lo + share))
        lo += share
        pool = _site_pool(layers, datasets)
        if hit.size == 0 or pool.size == 0:
            continue
        chosen = pool[rng.integers(0, pool.size, hit.size)]
        if how == "point":
            anchors_lonlat[hit] = shapely.get_coordinates(chosen)[: hit.size]
        elif how == "inside":
            anchors_lonlat[hit] = shapely.get_coordinates(shapely.point_on_surface(chosen))
        else:  # a random vertex of the outline: the site straddles the edge
            for i, g in zip(hit, chosen, strict=True):
                coords = shapely.get_coordinates(shapely.boundary(g))
                anchors_lonlat[i] = coords[rng.integers(0, len(coords))]
    free = np.flatnonzero(np.isnan(anchors_lonlat[:, 0]))
    fx, fy = _uniform_in_england(rng, free.size)
    x = np.empty(n)
    y = np.empty(n)
    x[free], y[free] = fx, fy
    placed = np.flatnonzero(~np.isnan(anchors_lonlat[:, 0]))
    if placed.size:
        e, nn = lonlat_to_bng(anchors_lonlat[placed, 0], anchors_lonlat[placed, 1])
        x[placed], y[placed] = e, nn
    area = _log_uniform(rng, 50.0, 50_000.0, n)
    radius = np.sqrt(area / np.pi)
    x += rng.uniform(-0.5, 0.5, n) * radius
    y += rng.uniform(-0.5, 0.5, n) * radius
    nverts = rng.integers(4, 61, n)
    sites = star_polygons(rng, x, y, area, nverts, roughness=0.2, harmonics=0.2, max_aspect=3.0)
    return list(to_wgs84(sites))


def _site_pool(layers, datasets) -> np.ndarray:
    pools = []
    for name in datasets:
        name, _, largest = name.partition(":")
        frame = layers.get(name)
        if frame is None or len(frame) == 0:
            continue
        geoms = np.asarray(frame.geometry.values, dtype=object)
        if largest:
            counts = shapely.get_num_coordinates(geoms)
            geoms = geoms[counts >= 10_000]
        pools.append(np.asarray(geoms, dtype=object))
    return np.concatenate(pools) if pools else np.empty(0, dtype=object)


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def write_to_cache(
    layers: dict[str, gpd.GeoDataFrame], cache, *, scale: float | None = None, seed: int | None = None
):
    """Store every layer in ``cache`` (a :class:`datasets.cache.LayerCache`), return its manifest."""
    source = {"type": "synthetic", "scale": scale, "seed": seed}
    for dataset, frame in layers.items():
        cache.write(dataset, frame, source=dict(source))
    return cache.manifest()


MARKER = "synth.json"
#: Part of the bench cache's folder name: bump it whenever the generator's output changes, so a
#: benchmark never measures layers made by an older generator.
GENERATOR_VERSION = 2


def bench_cache_dir(scale: float, seed: int) -> Path:
    """The folder holding the cached layers for (scale, seed) under ``.redline-bench/``."""
    return BENCH_DIR / f"layers-v{GENERATOR_VERSION}-s{scale_tag(scale)}-seed{seed}"


def cached_layers(scale: float, seed: int = 42) -> Path:
    """A LayerCache folder holding the layers for (scale, seed), generated on first use.

    Generation writes into a temporary folder and renames it into place, with ``synth.json``
    written last, so an interrupted run never leaves a folder that looks complete.
    """
    from datasets.cache import LayerCache

    target = bench_cache_dir(scale, seed)
    if (target / MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    log(f"generating synthetic layers scale={scale:g} seed={seed}")
    layers = generate(scale, seed)
    generated = time.perf_counter() - started
    log(f"generated {sum(len(f) for f in layers.values()):,} features in {generated:.1f} s; writing cache")
    write_to_cache(layers, LayerCache(tmp), scale=scale, seed=seed)
    info = {
        "scale": scale,
        "seed": seed,
        "features": {k: len(v) for k, v in layers.items()},
        "generate_s": round(generated, 2),
        "total_s": round(time.perf_counter() - started, 2),
    }
    (tmp / MARKER).write_text(json.dumps(info, indent=1))
    if target.exists():  # a stale, incomplete folder from an older run
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("benchmarks.synth", __doc__)
    parser.add_argument("--out", type=Path, required=True, help="cache folder to fill (a LayerCache root)")
    args = parser.parse_args(argv)
    from datasets.cache import LayerCache

    started = time.perf_counter()
    layers = generate(args.scale, args.seed)
    generated = time.perf_counter() - started
    write_to_cache(layers, LayerCache(args.out), scale=args.scale, seed=args.seed)
    emit(
        {
            "scale": args.scale,
            "seed": args.seed,
            "features": int(sum(len(f) for f in layers.values())),
            "vertices": int(
                sum(shapely.get_num_coordinates(f.geometry.values).sum() for f in layers.values())
            ),
            "generate_s": round(generated, 2),
            "total_s": round(time.perf_counter() - started, 2),
            "out": str(args.out),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
