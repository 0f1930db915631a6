"""Officers' overrides applied to a check's answer, with every key derived from an overridden one following it.

The machine answer is never changed: :func:`apply_overrides` returns a new native answer in which

- a dismissed key is ``clear`` and an added one ``intersects`` (a confirmed one keeps its answer);
- the keys that narrow an overridden key (``listed`` -> ``listed.gradeTwo``, ``flood`` -> ``flood.zoneThree``,
  ``designated.nationalPark`` -> ``.broads``, ``articleFour`` -> ``articleFour.{council}.*``) follow it: a
  dismissal clears them, and a key added by hand leaves them ``unknown`` (which grade, which zone is
  not known) unless they already apply;
- keys made of others (``designated`` is any of ``designated.*``) are worked out again from their parts;
- an override of a derived key itself has the last word.

Every output of a boundary (native, PlanX, ODP, GeoJSON) is made from this answer, so they agree.

Examples
--------
>>> answer = {"constraints": [
...     {"key": "designated.conservationArea", "status": "intersects", "entities": [{"entity": 1}], "reason": None},
...     {"key": "designated.AONB", "status": "clear", "entities": [], "reason": None},
...     {"key": "designated.nationalPark", "status": "clear", "entities": [], "reason": None},
...     {"key": "designated.WHS", "status": "clear", "entities": [], "reason": None},
...     {"key": "designated", "status": "intersects", "entities": [{"entity": 1}], "reason": None}]}
>>> dismissed = {"id": "o1", "key": "designated.conservationArea", "action": "dismissed", "reason": "boundary error"}
>>> effective = apply_overrides(answer, [dismissed], load_catalogue())
>>> {c["key"]: c["status"] for c in effective["constraints"]}["designated"]
'clear'
"""

from __future__ import annotations

import copy

from datasets.catalogue import Catalogue, load_catalogue  # noqa: F401  (load_catalogue: the example)


def parent_of(key: str, catalogue: Catalogue) -> str | None:
    """The key ``key`` narrows (same data, fewer entities), or ``None``."""
    if key.startswith("articleFour.") and key != "articleFour.caz":
        team = key.split(".")[1]
        if any(t.name == team for t in catalogue.article4.values()):
            return "articleFour.caz" if key.endswith(".caz") and key.count(".") == 2 else "articleFour"
    parent = key.rsplit(".", 1)[0]
    if parent == key or parent not in catalogue or key not in catalogue:
        return None
    if set(catalogue.get(parent).datasets) == set(catalogue.get(key).datasets):
        return parent
    return None


def _set(item: dict, status: str, reason: str | None, text: str, entities: list | None = None) -> None:
    item["status"], item["reason"], item["text"] = status, reason, text
    if entities is not None:
        item["entities"] = entities


def _texts(key: str, catalogue: Catalogue) -> tuple[str, str]:
    if key in catalogue:
        return catalogue.get(key).positive, catalogue.get(key).negative
    return f"applies ({key})", f"does not apply ({key})"


def apply_overrides(answer: dict, overrides: list[dict] | None, catalogue: Catalogue) -> dict:
    """A copy of a native answer with the live overrides (not withdrawn) applied; see the module notes."""
    out = copy.deepcopy(answer)
    live = [o for o in overrides or [] if o.get("removed_at") is None and o.get("action") in ("dismissed", "added")]
    if not live:
        return out
    items = {c["key"]: c for c in out["constraints"]}

    def override(o: dict) -> None:
        item = items.get(o["key"])
        if item is None:
            return
        positive, negative = _texts(o["key"], catalogue)
        note = {"id": o.get("id"), "action": o["action"], "reason": o.get("reason")}
        if o["action"] == "dismissed":
            _set(item, "clear", None, negative, [])
        else:  # the officer's entity, when named, travels with the override (it may be no platform entity)
            _set(item, "intersects", None, positive)
            note.update(entity=o.get("entity"), text=o.get("text"))
        item["override"] = note

    base = [o for o in live if not (o["key"] in catalogue and catalogue.get(o["key"]).any_of)]
    for o in base:
        if parent_of(o["key"], catalogue) is None:
            override(o)
    # keys narrowing an overridden key follow it
    overridden = {o["key"]: o for o in base if parent_of(o["key"], catalogue) is None}
    for key, item in items.items():
        parent = parent_of(key, catalogue)
        o = overridden.get(parent) if parent else None
        if o is None:
            continue
        positive, negative = _texts(key, catalogue)
        if o["action"] == "dismissed":
            _set(item, "clear", None, negative, [])
            item["override"] = {"id": o.get("id"), "action": "follows", "of": parent}
        elif item["status"] != "intersects":
            reason = f"an officer added '{parent}' by hand; whether '{key}' applies is not known"
            _set(item, "unknown", reason, f"could not be checked: {reason}", [])
            item["override"] = {"id": o.get("id"), "action": "follows", "of": parent}
    for o in base:  # an override of a narrowing key itself has the last word
        if parent_of(o["key"], catalogue) is not None:
            override(o)
    # keys made of others are worked out again from their parts
    for constraint in catalogue.constraints:
        item = items.get(constraint.key)
        if not constraint.any_of or item is None:
            continue
        parts = [items[k] for k in constraint.any_of if k in items]
        if any(p["status"] == "intersects" for p in parts):
            status, reason = "intersects", None
        elif parts and all(p["status"] == "clear" for p in parts):
            status, reason = "clear", None
        else:
            reason = "a designation behind it could not be checked: " + "; ".join(
                p["reason"] or p["key"] for p in parts if p["status"] == "unknown"
            )
            status = "unknown"
        text = constraint.positive if status == "intersects" else constraint.negative if status == "clear" else f"could not be checked: {reason}"
        _set(item, status, reason, text, [e for p in parts if p["status"] == "intersects" for e in p["entities"]])
    for o in live:
        if o["key"] in catalogue and catalogue.get(o["key"]).any_of:
            override(o)
    return out
