"""Output formats of a check: PlanX's GIS response, the ODP schema's ``designations``, and GeoJSON.

Each takes the native answer (``ConstraintIndex.check``) and reshapes it; none consults the data again.
A key whose status is ``unknown`` is never written as a "not": PlanX's shape and ODP (neither of
which can say "not checked") leave the key out, and PlanX's lists it with its reason apart.

Usage::

    planx = to_planx(answer, catalogue)
    planx["constraints"]["listed"]["value"]
    # True
"""

from __future__ import annotations

from enum import StrEnum

from datasets.catalogue import Catalogue
from datasets.loaders import LOCAL_ID_BASE  # local features have no page on the platform

PLATFORM_ENTITY_URL = "https://www.planning.data.gov.uk/entity/{entity}"

# The ODP schema (v0.7.7, definitions.PlanningDesignation) fixes each value's description.
ODP_DESCRIPTIONS = {
    "archaeologicalPriorityArea": "Archaeological Priority Area",
    "articleFour": "Article 4 direction area",
    "articleFour.caz": "Central Activities Zone (CAZ)",
    "battlefield": "Historic battlefield",
    "brownfieldSite": "Brownfield site",
    "buildingPreservationNotice": "Building Preservation Notice (BPN)",
    "certificateOfImmunity": "Certificate of immunity",
    "designated": "Designated land",
    "designated.AONB": "Area of Outstanding Natural Beauty (AONB)",
    "designated.conservationArea": "Conservation area",
    "designated.nationalPark": "National Park",
    "designated.nationalPark.broads": "National Park - Broads",
    "designated.WHS": "UNESCO World Heritage Site (WHS)",
    "flood": "Flood risk",
    "flood.zoneTwo": "Flood zone 2 - Medium risk",
    "flood.zoneThree": "Flood zone 3 - High risk",
    "greenBelt": "Green belt",
    "listed": "Listed building",
    "listed.gradeOne": "Listed building - Grade I",
    "listed.gradeTwo": "Listed building - Grade II",
    "listed.gradeTwoStar": "Listed building - Grade II*",
    "locallyListed": "Locally listed building",
    "monument": "Site of a Scheduled Monument",
    "nature.ASNW": "Ancient Semi-Natural Woodland (ASNW)",
    "nature.ramsarSite": "Ramsar site",
    "nature.SAC": "Special Area of Conservation (SAC)",
    "nature.SPA": "Special Protection Area (SPA)",
    "nature.SSSI": "Site of Special Scientific Interest (SSSI)",
    "registeredPark": "Registered parks and gardens",
    "tpo": "Tree Preservation Order (TPO) or zone",
}

# Entity fields PlanX passes through in ``data``, as the platform's /entity.json returns them
PLANX_DATA_FIELDS = (
    "entry-date",
    "start-date",
    "end-date",
    "entity",
    "name",
    "dataset",
    "typology",
    "reference",
    "prefix",
    "organisation-entity",
)
ANSWER_ONLY = {"relation", "overlap_m2", "overlap_pct", "provenance", "source-row", "source"}


def entity_url(entity: int) -> str | None:
    """The platform's page for an entity, or ``None`` for a council's local feature."""
    entity = int(entity)
    return None if entity >= LOCAL_ID_BASE else PLATFORM_ENTITY_URL.format(entity=entity)


def _planx_entity(entity: dict) -> dict:
    out = {name: entity.get(name, "") for name in PLANX_DATA_FIELDS}
    out["entity"] = int(entity["entity"])
    out["typology"] = entity.get("typology") or "geography"
    out["prefix"] = entity.get("prefix") or entity.get("dataset", "")
    for name, value in entity.items():
        if name not in out and name not in ANSWER_ONLY:
            out[name] = value
    return out


def planx_derived(key: str, catalogue: Catalogue | None) -> bool:
    """Whether PlanX derives ``key`` from another key's answer and so gives it ``fn`` and ``value`` only.

    ``designated`` (from ``designated.*``), the flood zones and listed grades (from their parent's
    entities), and a council's granular article 4 keys (from ``articleFour``'s entities).
    """
    if catalogue is None:
        return False
    if key not in catalogue:
        return True  # a council's granular article 4 key
    constraint = catalogue.get(key)
    if constraint.any_of:
        return True
    parent = key.rsplit(".", 1)[0]
    return parent != key and parent in catalogue and set(catalogue.get(parent).datasets) == set(constraint.datasets)


def _derived_from(key: str, catalogue: Catalogue | None) -> str | None:
    """The key a derived key refines (``articleFour`` for a granular article 4 key), if any."""
    if catalogue is None or not planx_derived(key, catalogue) or (key in catalogue and catalogue.get(key).any_of):
        return None
    return "articleFour" if key not in catalogue and key.startswith("articleFour.") else key.rsplit(".", 1)[0]


def answer_reason(answer: dict, key: str) -> str:
    return next((i["reason"] or "" for i in answer["constraints"] if i["key"] == key), "")


def planx_metadata_datasets(answer: dict, catalogue: Catalogue | None, loaded) -> dict[str, str]:
    """The dataset PlanX describes under each answered base key's ``metadata`` (``/dataset/{name}.json``).

    ``loaded`` holds the dataset names this service has; the first of a key's datasets that is
    loaded is described, else its first.
    """
    out = {}
    for item in answer["constraints"]:
        key = item["key"]
        if not item.get("datasets") or planx_derived(key, catalogue):
            continue
        names = [d for d in item["datasets"] if d in loaded] or item["datasets"]
        out[key] = names[0]
    return out


