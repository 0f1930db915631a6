"""Dataset metadata as the platform's ``/dataset/{name}.json`` gives it, for the datasets in the cache.

The descriptive fields (name, licence, attribution and their texts...) come from the platform's
specification, shipped in ``api/data/datasets.json`` (rebuilt by ``python -m api.data.build_datasets``);
metadata a sync fetched from the platform (kept in the manifest) takes precedence; ``entity-count``
is always what this service holds, since that is what its answers are computed from.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

#: The platform's dataset fields, in its order, each with its empty value.
FIELDS = {
    "entry-date": "",
    "start-date": "",
    "end-date": "",
    "collection": "",
    "dataset": "",
    "description": "",
    "name": "",
    "plural": "",
    "prefix": "",
    "text": "",
    "typology": "geography",
    "wikidata": "",
    "wikipedia": "",
    "entities": "",
    "themes": [],
    "entity-count": None,
    "paint-options": "",
    "attribution": "",
    "attribution-text": "",
    "licence": "",
    "licence-text": "",
    "consideration": "",
    "github-discussion": "",
    "entity-minimum": "",
    "entity-maximum": "",
    "phase": "",
    "realm": "dataset",
    "replacement-dataset": "",
    "version": "",
}


#: The specification's typologies (digital-land/specification ``typology.csv``): the values ``typology`` takes.
TYPOLOGIES = (
    "category",
    "document",
    "entity",
    "geography",
    "legal-instrument",
    "metric",
    "organisation",
    "pipeline",
    "policy",
    "specification",
    "timetable",
    "value",
)


@lru_cache(maxsize=1)
def specification() -> dict[str, dict]:
    text = (resources.files("api") / "data" / "datasets.json").read_text(encoding="utf-8")
    return json.loads(text)["datasets"]


def dataset_json(name: str, count: int, entry: dict | None = None, *, count_row: bool = False) -> dict:
    """``/dataset/{name}.json`` for a dataset holding ``count`` entities here.

    A council's local dataset, unknown to the platform, gets the same fields with empty values and
    its name; ``entry`` is its manifest entry, whose ``metadata`` (from a platform sync) wins.
    ``entity-count`` is an integer, as the platform's dataset model declares it; ``count_row`` gives
    the ``{"dataset", "count"}`` row the platform once served there, which PlanX recorded and keeps.
    """
    out = {k: (list(v) if isinstance(v, list) else v) for k, v in FIELDS.items()}
    out["dataset"] = name
    out["collection"] = name
    out["name"] = name.replace("-", " ").capitalize()
    out.update(specification().get(name, {}))
    synced = (entry or {}).get("metadata") or {}
    out.update(
        {k: v for k, v in synced.items() if k in FIELDS and k != "entity-count" and v not in (None, "")}
    )
    out["entity-count"] = {"dataset": name, "count": int(count)} if count_row else int(count)
    return out


def describer(snapshot):
    """``describe(name)``: the ``/dataset/{name}.json`` of a dataset as ``snapshot`` holds it (count 0 if not)."""
    layers = snapshot.layers

    def describe(name: str) -> dict:
        layer = layers.get(name)
        # PlanX's metadata keeps the {dataset, count} row the platform served when PlanX recorded it
        return dataset_json(name, len(layer) if layer is not None else 0, layer.entry if layer is not None else None, count_row=True)

    return describe
