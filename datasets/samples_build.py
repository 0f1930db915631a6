"""Build the bundled sample layers from the real public extracts (run once by a maintainer).

``python -m datasets.samples_build FOLDER_OF_REAL_EXTRACTS`` writes ``datasets/data/samples/*.parquet``,
platform-shaped GeoParquet that ``redline datasets load-samples`` (and ``make run``) load into the cache.
Sources and licences: ``datasets/data/samples/ATTRIBUTION.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely

from .cache import normalise_frame
from .loaders import local_entity_ids, read_layer_file

OUT = Path(__file__).parent / "data" / "samples"

# (dataset, file, name column, reference column, grade column) for the Bath and North East Somerset extracts
BANES = [
    ("conservation-area", "banes_conservation_ar", "name", None),
    ("listed-building", "he_listed_buildings", "name", "listentry"),
    ("scheduled-monument", "he_scheduled_monuments", "name", "listentry"),
    ("area-of-outstanding-natural-beauty", "ne_aonb", "name", "code"),
    ("site-of-special-scientific-interest", "ne_sssi", "sssi-name", "ensisid"),
    ("special-area-of-conservation", "ne_special_areas_conservation", "sac-name", "sac-code"),
    ("special-protection-area", "ne_special_protection_areas", "spa-name", "spa-code"),
    ("ancient-woodland", "ne_ancient_woodland", "themname", "themid"),
    ("green-belt", "dclg_greenbelt_2013_14", "gb-name", "ons-code"),
]
NORTH_EAST = [
    "ancient-woodland",
    "area-of-outstanding-natural-beauty",
    "battlefield",
    "conservation-area",
    "national-park",
    "park-and-garden",
    "ramsar",
    "scheduled-monument",
    "site-of-special-scientific-interest",
    "special-area-of-conservation",
    "special-protection-area",
    "world-heritage-site-buffer-zone",
    "world-heritage-site",
]
TITLES = {name: name.replace("-", " ").capitalize() for name in NORTH_EAST}
BANES_ORG = None  # the extracts do not carry the platform's organisation entity number
KEEP_FIELDS = {"listed-building-grade", "documentation-url", "notes", "description"}


def _entity_rows(path: Path, delimiter: str, wanted: set[str]) -> gpd.GeoDataFrame:
    import csv

    csv.field_size_limit(sys.maxsize)
    table = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False)
    table.columns = [c.replace("_", "-") for c in table.columns]
    table = table[table["dataset"].isin(wanted) & (table["geometry"].str.strip() != "")]
    table = table[pd.to_numeric(table["entity"]) > 1000]  # entities 1-5 of the test file are made up
    geometry = shapely.from_wkt(table["geometry"].to_numpy())
    extra = [json.loads(j) if j.strip() else {} for j in table["json"]]
    frame = gpd.GeoDataFrame(table.drop(columns=["geometry", "point", "json"]), geometry=geometry, crs=4326)
    for i, fields in enumerate(extra):
        for key, value in fields.items():
            if key in KEEP_FIELDS:
                frame.loc[frame.index[i], key] = str(value)
    frame["entity"] = pd.to_numeric(frame["entity"]).astype("int64")
    return frame


def _platform_entity(path: Path) -> gpd.GeoDataFrame:
    raw = json.loads(path.read_text())
    geometry = shapely.from_wkt(raw.pop("geometry"))
    raw.pop("point", None)
    keep = {k: (str(v) if v is not None else "") for k, v in raw.items() if not isinstance(v, dict | list)}
    return gpd.GeoDataFrame([keep], geometry=[geometry], crs=4326)


def build(real: Path) -> dict[str, int]:
    frames: dict[str, list[gpd.GeoDataFrame]] = {}

    def add(dataset: str, frame: gpd.GeoDataFrame) -> None:
        frames.setdefault(dataset, []).append(frame)

    for dataset, stem, name_field, reference_field in BANES:
        report = read_layer_file(
            real / f"banes-geographic-data__{stem}.geojson",
            dataset,
            name_field=name_field,
            reference_field=reference_field,
            organisation=BANES_ORG,
        )
        frame = report.frame
        if dataset == "listed-building":
            frame["listed-building-grade"] = frame["grade"].astype(str)
            frame["documentation-url"] = "https://historicengland.org.uk/listing/the-list/list-entry/" + frame["reference"]
            frame["reference"] = frame["reference"].str.replace(r"\.0$", "", regex=True)
        if reference_field:
            frame["reference"] = frame["reference"].astype(str).str.replace(r"\.0$", "", regex=True)
        frame["source"] = "BathHacked/banes-geographic-data"
        print(f"BANES {report.summary()}")
        add(dataset, frame)

    for dataset in NORTH_EAST:
        report = read_layer_file(real / f"land-calculator__E12000001-{dataset}.geojson", dataset)
        frame = report.frame
        frame["reference"] = [f"NE-{i + 1}" for i in range(len(frame))]
        frame["name"] = [f"{TITLES[dataset]} NE-{i + 1}" for i in range(len(frame))]
        frame["entity"] = local_entity_ids(dataset, frame["reference"].tolist())
        frame["source"] = "digital-land/land-calculator (North East extract)"
        print(f"North East {report.summary()}")
        add(dataset, frame)

    outlines = read_layer_file(real / "digital-land-python__listed-building-outline-flattened.csv", "listed-building-outline")
    outlines.frame["source"] = "digital-land/digital-land-python"
    print(f"outlines {outlines.summary()}")
    add("listed-building-outline", outlines.frame)

    wanted = {"conservation-area", "tree", "area-of-outstanding-natural-beauty", "article-4-direction-area"}
    for name, sep in (("digital-land.info__entities.csv", "|"), ("digital-land.info__invalid_geometry.csv", ",")):
        rows = _entity_rows(real / name, sep, wanted | {"green-belt", "world-heritage-site"})
        rows["source"] = "digital-land/digital-land.info"
        for dataset, part in rows.groupby("dataset"):
            part = part.copy()
            geometry = part.geometry.to_numpy()
            bad = ~shapely.is_valid(geometry)
            geometry[bad] = shapely.make_valid(geometry[bad])
            part = part.set_geometry(list(geometry), crs=4326)
            add(str(dataset), part)

    for name in ("bops__1000005.json", "bops__7010002192.json"):
        frame = _platform_entity(real / name)
        frame["source"] = "unboxed/bops"
        add(str(frame["dataset"].iloc[0]), frame)

    # Where each sample layer is complete: Bath and North East Somerset, the North East region, or
    # nowhere (scattered real entities, which can answer "yes" but never "no").
    banes = gpd.read_file(real / "banes-geographic-data__os_boundary.geojson").union_all()
    north_east = gpd.read_file(real / "land-calculator__E12000001.geojson").union_all()
    regions = {}
    for dataset, *_ in BANES:
        regions.setdefault(dataset, []).append(banes)
    for dataset in NORTH_EAST:
        regions.setdefault(dataset, []).append(north_east)
    coverage = {dataset: shapely.union_all(regions.get(dataset, [])) if regions.get(dataset) else shapely.Polygon() for dataset in frames}

    OUT.mkdir(parents=True, exist_ok=True)
    gpd.GeoDataFrame({"dataset": list(coverage)}, geometry=list(coverage.values()), crs=4326).to_parquet(OUT / "coverage.parquet", index=False, compression="zstd")
    counts = {}
    for dataset, parts in sorted(frames.items()):
        frame = pd.concat(parts, ignore_index=True)
        frame = gpd.GeoDataFrame(frame, geometry="geometry", crs=4326)
        keep = [c for c in frame.columns if c in KEEP_FIELDS or c in ("source", "geometry") or c in _base()]
        frame = normalise_frame(frame[keep], dataset)
        if frame["entity"].duplicated().any():
            raise SystemExit(f"{dataset}: duplicate entity numbers")
        frame.to_parquet(OUT / f"{dataset}.parquet", index=False, compression="zstd")
        counts[dataset] = len(frame)
    return counts


def _base() -> list[str]:
    from .cache import BASE_COLUMNS

    return BASE_COLUMNS


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m datasets.samples_build FOLDER_OF_REAL_EXTRACTS")
    print(json.dumps(build(Path(sys.argv[1])), indent=1))