def to_planx(answer: dict, catalogue: Catalogue | None = None, source_request: str = "", describe=None) -> dict:
    """PlanX's GIS response: ``sourceRequest``, ``constraints`` and ``metadata``, each as PlanX gives them.

    A checked key has PlanX's shape: ``fn``, ``value``, ``text``, ``category``, and ``data`` when it
    applies; a key PlanX derives from another (:func:`planx_derived`) has ``fn`` and ``value`` only.
    A key that could not be checked is **left out of** ``constraints``: PlanX's editor records every
    key present whose ``value`` is not truthy as "does not apply", and a key that is absent as
    neither, so the applicant is asked instead. Such keys are listed with their reasons under
    ``unknown``, and slivers under ``nearby``: members PlanX ignores.

    ``metadata`` is keyed by PlanX key; ``describe(dataset)`` gives a dataset's ``/dataset/{name}.json``
    (by default, what the answer's provenance holds of it).
    """
    constraints, unknown, nearby = {}, {}, {}
    statuses = {item["key"]: item["status"] for item in answer["constraints"]}
    for item in answer["constraints"]:
        key = item["key"]
        status = item["status"]
        source = _derived_from(key, catalogue)
        if status != "unknown" and statuses.get(source) == "unknown":
            # a granular key cannot say "not" where the key it refines could not be checked
            item = {**item, "reason": f"{source} could not be checked: {answer_reason(answer, source)}"}
            item["text"] = f"could not be checked: {item['reason']}"
            status = "unknown"
        if status == "unknown":
            unknown[key] = {"reason": item["reason"], "text": item["text"], "datasets": item.get("datasets", [])}
            continue
        if item["nearby"]:
            nearby[key] = [_planx_entity(e) | {"overlap_m2": e["overlap_m2"]} for e in item["nearby"]]
        if planx_derived(key, catalogue):
            constraints[key] = {"fn": key, "value": status == "intersects"}
            continue
        entry = {"fn": key, "value": status == "intersects", "text": item["text"]}
        if status == "intersects":
            entry["data"] = [_planx_entity(e) for e in item["entities"]]
        entry["category"] = item["category"]
        constraints[key] = entry
    provenance = answer["provenance"]["datasets"]
    if describe is None:

        def describe(name: str) -> dict:
            info = provenance.get(name)
            meta = (info.get("metadata") or {}) if isinstance(info, dict) else {}
            return {"dataset": name, "name": meta.get("name", name), **meta}

    metadata = {key: describe(name) for key, name in planx_metadata_datasets(answer, catalogue, provenance).items()}
    return {
        "sourceRequest": source_request,
        "constraints": constraints,
        "metadata": metadata,
        "unknown": unknown,
        "nearby": nearby,
    }


def to_odp(answer: dict) -> list[dict]:
    """The ODP schema's ``designations``: ``value``, ``description``, ``intersects``, and ``entities`` when true.

    Keys the schema does not list (a council's local keys, granular article 4 keys) and keys that
    could not be checked are left out: the schema can only say true or false.
    """
    designations = []
    for item in answer["constraints"]:
        description = ODP_DESCRIPTIONS.get(item["key"])
        if description is None or item["status"] == "unknown":
            continue
        entry = {"value": item["key"], "description": description, "intersects": item["status"] == "intersects"}
        if entry["intersects"]:
            entities = []
            for e in item["entities"]:
                url = entity_url(e["entity"])
                name = str(e.get("name") or e.get("reference") or e["entity"])
                entities.append({"name": name, "source": {"text": "Planning Data", "url": url}} if url else {"name": name, "description": f"{e['dataset']} (local layer)", "source": {"text": "Planning Data", "url": f"https://www.planning.data.gov.uk/dataset/{e['dataset']}"}})
            entry["entities"] = entities
        designations.append(entry)
    return designations


def to_geojson(answer: dict, snapshot) -> dict:
    """A FeatureCollection of the intersecting entities with their full geometry (EPSG:4326)."""
    from shapely.geometry import mapping

    from .index import geometry_of

    features, seen = [], set()
    for item in answer["constraints"]:
        if item["key"] == "designated" or item["status"] != "intersects":
            continue
        for e in item["entities"]:
            ident = (e["dataset"], int(e["entity"]))
            if ident in seen:
                continue
            seen.add(ident)
            geom = geometry_of(e, snapshot)
            props = {k: v for k, v in e.items()}
            props["keys"] = sorted({i["key"] for i in answer["constraints"] if any(int(x["entity"]) == ident[1] and x["dataset"] == ident[0] for x in i["entities"])})
            features.append({"type": "Feature", "id": ident[1], "geometry": mapping(geom) if geom is not None else None, "properties": props})
    return {"type": "FeatureCollection", "features": features, "properties": {"site": answer["site"], "provenance": answer["provenance"]}}


class Format(StrEnum):
    """The output formats every entry point offers (``format=`` over HTTP, ``redline check --format``)."""

    native = "native"
    planx = "planx"
    odp = "odp"
    geojson = "geojson"


def render(answer: dict, fmt: Format, catalogue: Catalogue | None, snapshot, *, source_request: str = "", describe=None) -> dict:
    """``answer`` (the native check answer) in ``fmt``: the one place every entry point renders through.

    ``describe(dataset)`` gives a dataset's ``/dataset/{name}.json`` for PlanX's ``metadata``; ODP
    designations travel with the site and the provenance they were computed from.
    """
    fmt = Format(fmt)
    if fmt is Format.planx:
        return to_planx(answer, catalogue, source_request, describe)
    if fmt is Format.odp:
        return {"designations": to_odp(answer), "site": answer.get("site"), "provenance": answer.get("provenance")}
    if fmt is Format.geojson:
        return to_geojson(answer, snapshot)
    return answer
