"""Export of a boundary version in the Open Digital Planning (ODP) application schema.

- ``proposal.boundary`` is a ``GeoBoundary``: ``{"site": <GeoJSON Feature>, "area": {"squareMetres",
  "hectares"}}``.
- ``designations`` is a list of ``PlanningDesignation`` built by :func:`constraints.formats.to_odp`
  from the machine answer, with the officers' overrides applied on top: a dismissed constraint is
  reported as not intersecting, a constraint added by hand as intersecting (with its entity where it
  has one). The machine answer itself is never changed; ``applied_overrides`` lists what was applied.
"""

from __future__ import annotations

from constraints.formats import ODP_DESCRIPTIONS, entity_url, to_odp


def geo_boundary(version: dict) -> dict:
    """A version view (``Boundaries.version``) as an ODP ``GeoBoundary``."""
    feature = dict(version["site"])
    feature["properties"] = dict(feature.get("properties") or {})
    area_m2 = float(version["area_m2"])
    return {
        "site": feature,
        "area": {"squareMetres": round(area_m2, 2), "hectares": round(area_m2 / 10_000, 4)},
    }


def designations(answer: dict, overrides: list[dict] | None = None) -> tuple[list[dict], list[str]]:
    """ODP designations for a machine answer with live overrides applied.

    Returns
    -------
    (designations, applied)
        The ``PlanningDesignation`` list and the ids of the overrides that changed it.
    """
    out = {d["value"]: d for d in to_odp(answer)}
    applied = []
    for o in overrides or []:
        if o.get("removed_at") is not None:
            continue
        key = o["key"]
        if key not in ODP_DESCRIPTIONS:
            continue  # the schema cannot carry a council's own keys
        if o["action"] == "dismissed":
            out[key] = {"value": key, "description": ODP_DESCRIPTIONS[key], "intersects": False}
            applied.append(o["id"])
        elif o["action"] == "added":
            entry = out.get(key)
            if entry is None or not entry["intersects"]:
                entry = {
                    "value": key,
                    "description": ODP_DESCRIPTIONS[key],
                    "intersects": True,
                    "entities": [],
                }
            url = None
            if o.get("entity") and str(o["entity"]).isdigit():
                url = entity_url(int(o["entity"]))
            if url:
                name = o.get("text") or str(o["entity"])
                entry.setdefault("entities", []).append(
                    {"name": name, "source": {"text": "Planning Data", "url": url}}
                )
            out[key] = entry
            applied.append(o["id"])
        elif o["action"] == "confirmed" and key in out:
            applied.append(o["id"])
    return list(out.values()), applied


def export_version(version: dict) -> dict:
    """``{"proposal": {"boundary": GeoBoundary}, "designations": [...], ...}`` for one version view."""
    answer = version.get("constraints") or {"constraints": []}
    designation_list, applied = designations(answer, version.get("overrides"))
    return {
        "boundary_id": version["id"],
        "version": version["version"],
        "proposal": {"boundary": geo_boundary(version)},
        "designations": designation_list,
        "applied_overrides": applied,
    }
