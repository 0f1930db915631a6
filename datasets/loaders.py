"""Loading a council's own GIS files into platform-shaped frames.

Reads GeoJSON, GeoPackage, Shapefile (plain or zipped, with its .cpg encoding), FlatGeobuf through
pyogrio, and CSV as councils export it: WKT under any of ``WKT_COLUMNS`` (the platform's ``geometry``
falling back to ``point``), or coordinate pairs; UTF-8 with or without a BOM, UTF-16 or Windows-1252.
A bad row (empty or broken cell, geometry GEOS refuses, off the grid) is skipped and named, never fatal. Any CRS is reprojected to EPSG:4326;
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
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS

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
    notes: list[str] = field(default_factory=list)  # how the file was read, when not the obvious way

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
        lines += [f"note: {note}" for note in self.notes]
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


# Column names (after ``kebab``) that councils' CSV exports use for WKT, in the order they are tried.
WKT_COLUMNS = ("geometry", "wkt", "geom", "the-geom", "shape")
# Coordinate pairs (x column, y column, EPSG) for tables of points.
COORDINATE_PAIRS = (
    ("longitude", "latitude", 4326),
    ("lon", "lat", 4326),
    ("lng", "lat", 4326),
    ("long", "lat", 4326),
    ("easting", "northing", 27700),
    ("x", "y", None),  # x/y say nothing about the coordinate system: --crs, or the file is refused
)
MISSING_GEOMETRY = "the geometry is empty or missing"
BAD_LINE = "\x00redline:bad-line"  # stands in for the cells of a CSV line that cannot be split into the columns
OFF_GRID = "coordinates lie outside Great Britain (OSTN15 grid): is the coordinate system right?"


@dataclass
class FileRows:
    """A file's rows as read, and why each row that cannot be used cannot.

    ``problems`` holds one entry per row of ``frame``: None for a usable row, else the reason, in
    words a person can act on. ``notes`` say how the file was read when that was not the obvious way.
    """

    frame: gpd.GeoDataFrame
    problems: np.ndarray
    notes: list[str] = field(default_factory=list)


def _decode(data: bytes) -> tuple[str, str | None]:
    """The text of a CSV and, when it was not UTF-8, the encoding it was read in.

    Excel writes UTF-8 with a byte-order mark, "Unicode text" as UTF-16, and older council systems
    Windows-1252 (the pound sign, curly quotes, accented street names).
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "UTF-16"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        # cp1252 leaves five bytes undefined; a stray one becomes U+FFFD rather than ending the load
        return data.decode("cp1252", errors="replace"), "Windows-1252"


def _cells(table: pd.DataFrame, column: str) -> np.ndarray:
    """A column's cells as stripped str, "" for an empty cell (whatever pandas calls missing)."""
    return np.array(["" if not isinstance(v, str) else v.strip() for v in table[column].tolist()], dtype=object)


def _wkt_geometry(cells: np.ndarray, column: str, problems: np.ndarray) -> np.ndarray:
    """Parse WKT cells; a cell that is not WKT leaves None and its reason in ``problems``."""
    filled = cells != ""
    geometry = np.full(len(cells), None, dtype=object)
    geometry[filled] = shapely.from_wkt(cells[filled], on_invalid="ignore")
    for i in np.flatnonzero(filled & shapely.is_missing(geometry)):
        try:
            shapely.from_wkt(cells[i])
        except shapely.errors.GEOSException as err:
            reason = str(err).removeprefix("ParseException: ")
        else:  # pragma: no cover - GEOS refused it above but accepts it alone
            reason = "unreadable"
        problems[i] = f"the {column} cell is not WKT ({reason}): {cells[i][:60]!r}"
    for i in np.flatnonzero(~filled):
        problems[i] = problems[i] or f"the {column} cell is empty"
    return geometry


def _pair_geometry(table: pd.DataFrame, x: str, y: str, problems: np.ndarray) -> np.ndarray:
    coords = {}
    for column in (x, y):
        cells = _cells(table, column)
        values = pd.to_numeric(pd.Series(cells).replace("", None), errors="coerce").to_numpy(dtype=float)
        for i in np.flatnonzero(np.isnan(values)):
            if problems[i] is None:
                problems[i] = f"the {column} cell is empty" if cells[i] == "" else f"the {column} {cells[i][:30]!r} is not a number"
        coords[column] = values
    ok = np.array([p is None for p in problems], dtype=bool)
    geometry = np.full(len(table), None, dtype=object)
    geometry[ok] = shapely.points(coords[x][ok], coords[y][ok])
    return geometry


