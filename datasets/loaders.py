"""Loading a council's own GIS files into platform-shaped frames.

Reads GeoJSON, GeoPackage, Shapefile (plain or zipped), FlatGeobuf and the platform's flattened CSV
(WKT in ``geometry``, falling back to ``point``) through pyogrio. Any CRS is reprojected to EPSG:4326;
British National Grid input goes through OSTN15, not pyproj's 3 m Helmert fallback.

Usage::

    report = read_layer_file("ca.gpkg", "conservation-area")
    report.loaded, report.repaired, report.skipped
    # (36, 10, [])
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS
from tqdm import tqdm

from .cache import BASE_COLUMNS, sha256_file
from .crs import GB_LAT, GB_LON, bng_to_lonlat

# Platform entity numbers are far below 2^52; local ids live in [2^52, 2^53), so they stay exact in
# JavaScript numbers (PlanX, the widget) as well as in int64 columns.
LOCAL_ID_BASE = 1 << 52
MAX_ROWS_NAMED = 20


class LoadError(ValueError):
    """A file cannot be loaded at all; the message says why and what to do."""


@dataclass
class LoadReport:
    dataset: str
    frame: gpd.GeoDataFrame
    source: dict
    repaired: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def loaded(self) -> int:
        return len(self.frame)

    @property
    def bounds(self) -> list[float] | None:
        return [float(v) for v in self.frame.total_bounds] if len(self.frame) else None

    def summary(self) -> str:
        lines = [
            f"{self.dataset}: loaded {self.loaded}, repaired {self.repaired}, skipped {len(self.skipped)}"
            f" in {self.seconds:.2f} s",
        ]
        if self.bounds:
            lines.append("bounds (lon/lat): " + ", ".join(f"{v:.5f}" for v in self.bounds))
        for row, reason in self.skipped[:MAX_ROWS_NAMED]:
            lines.append(f"  skipped row {row}: {reason}")
        if len(self.skipped) > MAX_ROWS_NAMED:
            lines.append(f"  ... and {len(self.skipped) - MAX_ROWS_NAMED} more skipped rows")
        return "\n".join(lines)


def kebab(name: str) -> str:
    """``listed_building_grade`` and ``ListedBuildingGrade`` both become ``listed-building-grade``."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name.strip())
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def local_entity_ids(dataset: str, keys: list[str]) -> np.ndarray:
    """Stable ids for features that have none: the same file loaded twice gets the same ids."""
    seen: dict[str, int] = {}
    ids = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        digest = hashlib.blake2b(f"{dataset}\0{key}\0{occurrence}".encode(), digest_size=8).digest()
        ids[i] = LOCAL_ID_BASE | (int.from_bytes(digest, "big") & (LOCAL_ID_BASE - 1))
    return ids


def _read_csv(path: Path) -> gpd.GeoDataFrame:
    text = path.read_text(encoding="utf-8-sig")
    try:
        dialect = csv.Sniffer().sniff(text[:20000], delimiters=",|;\t")
        sep = dialect.delimiter
    except csv.Error:
        sep = ","
    csv.field_size_limit(sys.maxsize)
    table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, engine="python")
    table.columns = [kebab(c) for c in table.columns]
    wkt = table["geometry"] if "geometry" in table.columns else pd.Series([""] * len(table))
    if "point" in table.columns:
        wkt = wkt.where(wkt.str.strip() != "", table["point"])
    if "geometry" not in table.columns and "point" not in table.columns:
        raise LoadError(f"{path.name}: a CSV needs a 'geometry' or 'point' column of WKT")
    values = wkt.fillna("").str.strip().replace("", None)
    geometry = shapely.from_wkt(values.to_numpy(), on_invalid="ignore")
    table = table.drop(columns=[c for c in ("geometry", "point") if c in table.columns])
    return gpd.GeoDataFrame(table, geometry=geometry, crs=4326)


