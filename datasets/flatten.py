"""Reading the platform's bulk files (flattened parquet, GeoJSON, CSV) into platform-column frames.

The platform publishes each dataset as one file per format. All three carry the same flattened fields:
``dataset, end-date, entity, entry-date, geometry (WKT), name, organisation-entity, point (WKT), prefix,
reference, start-date, typology`` and then the dataset's own fields. Older files use snake_case headers.

The reader is strict about the file and lenient about rows: a file that does not parse as a whole
(truncated, empty, not the format it claims) raises :class:`PlatformFileError`, so a broken download
never replaces a good copy; a row with a bad or missing geometry is skipped and counted, as the
platform's own pipeline does.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from .cache import BASE_COLUMNS
from .crs import GB_LAT, GB_LON
from .loaders import kebab, polygonal_part

DROPPED = ("geometry", "point", "geojson")  # geometry columns; geojson is an old, unused duplicate


class PlatformFileError(ValueError):
    """A bulk file that cannot be read as a whole: truncated, empty, or not what it claims to be."""


@dataclass
class FlattenReport:
    frame: gpd.GeoDataFrame  # platform columns, EPSG:4326, one row per usable entity
    rows: int  # rows in the file
    no_geometry: int  # rows without geometry or point (skipped)
    bad_geometry: int  # unparseable WKT, or coordinates that cannot lie in Great Britain (skipped)
    repaired: int  # invalid geometries made valid

    def summary(self) -> str:
        return (
            f"{len(self.frame)} features from {self.rows} rows "
            f"({self.repaired} repaired, {self.no_geometry} without geometry, {self.bad_geometry} bad geometry)"
        )


def _from_parquet(path: Path) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise PlatformFileError(f"not a readable parquet file ({exc})") from None
    frame = table.to_pandas()
    # GeoParquet (a ``geo`` key in the schema metadata) or the flattened layout; geometry as WKB or WKT.
    for column in ("geometry", "point"):
        if column in frame.columns and frame[column].map(lambda v: isinstance(v, bytes | bytearray)).any():
            frame[column] = shapely.to_wkt(shapely.from_wkb(frame[column].to_numpy(), on_invalid="ignore"))
    return frame


def _from_geojson(path: Path) -> pd.DataFrame:
    try:
        with open(path, "rb") as fh:
            obj = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlatformFileError(f"not valid GeoJSON ({exc})") from None
    if (
        not isinstance(obj, dict)
        or obj.get("type") != "FeatureCollection"
        or not isinstance(obj.get("features"), list)
    ):
        raise PlatformFileError("not a GeoJSON FeatureCollection")
    rows = []
    for feat in obj["features"]:
        props = dict(feat.get("properties") or {})
        geom = feat.get("geometry")
        try:
            props["geometry"] = shapely.geometry.shape(geom).wkt if geom else ""
        except (ValueError, TypeError, AttributeError, shapely.errors.GEOSException):
            props["geometry"] = "\x00bad"
        rows.append(props)
    return pd.DataFrame(rows)


def _from_csv(path: Path) -> pd.DataFrame:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 1))
        last = fh.read(1)
    # Every platform CSV ends with a line break; a file cut anywhere else is a truncated download,
    # even when the cut happens to fall between fields and the rest would parse.
    if size and last not in (b"\n", b"\r"):
        raise PlatformFileError("the CSV does not end with a line break: the file is truncated")
    csv.field_size_limit(sys.maxsize)
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PlatformFileError(f"not a readable CSV ({exc})") from None


READERS = {"parquet": _from_parquet, "geojson": _from_geojson, "csv": _from_csv}


def _as_text(series: pd.Series) -> pd.Series:
    return series.astype(object).where(series.notna(), "").astype(str)


def read_platform_file(path: Path | str, dataset: str, fmt: str | None = None) -> FlattenReport:
    """Read one bulk file into a platform-column GeoDataFrame (EPSG:4326).

    Parameters
    ----------
    path
        The downloaded file.
    dataset
        The dataset it should hold; rows of other datasets are an error (the wrong file).
    fmt
        ``parquet``, ``geojson`` or ``csv``; guessed from the file name when omitted.

    Raises
    ------
    PlatformFileError
        When the file is empty, truncated, lacks the ``entity`` column or a geometry column, or holds
        another dataset.
    """
    path = Path(path)
    fmt = fmt or path.name.removesuffix(".part").rsplit(".", 1)[-1]
    if fmt not in READERS:
        raise PlatformFileError(f"unknown bulk format {fmt!r}")
    if path.stat().st_size == 0:
        raise PlatformFileError("the file is empty (0 bytes)")
    table = READERS[fmt](path)
    table.columns = [kebab(str(c)) for c in table.columns]
    if "entity" not in table.columns:
        raise PlatformFileError(f"no 'entity' column; columns: {', '.join(map(str, table.columns))[:300]}")
    if "geometry" not in table.columns and "point" not in table.columns:
        raise PlatformFileError("no 'geometry' or 'point' column")
    rows = len(table)
    entity = pd.to_numeric(table["entity"], errors="coerce")
    if entity.isna().any():
        first = int(np.flatnonzero(entity.isna().to_numpy())[0])
        raise PlatformFileError(f"row {first + 1} has no entity number ({table['entity'].iloc[first]!r})")
    if "dataset" in table.columns:
        other = set(_as_text(table["dataset"])) - {dataset, ""}
        if other:
            raise PlatformFileError(f"holds rows of {', '.join(sorted(other))}, not {dataset}")

    wkt = _as_text(table["geometry"]) if "geometry" in table.columns else pd.Series([""] * rows)
    if "point" in table.columns:
        wkt = wkt.where(wkt.str.strip() != "", _as_text(table["point"]))
    wkt = wkt.str.strip().to_numpy(dtype=object)
    present = wkt != ""
    geometry = np.full(rows, None, dtype=object)
    geometry[present] = shapely.from_wkt(wkt[present], on_invalid="ignore")
    parsed = present & ~shapely.is_missing(geometry)
    parsed[parsed] &= ~shapely.is_empty(geometry[parsed])
    bad = present & ~parsed

    geometry[parsed] = shapely.force_2d(geometry[parsed])
    b = np.full((rows, 4), np.nan)
    b[parsed] = shapely.bounds(geometry[parsed])
    inside = (b[:, 0] >= GB_LON[0]) & (b[:, 2] <= GB_LON[1]) & (b[:, 1] >= GB_LAT[0]) & (b[:, 3] <= GB_LAT[1])
    bad |= parsed & ~inside
    keep = parsed & inside

    repaired = 0
    invalid = keep.copy()
    invalid[keep] = ~shapely.is_valid(geometry[keep])
    for i in np.flatnonzero(invalid):
        fixed = shapely.make_valid(geometry[i])
        if geometry[i].geom_type in ("Polygon", "MultiPolygon"):
            fixed = polygonal_part(fixed)
        if fixed is None or fixed.is_empty:
            keep[i], bad[i] = False, True
        else:
            geometry[i] = fixed
            repaired += 1

    out = table.drop(columns=[c for c in DROPPED if c in table.columns])
    out["entity"] = entity.astype("int64")
    out["dataset"] = dataset
    for column in BASE_COLUMNS:
        if column not in out.columns:
            out[column] = ""
    extra = [c for c in out.columns if c not in BASE_COLUMNS]
    for column in BASE_COLUMNS[1:] + extra:
        out[column] = _as_text(out[column])
    frame = gpd.GeoDataFrame(out[BASE_COLUMNS + extra], geometry=geometry, crs=4326)
    frame = frame[keep].reset_index(drop=True)
    return FlattenReport(frame, rows, int((~present).sum()), int(bad.sum()), repaired)


def read_platform_bytes(body: bytes, dataset: str, fmt: str) -> FlattenReport:
    """:func:`read_platform_file` for bytes in memory (tests, small files)."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=f".{fmt}") as fh:
        fh.write(body)
        fh.flush()
        return read_platform_file(fh.name, dataset, fmt)


__all__ = ["FlattenReport", "PlatformFileError", "read_platform_file", "read_platform_bytes"]
