"""Export of a boundary version in the Open Digital Planning (ODP) application schema.

- ``proposal.boundary`` is a ``GeoBoundary``: ``{"site": <GeoJSON Feature>, "area": {"squareMetres",
  "hectares"}}``.
- ``designations`` is a list of ``PlanningDesignation`` built by :func:`constraints.formats.to_odp`
  from the machine answer, with the officers' overrides applied on top (:func:`constraints.overrides.apply_overrides`):
  a dismissed constraint is reported as not intersecting, a constraint added by hand as intersecting
  (with its entity where it has one), and the keys derived from them (``designated``) follow. The machine
  answer itself is never changed; ``applied_overrides`` lists what was applied.
"""

from __future__ import annotations

from constraints.formats import ODP_DESCRIPTIONS, entity_url, to_odp
from constraints.overrides import apply_overrides
from datasets.catalogue import Catalogue


def geo_boundary(version: dict) -> dict:
    """A version view (``Boundaries.version``) as an ODP ``GeoBoundary``."""
    feature = dict(version["site"])
    feature["properties"] = dict(feature.get("properties") or {})
    area_m2 = float(version["area_m2"])
    return {
        "site": feature,
        "area": {"squareMetres": round(area_m2, 2), "hectares": round(area_m2 / 10_000, 4)},
    }


def effective_answer(version: dict, catalogue: Catalogue) -> dict:
    """A version's machine answer with its live overrides applied (keys derived from them following)."""
    answer = version.get("constraints") or {"constraints": []}
    return apply_overrides(answer, version.get("overrides"), catalogue)


def designations(answer: dict, overrides: list[dict] | None, catalogue: Catalogue) -> tuple[list[dict], list[str]]:
    """ODP designations for a machine answer with live overrides applied.

    Returns
    -------
    (designations, applied)
        The ``PlanningDesignation`` list and the ids of the overrides that changed it.
    """
    out = {d["value"]: d for d in to_odp(apply_overrides(answer, overrides, catalogue))}
    applied = []
    for o in overrides or []:
        if o.get("removed_at") is not None or o["key"] not in ODP_DESCRIPTIONS:
            continue  # withdrawn, or a key the schema cannot carry (a council's own)
        entry = out.get(o["key"])
        if o["action"] == "added" and entry is not None:
            url = entity_url(int(o["entity"])) if str(o.get("entity") or "").isdigit() else None
            if url:
                name = o.get("text") or str(o["entity"])
                entry.setdefault("entities", []).append({"name": name, "source": {"text": "Planning Data", "url": url}})
            applied.append(o["id"])
        elif o["action"] == "dismissed" or (o["action"] == "confirmed" and entry is not None):
            applied.append(o["id"])
    return list(out.values()), applied


def export_version(version: dict, catalogue: Catalogue) -> dict:
    """``{"proposal": {"boundary": GeoBoundary}, "designations": [...], ...}`` for one version view."""
    answer = version.get("constraints") or {"constraints": []}
    designation_list, applied = designations(answer, version.get("overrides"), catalogue)
    return {
        "boundary_id": version["id"],
        "version": version["version"],
        "proposal": {"boundary": geo_boundary(version)},
        "designations": designation_list,
        "applied_overrides": applied,
    }
