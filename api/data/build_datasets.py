"""Rebuild ``api/data/datasets.json``: the platform's dataset metadata for the datasets redline knows.

Sources (real public files, the collection of real extracts described in ``tests/data/real/SOURCES.md``): ``specification__dataset.csv``
(digital-land/specification, MIT) for each dataset's fields, and the ``/dataset/{name}.json`` answers
kept in PlanX's mocks (planx-new, MPL-2.0; data OGL v3) for the attribution and licence texts.

    python -m api.data.build_datasets FOLDER_OF_REAL_EXTRACTS
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from datasets.catalogue import load_catalogue
from datasets.samples import sample_files

from . import write_bundled_json

OUT = Path(__file__).with_name("datasets.json")
MOCKS = (
    "planx-new__digitalLandResponseMock.json",
    "planx-new__propertyConstraintResponse.json",
    "planx-new__digitalLandNegativeResponseMock.json",
)


def _int(value: str):
    try:
        return int(value)
    except (TypeError, ValueError):
        return ""


def _paint(value: str):
    try:
        return json.loads(value) if value else ""
    except json.JSONDecodeError:
        return value


def build(real: Path) -> dict:
    spec = {
        r["dataset"]: r for r in csv.DictReader(open(real / "specification__dataset.csv", encoding="utf-8"))
    }
    attribution_text, licence_text = {}, {}
    for name in MOCKS:
        path = real / name
        if path.exists():
            for meta in json.loads(path.read_text())["metadata"].values():
                if meta.get("attribution-text"):
                    attribution_text.setdefault(meta["attribution"], meta["attribution-text"])
                if meta.get("licence-text"):
                    licence_text.setdefault(meta["licence"], meta["licence-text"])
    wanted = (
        set(load_catalogue().datasets())
        | set(sample_files())
        | {"local-authority", "tree", "article-4-direction"}
    )
    out = {}
    for name in sorted(wanted):
        row = spec.get(name)
        if row is None:
            continue
        out[name] = {
            "entry-date": row["entry-date"],
            "start-date": row["start-date"],
            "end-date": row["end-date"],
            "collection": row["collection"],
            "dataset": name,
            "description": row["description"],
            "name": row["name"],
            "plural": row["plural"],
            "prefix": row["prefix"],
            "text": row["text"],
            "typology": row["typology"],
            "wikidata": row["wikidata"],
            "wikipedia": row["wikipedia"],
            "entities": "",
            "themes": [t for t in row["themes"].split(";") if t],
            "paint-options": _paint(row["paint-options"]),
            "attribution": row["attribution"],
            "attribution-text": attribution_text.get(row["attribution"], ""),
            "licence": row["licence"],
            "licence-text": licence_text.get(row["licence"], ""),
            "consideration": row["consideration"],
            "github-discussion": _int(row["github-discussion"]),
            "entity-minimum": _int(row["entity-minimum"]),
            "entity-maximum": _int(row["entity-maximum"]),
            "phase": row["phase"],
            "realm": row["realm"],
            "replacement-dataset": row["replacement-dataset"],
            "version": "",
        }
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m api.data.build_datasets FOLDER_OF_REAL_EXTRACTS")
    real = Path(sys.argv[1])
    data = build(real)
    write_bundled_json(
        OUT,
        {
            "_source": "digital-land/specification dataset.csv (MIT) and PlanX mocks of /dataset/{name}.json (OGL v3); built by api/data/build_datasets.py",
            "datasets": data,
        },
    )
    print(f"{len(data)} datasets -> {OUT}")
