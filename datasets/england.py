"""Where England is: the national layers (the Planning Data Platform's) cover England only.

``england.geojson`` is drawn by hand along the land borders with Wales and Scotland (the coast is left
to the sea around it, and the Isle of Man out); it is approximate, so it is widened by
``BORDER_MARGIN_DEGREES``: a site within that distance of the border is taken to be in England, and
further into Wales or Scotland it is not. It was drawn by hand through the border towns and rivers
(the Dee, Chirk, Knighton, Hay, Monmouth, the Wye to Chepstow; the Solway, Gretna, the Cheviots,
the Tweed to Marshall Meadows): no boundary data was copied. An operator with the official country
boundary can load it as a layer's ``--coverage`` instead.

Examples
--------
>>> import shapely
>>> england_part(shapely.Point(-3.18, 51.48))  # Cardiff
'outside'
>>> england_part(shapely.Point(1.29, 52.63))  # Norwich
'inside'
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import shapely
from shapely.geometry.base import BaseGeometry

BORDER_MARGIN_DEGREES = 0.02  # about 1.4 km north-south and 2.2 km east-west at 52° N
OUTSIDE_ENGLAND = (
    "the site is outside England (in Wales, Scotland or at sea); redline's national layers, like the Planning "
    "Data Platform's, cover England only, so no key can be answered 'not'"
)
PARTLY_OUTSIDE_ENGLAND = "part of the site lies outside England, and the {name} layer covers England only"


@lru_cache(maxsize=1)
def england() -> BaseGeometry:
    """England in EPSG:4326 lon/lat, widened by the border margin, prepared.

    Kept in lon/lat because the drawing reaches out to sea beyond the OSTN15 grid."""
    text = (resources.files("datasets") / "data" / "england.geojson").read_text(encoding="utf-8")
    land = shapely.union_all(shapely.get_parts(shapely.from_geojson(text)))
    area = land.buffer(BORDER_MARGIN_DEGREES)
    shapely.prepare(area)
    return area


def england_part(site: BaseGeometry) -> str:
    """``inside``, ``partly`` or ``outside`` England, for a geometry in EPSG:4326 lon/lat."""
    area = england()
    if area.covers(site):
        return "inside"
    return "partly" if area.intersects(site) else "outside"