def read_frame(path: Path, layer: str | None) -> gpd.GeoDataFrame:
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    target = f"/vsizip/{path}" if path.suffix.lower() == ".zip" else str(path)
    try:
        if layer is None:
            layers = pyogrio.list_layers(target)
            if len(layers) > 1:
                names = ", ".join(str(name) for name, _ in layers)
                raise LoadError(f"{path.name} has {len(layers)} layers ({names}); choose one with --layer")
        frame = pyogrio.read_dataframe(target, layer=layer)
    except LoadError:
        raise
    except Exception as err:  # pyogrio raises a family of DataSource/DataLayer errors
        raise LoadError(f"{path.name} could not be read as a GIS file: {err}") from None
    frame.columns = [c if c == frame.geometry.name else kebab(c) for c in frame.columns]
    return frame


def frame_to_wgs84(frame: gpd.GeoDataFrame, crs: str | int | None, path: Path) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """The frame in EPSG:4326, and a mask of the rows whose coordinates fall off the OSTN15 grid."""
    off_grid = np.zeros(len(frame), dtype=bool)
    declared = CRS.from_user_input(crs) if crs is not None else frame.crs
    if declared is None:
        raise LoadError(
            f"{path.name} does not say which coordinate system it uses; "
            "give it with --crs (27700 for British National Grid, 4326 for lon/lat)"
        )
    frame = frame.set_crs(declared, allow_override=True)
    epsg = declared.to_epsg()
    if epsg == 4326 or declared.equals(CRS.from_epsg(4326), ignore_axis_order=True):
        return frame.set_crs(4326, allow_override=True), off_grid
    if epsg == 27700:
        # One vectorised OSTN15 pass; a row off the grid comes back NaN and is skipped by the caller
        # (named by row number), rather than one stray feature refusing the whole file.
        geometry = frame.geometry.to_numpy()
        ok = ~shapely.is_missing(geometry)
        out = np.array(geometry, dtype=object)
        rows = np.flatnonzero(ok)
        coords, index = shapely.get_coordinates(geometry[ok], return_index=True)
        lon, lat = bng_to_lonlat(coords[:, 0], coords[:, 1])
        finite_in = np.isfinite(coords).all(axis=1)
        off_grid[rows[np.unique(index[finite_in & ~(np.isfinite(lon) & np.isfinite(lat))])]] = True
        # rows with NaN or infinite input stay as read, for the caller's finite-number check to name
        convert = ok & ~off_grid
        convert[rows[np.unique(index[~finite_in])]] = False
        out[convert] = shapely.transform(
            geometry[convert], lambda xy: np.column_stack(bng_to_lonlat(xy[:, 0], xy[:, 1]))
        )
        out[off_grid] = None
        return gpd.GeoDataFrame(frame.drop(columns=frame.geometry.name), geometry=out, crs=4326), off_grid
    return frame.to_crs(4326), off_grid