def _read_csv(path: Path) -> FileRows:
    text, encoding = _decode(path.read_bytes())
    try:
        dialect = csv.Sniffer().sniff(text[:20000], delimiters=",|;\t")
        sep = dialect.delimiter
    except csv.Error:
        sep = ","
    csv.field_size_limit(sys.maxsize)
    long_lines: list[int] = []  # fields on each line with more than the header, in order

    def too_long(fields: list[str]) -> list[str]:
        # keep the line's place (so later rows keep their numbers), marked, and name it below
        long_lines.append(len(fields))
        return [BAD_LINE] * width

    try:
        width = len(next(csv.reader(io.StringIO(text), delimiter=sep), []))
        table = pd.read_csv(
            io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, engine="python", on_bad_lines=too_long
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as err:
        raise LoadError(f"{path.name} could not be read as CSV: {err}") from None
    table.columns = [kebab(str(c)) for c in table.columns]
    notes = [f"read as {encoding} text (not UTF-8)"] if encoding else []
    problems = np.full(len(table), None, dtype=object)
    if long_lines and len(table.columns):
        marked = np.flatnonzero(table.iloc[:, 0].to_numpy() == BAD_LINE)
        for i, fields in zip(marked, long_lines, strict=False):
            problems[i] = f"the line has {fields} fields where the header has {len(table.columns)} (a comma in an unquoted cell?)"
        table.iloc[marked] = ""
    crs: int | None = 4326
    wkt = next((c for c in WKT_COLUMNS if c in table.columns), None)
    pair = next(((x, y, epsg) for x, y, epsg in COORDINATE_PAIRS if x in table.columns and y in table.columns), None)
    if wkt is not None:
        cells = _cells(table, wkt)
        if "point" in table.columns:  # the platform's CSVs: a row without its outline has its point
            cells = np.where(cells == "", _cells(table, "point"), cells)
        geometry = _wkt_geometry(cells, wkt, problems)
        used = [wkt, "point"]
    elif "point" in table.columns:
        geometry = _wkt_geometry(_cells(table, "point"), "point", problems)
        used = ["point"]
    elif pair is not None:
        x, y, crs = pair
        geometry = _pair_geometry(table, x, y, problems)
        used = []  # the coordinates stay as columns: councils look them up
        notes.append(f"points from the {x} and {y} columns")
    else:
        names = ", ".join(repr(c) for c in WKT_COLUMNS + ("point",))
        raise LoadError(
            f"{path.name}: a CSV needs a column of WKT ({names}) or coordinate columns "
            "(longitude and latitude, or easting and northing); its columns are: " + ", ".join(table.columns)
        )
    table = table.drop(columns=[c for c in used if c in table.columns])
    return FileRows(gpd.GeoDataFrame(table, geometry=geometry, crs=crs), problems, notes)


def _zip_target(path: Path, layer: str | None) -> tuple[str, str | None]:
    """The GDAL path of a zipped Shapefile, wherever in the zip its .shp lies (a folder inside is
    usual); with several, ``layer`` names the one to read."""
    try:
        with zipfile.ZipFile(path) as zf:
            shapefiles = [
                n for n in zf.namelist() if n.lower().endswith(".shp") and not n.startswith("__MACOSX/")
            ]
    except zipfile.BadZipFile:
        raise LoadError(f"{path.name} is not a readable zip file") from None
    if len(shapefiles) == 1:
        return f"/vsizip/{path}/{shapefiles[0]}", None
    if layer is not None:
        chosen = [n for n in shapefiles if Path(n).stem == layer]
        if len(chosen) == 1:
            return f"/vsizip/{path}/{chosen[0]}", None
    if len(shapefiles) > 1:
        names = ", ".join(Path(n).stem for n in shapefiles)
        raise LoadError(f"{path.name} holds {len(shapefiles)} shapefiles ({names}); choose one with --layer")
    return f"/vsizip/{path}", layer  # no .shp: a zipped GeoPackage, GeoJSON or FlatGeobuf


def _read_tolerantly(target: str, layer: str | None) -> FileRows:
    """Read with GDAL, turning a geometry that GEOS refuses (a ring of two points, an unclosed ring)
    into a skipped row instead of a failed file."""
    try:
        frame = pyogrio.read_dataframe(target, layer=layer)
        return FileRows(frame, np.full(len(frame), None, dtype=object))
    except shapely.errors.GEOSException:
        pass
    frame = pyogrio.read_dataframe(target, layer=layer, read_geometry=False)
    info, _, wkb, _ = pyogrio.raw.read(target, layer=layer, columns=[])
    geometry = shapely.from_wkb(wkb, on_invalid="ignore")
    problems = np.full(len(frame), None, dtype=object)
    for i in np.flatnonzero(shapely.is_missing(geometry) & np.array([w is not None for w in wkb], dtype=bool)):
        try:
            shapely.from_wkb(wkb[i])
        except shapely.errors.GEOSException as err:
            problems[i] = "the geometry cannot be read: " + str(err).split(": ", 1)[-1]
    return FileRows(gpd.GeoDataFrame(frame, geometry=geometry, crs=info["crs"]), problems)


def read_frame(path: Path, layer: str | None) -> FileRows:
    """The rows of a GIS file or CSV as read (in the file's own coordinate system)."""
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        try:
            frame = gpd.read_parquet(path)
        except Exception as err:  # pyarrow and geopandas raise several kinds for a file that is not GeoParquet
            raise LoadError(f"{path.name} could not be read as GeoParquet: {err}") from None
        return FileRows(frame, np.full(len(frame), None, dtype=object))
    target = str(path)
    if path.suffix.lower() == ".zip":
        target, layer = _zip_target(path, layer)
    try:
        if layer is None:
            layers = pyogrio.list_layers(target)
            if len(layers) > 1:
                names = ", ".join(str(name) for name, _ in layers)
                raise LoadError(f"{path.name} has {len(layers)} layers ({names}); choose one with --layer")
        with warnings.catch_warnings():
            # GDAL's notes on each odd feature ("non closed ring detected") would bury the report
            warnings.simplefilter("ignore", RuntimeWarning)
            rows = _read_tolerantly(target, layer)
    except LoadError:
        raise
    except Exception as err:  # pyogrio raises a family of DataSource/DataLayer errors
        raise LoadError(f"{path.name} could not be read as a GIS file: {err}") from None
    frame = rows.frame
    frame.columns = [c if c == frame.geometry.name else kebab(c) for c in frame.columns]
    return rows


def read_rows(path: Path | str, layer: str | None = None, crs: str | int | None = None) -> FileRows:
    """Read a file's rows into EPSG:4326, with the reason each unusable row cannot be used.

    The one reader behind ``datasets load`` and ``batch``: a row whose cell is empty or not WKT,
    whose geometry is empty, or whose grid coordinates fall off OSTN15 is named here, so both report
    the same row with the same words. Geometry is in a column named ``geometry``; rows keep their
    order (row ``i`` of the frame is row ``i + 1`` of the file).

    Raises
    ------
    LoadError
        When the file as a whole cannot be read or converted (missing, not GIS, no CRS, unknown --crs).
    """
    path = Path(path)
    if not path.exists():
        raise LoadError(f"{path} does not exist")
    rows = read_frame(path, layer)
    try:
        frame, off_grid = frame_to_wgs84(rows.frame, crs, path)
    except LoadError:
        raise
    except Exception as err:  # pyproj: an unknown --crs, or a .prj it cannot use
        raise LoadError(f"{path.name}: cannot convert to longitude/latitude: {err}") from None
    frame = frame.rename_geometry("geometry") if frame.geometry.name != "geometry" else frame
    frame = frame.reset_index(drop=True)
    problems = rows.problems.copy()
    geometry = frame.geometry.to_numpy()
    missing = shapely.is_missing(geometry) | shapely.is_empty(geometry)
    for i in np.flatnonzero(off_grid & (problems == None)):  # noqa: E711 - elementwise on an object array
        problems[i] = OFF_GRID
    for i in np.flatnonzero(missing & (problems == None)):  # noqa: E711
        problems[i] = MISSING_GEOMETRY
    return FileRows(frame, problems, rows.notes)


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
    stage: Callable[[str], None] | None = None,
) -> LoadReport:
    """Read one GIS file into a platform-shaped frame, repairing what can be repaired.

    ``stage`` is told the name of each step as it starts ("reading", "checking", "repairing",
    "numbering"), for a progress bar.

    Raises
    ------
    LoadError
        When the file cannot be read, has no CRS, or lies outside Great Britain. Individual bad rows
        are skipped and reported instead.
    """
    started = time.perf_counter()
    stage = stage or (lambda name: None)
    path = Path(path)
    stage("reading")
    read = read_rows(path, layer, crs)
    stage("checking")
    frame = read.frame
    rows = np.arange(1, len(frame) + 1)  # row numbers as a person counts them in the file

    for option, column in (("--id-field", id_field), ("--name-field", name_field), ("--reference-field", reference_field)):
        if column and kebab(column) not in frame.columns:
            raise LoadError(f"{option} {column!r} is not a column of {path.name}; columns: {', '.join(frame.columns)}")

    skipped: list[tuple[int, str]] = []
    geometry = np.array(frame.geometry.to_numpy(), dtype=object)
    off_grid = read.problems == OFF_GRID
    keep = read.problems == None  # noqa: E711 - elementwise on an object array
    for i in np.flatnonzero(~keep):
        skipped.append((int(rows[i]), str(read.problems[i])))

    geometry[keep] = shapely.force_2d(geometry[keep])
    finite = np.ones(len(frame), dtype=bool)
    coords, owner = shapely.get_coordinates(geometry[keep], return_index=True)
    finite[np.flatnonzero(keep)[np.unique(owner[~np.isfinite(coords).all(axis=1)])]] = False
    for i in np.flatnonzero(keep & ~finite):
        skipped.append((int(rows[i]), "coordinates are not finite numbers"))
    keep &= finite

    bounds = np.full((len(frame), 4), np.nan)
    bounds[keep] = shapely.bounds(geometry[keep])
    outside = keep & ~(
        (bounds[:, 0] >= GB_LON[0]) & (bounds[:, 2] <= GB_LON[1]) & (bounds[:, 1] >= GB_LAT[0]) & (bounds[:, 3] <= GB_LAT[1])
    )
    if (outside | off_grid).any() and not (keep & ~outside).any():
        named = ", ".join(str(r) for r in rows[outside | off_grid][:MAX_ROWS_NAMED])
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
    stage("repairing")
    for i in np.flatnonzero(invalid):
        fixed = _repair(geometry[i])
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

    stage("numbering")
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
    return LoadReport(dataset, out, source, repaired, skipped, time.perf_counter() - started, read.notes)


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
