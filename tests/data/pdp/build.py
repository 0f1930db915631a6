"""Rebuild the fake platform's bulk files from a folder of the real extracts (see tests/data/real/SOURCES.md for their sources).

The committed files in this folder are the output; this script only documents (and can repeat)
how they were made. Run from the repository root::

    .venv/bin/python tests/data/pdp/build.py FOLDER_OF_REAL_EXTRACTS

Every value comes from a real Planning Data Platform answer; only the layout changes (the platform's
current bulk-file layout: kebab-case columns, WKT ``geometry`` and ``point``, one file per dataset).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
BASE = ["dataset", "end-date", "entity", "entry-date", "geometry", "name", "organisation-entity", "point"]
BASE += ["prefix", "reference", "start-date", "typology"]

# Which formats the fake platform publishes per dataset: this exercises parquet first, the fallback to
# GeoJSON when the parquet file is missing (404), and the fallback to CSV when both are missing.
FORMATS = {
    "listed-building-outline": ["parquet", "csv"],
    "tree": ["parquet"],
    "area-of-outstanding-natural-beauty": ["geojson"],
    "article-4-direction-area": ["geojson"],
    "conservation-area": ["csv"],
    "green-belt": ["csv"],
}


def kebab(name: str) -> str:
    return name.replace("_", "-")


def rows_from_flattened(path: Path, delimiter: str = ",") -> list[dict]:
    csv.field_size_limit(1 << 30)
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh, delimiter=delimiter):
            row = {kebab(k): (v or "") for k, v in raw.items() if k not in {"geojson", "quality"}}
            extra = row.pop("json", "")
            if extra and extra.strip('"'):
                row.update({kebab(k): str(v) for k, v in json.loads(extra).items()})
            rows.append(row)
    return rows


def row_from_entity_json(path: Path) -> dict:
    obj = json.loads(path.read_text())
    return {k: ("" if v is None else str(v)) for k, v in obj.items()}


def columns_for(rows: list[dict]) -> list[str]:
    extra = sorted({k for r in rows for k in r} - set(BASE))
    return BASE + extra


def write_parquet(path: Path, rows: list[dict], columns: list[str]) -> None:
    # The platform's parquet is flattened like its CSV: strings, WKT geometry, entity as an integer.
    data = {c: [r.get(c, "") for r in rows] for c in columns}
    data["entity"] = [int(v) for v in data["entity"]]
    pq.write_table(pa.table(data), path, compression="zstd")


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in columns})


def write_geojson(path: Path, rows: list[dict], columns: list[str]) -> None:
    from shapely import from_wkt
    from shapely.geometry import mapping

    features = []
    for r in rows:
        wkt = r.get("geometry") or r.get("point")
        geom = mapping(from_wkt(wkt)) if wkt else None
        props = {c: r.get(c, "") for c in columns if c not in {"geometry"}}
        props["entity"] = int(props["entity"])
        features.append({"type": "Feature", "properties": props, "geometry": geom})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":")))


def metadata(real: Path, datasets: dict[str, list[dict]]) -> None:
    """/dataset/{name}.json answers: the real ones from the PlanX mock, else from the specification."""
    mock = json.loads((real / "planx-new__digitalLandResponseMock.json").read_text())["metadata"]
    by_name = {m["dataset"]: m for m in mock.values()}
    spec = {
        r["dataset"]: r for r in csv.DictReader(open(real / "specification__dataset.csv", encoding="utf-8"))
    }
    out = HERE / "metadata"
    out.mkdir(exist_ok=True)
    for i, (name, rows) in enumerate(sorted(datasets.items())):
        if name in by_name:
            meta = dict(by_name[name])
        else:
            s = spec[name]
            meta = {k: s.get(k, "") for k in ("dataset", "name", "plural", "typology", "prefix", "licence")}
            meta |= {
                "attribution": s["attribution"],
                "collection": s["collection"],
                "entry-date": s["entry-date"],
            }
        # entity-count is rewritten to the size of the bundled file so the fake platform is self-consistent;
        # both real shapes are kept (an integer, or {dataset, count}) because clients must read both.
        meta["entity-count"] = len(rows) if i % 2 else {"dataset": name, "count": len(rows)}
        (out / f"{name}.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")


def main(real: Path) -> None:
    all_rows: list[dict] = []
    all_rows += rows_from_flattened(real / "digital-land-python__listed-building-outline-flattened.csv")
    all_rows += rows_from_flattened(real / "digital-land.info__entities.csv", delimiter="|")
    all_rows += rows_from_flattened(real / "digital-land.info__invalid_geometry.csv")
    for f in ("bops__1000005.json", "bops__7010002192.json"):
        all_rows.append(row_from_entity_json(real / f))
    datasets: dict[str, list[dict]] = {}
    for r in all_rows:
        if r["dataset"] in FORMATS and int(r["entity"]) > 100:  # entities 1-5 are synthetic test rows
            r.setdefault("prefix", r["dataset"])
            r["prefix"] = r["prefix"] or r["dataset"]
            r["typology"] = r.get("typology") or "geography"
            datasets.setdefault(r["dataset"], []).append(r)
    files = HERE / "files"
    files.mkdir(exist_ok=True)
    for name, rows in sorted(datasets.items()):
        rows.sort(key=lambda r: int(r["entity"]))
        cols = columns_for(rows)
        for fmt in FORMATS[name]:
            {"parquet": write_parquet, "csv": write_csv, "geojson": write_geojson}[fmt](
                files / f"{name}.{fmt}", rows, cols
            )
        print(name, len(rows), FORMATS[name])
    metadata(real, datasets)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: tests/data/pdp/build.py FOLDER_OF_REAL_EXTRACTS")
    main(Path(sys.argv[1]))