def read_layer_file(
    path: Path | str,
    dataset: str,
    *,
    layer: str | None = None,
    id_field: str | None = None,
    name_field: str | None = None,
    reference_field: str | None = None,
    organisation: str | None = None,
    crs: str | int | None = None,
) -> LoadReport:
    """Read one GIS file into a platform-shaped frame, repairing what can be repaired.

    Raises
    ------
    LoadError
        When the file cannot be read, has no CRS, or lies outside Great Britain. Individual bad rows
        are skipped and reported instead.
    """
    started = time.perf_counter()
    path = Path(path)
    if not path.exists():
        raise LoadError(f"{path} does not exist")
    frame = read_frame(path, layer)
    frame, off_grid = frame_to_wgs84(frame, crs, path)
    frame = frame.rename_geometry("geometry") if frame.geometry.name != "geometry" else frame
    frame = frame.reset_index(drop=True)
    rows = np.arange(1, len(frame) + 1)  # row numbers as a person counts them in the file

    for option, column in (("--id-field", id_field), ("--name-field", name_field), ("--reference-field", reference_field)):
        if column and kebab(column) not in frame.columns:
            raise LoadError(f"{option} {column!r} is not a column of {path.name}; columns: {', '.join(frame.columns)}")

    skipped: list[tuple[int, str]] = []
    geometry = np.array(frame.geometry.to_numpy(), dtype=object)
    keep = np.ones(len(frame), dtype=bool)
    missing = (shapely.is_missing(geometry) | shapely.is_empty(geometry)) & ~off_grid
    for i in np.flatnonzero(missing):
        skipped.append((int(rows[i]), "empty or unreadable geometry"))
    keep &= ~missing & ~off_grid

    geometry[keep] = shapely.force_2d(geometry[keep])
    finite = np.ones(len(frame), dtype=bool)
    finite[keep] = [np.isfinite(shapely.get_coordinates(g)).all() for g in geometry[keep]]
    for i in np.flatnonzero(keep & ~finite):
        skipped.append((int(rows[i]), "coordinates are not finite numbers"))
    keep &= finite

    bounds = np.full((len(frame), 4), np.nan)
    bounds[keep] = shapely.bounds(geometry[keep])
    outside = off_grid | (keep & ~(
        (bounds[:, 0] >= GB_LON[0]) & (bounds[:, 2] <= GB_LON[1]) & (bounds[:, 1] >= GB_LAT[0]) & (bounds[:, 3] <= GB_LAT[1])
    ))
    if outside.any() and not (keep & ~outside).any():
        named = ", ".join(str(r) for r in rows[outside][:MAX_ROWS_NAMED])
        raise LoadError(
            f"{path.name}: no feature lies in Great Britain (rows {named}{'...' if outside.sum() > MAX_ROWS_NAMED else ''}); "
            "are longitude and latitude swapped, or is the coordinate system wrong? (--crs)"
        )
    for i in np.flatnonzero(outside):
        skipped.append((int(rows[i]), "coordinates cannot lie in Great Britain"))
    keep &= ~outside

    repaired = 0
    invalid = keep.copy()
    invalid[keep] = ~shapely.is_valid(geometry[keep])
    with tqdm(total=int(invalid.sum()), desc="repairing", unit="feature", delay=1.0, disable=not sys.stderr.isatty()) as bar:
        for i in np.flatnonzero(invalid):
            fixed = _repair(geometry[i])
            bar.update(1)
            if fixed is None:
                skipped.append((int(rows[i]), "invalid geometry that cannot be repaired"))
                keep[i] = False
            else:
                geometry[i] = fixed
                repaired += 1

    out = frame.drop(columns="geometry")
    out = gpd.GeoDataFrame(out, geometry=geometry, crs=4326)
    out["source-row"] = rows.astype(str)
    out = out[keep].reset_index(drop=True)

    if id_field:
        ids = pd.to_numeric(out[kebab(id_field)], errors="coerce")
        if ids.isna().any() or ids.duplicated().any():
            raise LoadError(f"--id-field {id_field!r} must hold a unique whole number on every row")
        out["entity"] = ids.astype("int64")
    elif "entity" in out.columns and pd.to_numeric(out["entity"], errors="coerce").notna().all() and len(out):
        out["entity"] = pd.to_numeric(out["entity"]).astype("int64")
    else:
        ref_column = kebab(reference_field) if reference_field else ("reference" if "reference" in out.columns else None)
        keys = (
            out[ref_column].astype(str).tolist()
            if ref_column and (out[ref_column].astype(str) != "").all()
            else [g.wkb_hex for g in out.geometry]
        )
        out["entity"] = local_entity_ids(dataset, keys)
    if name_field:
        out["name"] = out[kebab(name_field)].astype(str)
    if reference_field:
        out["reference"] = out[kebab(reference_field)].astype(str)
    if organisation:
        out["organisation-entity"] = str(organisation)
    out["dataset"] = dataset
    for column in BASE_COLUMNS:
        if column not in out.columns:
            out[column] = ""
    skipped.sort()
    source = {"type": "local", "path": str(path.resolve()), "sha256": sha256_file(path)}
    return LoadReport(dataset, out, source, repaired, skipped, time.perf_counter() - started)


def _repair(geom):
    """``make_valid`` keeping the polygonal part for areas (points and lines stay as they are)."""
    fixed = shapely.make_valid(geom)
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        fixed = polygonal_part(fixed)
    if fixed is None or fixed.is_empty or not fixed.is_valid:
        return None
    return fixed


def polygonal_part(geom):
    """The polygons of a geometry (collections from ``make_valid`` can hold stray lines and points)."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    if geom.geom_type == "GeometryCollection":
        parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
        polys = [p for g in parts for p in shapely.get_parts(g)]
        if not polys:
            return None
        return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
    return None
