"""What a layer's copy is complete for, and how a council layer gets one when it is loaded.

The rule (``redline datasets load``):

1. ``--coverage FILE``: the area in the file (the council's district, an extract's region).
2. ``--coverage england``: the operator says the file is complete for all of England (a national
   dataset downloaded by hand).
3. Neither, with ``--organisation N`` and the platform's ``local-planning-authority`` dataset loaded:
   that organisation's planning-authority boundary.
4. Neither, otherwise: nowhere. The layer still answers "intersects" where its features meet a site,
   but never "not": a council file says nothing about land beyond what it was drawn for, and
   a layer whose extent nobody stated must not answer "clear" far from its data.

A platform sync records no coverage: the platform's national datasets stand for England (see
``datasets.england``). The check reads coverage in one place, ``constraints.index.coverage_gaps``.
"""

from __future__ import annotations

import shapely
from shapely.geometry.base import BaseGeometry

PLANNING_AUTHORITY_DATASET = "local-planning-authority"
ENGLAND = "england"
NOWHERE_NOTE = "nowhere yet: no --coverage was given, so it answers only where its features meet a site"


def default_coverage(cache, organisation: str | None) -> tuple[BaseGeometry, str]:
    """The coverage of a council layer loaded without ``--coverage``, and a note saying what it is."""
    if organisation and cache.entry(PLANNING_AUTHORITY_DATASET):
        authorities = cache.read(PLANNING_AUTHORITY_DATASET)
        own = authorities[authorities["organisation-entity"].astype(str) == str(organisation)]
        if len(own):
            area = shapely.union_all(own.geometry.to_numpy())
            return area, f"the planning-authority boundary of organisation {organisation} ({PLANNING_AUTHORITY_DATASET})"
    return shapely.Polygon(), NOWHERE_NOTE


UNSTATED_NOTE = "nowhere: it was loaded without a stated coverage; load it again with --coverage"


def unstated(entry: dict) -> bool:
    """A council file loaded before coverage was recorded: no area, and no word that it covers England."""
    source = entry.get("source")
    local = isinstance(source, dict) and source.get("type") == "local"
    return local and not entry.get("coverage") and not entry.get("coverage_note")


def describe(entry: dict) -> str:
    """The coverage of a manifest entry in words, for ``datasets list`` and load summaries."""
    if unstated(entry):
        return UNSTATED_NOTE
    if entry.get("coverage_note"):
        return entry["coverage_note"]
    return "the area recorded with it" if entry.get("coverage") else "England (a national layer)"


HOW_TO_SET = (
    "outside its coverage a check answers 'unknown', never 'not'; set it with --coverage FILE (a boundary "
    "of the area the layer is complete for, e.g. the council's district), or --coverage england"
)
