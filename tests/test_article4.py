"""Granular article 4 keys: every council PlanX serves, matched exactly as PlanX's GIS service matches them.

The facts (team slug -> key -> identifying value) are the project's own files in
``datasets/data/article4/``; the entities below carry the values those files name, as the councils'
article 4 direction areas on the platform do.
"""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely
from api_fixtures import make_app
from fastapi.testclient import TestClient

from constraints.formats import to_planx
from constraints.index import ConstraintIndex
from datasets.cache import LayerCache
from datasets.catalogue import load_catalogue

# Sites, and the article 4 layer's coverage around each (a box a little larger than the site)
AYLESBURY = shapely.box(-0.8150, 51.8150, -0.8140, 51.8156)  # Buckinghamshire
STREATHAM = shapely.box(-0.1330, 51.4280, -0.1320, 51.4286)  # Lambeth
WEMBLEY = shapely.box(-0.2960, 51.5560, -0.2950, 51.5566)  # Brent
KENNINGTON = shapely.box(-0.1100, 51.4880, -0.1090, 51.4886)  # Lambeth, in the central activities zone
MAYFAIR = shapely.box(-0.1470, 51.5100, -0.1460, 51.5106)  # Westminster, in the central activities zone
NORWICH = shapely.box(1.2900, 52.6300, 1.2910, 52.6306)  # no article 4 data covers it here


def around(site, margin=0.01):
    return site.buffer(margin, cap_style="square")


def a4_layer(rows: list[tuple[shapely.Geometry, dict]]) -> gpd.GeoDataFrame:
    fields = ("name", "reference", "article-4-direction", "notes", "description")
    data = {"entity": [7010000001 + i for i in range(len(rows))]}
    for field in fields:
        data[field] = [row.get(field, "") for _, row in rows]
    return gpd.GeoDataFrame(data, geometry=[g for g, _ in rows], crs=4326)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> LayerCache:
    cache = LayerCache(tmp_path_factory.mktemp("article4"))
    a4 = a4_layer(
        [
            (around(AYLESBURY, 0.002), {"name": "Twyford Grange", "reference": "309"}),
            (
                around(AYLESBURY, 0.003),
                {"name": "Amersham Road", "reference": "A4-77", "notes": "Land East of Amersham Road including OS parcel 0006. Means of enclosure."},
            ),
            (around(STREATHAM, 0.002), {"name": "STREATHAM LODGE\nESTATE", "reference": "CA62"}),
            (around(STREATHAM, 0.003), {"name": "Stockwell Park", "reference": "CA05"}),  # not PlanX's spelling
            (around(WEMBLEY, 0.002), {"name": "Conservation area 2", "reference": "A4D_CA2", "article-4-direction": "A4D_CA"}),
        ]
    )
    coverage = shapely.union_all([around(s) for s in (AYLESBURY, STREATHAM, WEMBLEY, KENNINGTON, MAYFAIR)])
    cache.write("article-4-direction-area", a4, source={"type": "test"}, coverage=coverage)
    caz = gpd.GeoDataFrame(
        {"entity": [2200001], "name": ["Central Activities Zone"], "reference": ["CAZ"]},
        geometry=[shapely.box(-0.16, 51.48, -0.08, 51.53)],
        crs=4326,
    )
    cache.write("central-activities-zone", caz, source={"type": "test"}, coverage=around(caz.geometry[0]))
    return cache


@pytest.fixture(scope="module")
def index(cache) -> ConstraintIndex:
    return ConstraintIndex.from_cache(cache, load_catalogue())


def statuses(answer: dict) -> dict[str, str]:
    return {c["key"]: c["status"] for c in answer["constraints"]}


def test_every_planx_team_has_its_own_rule_file_with_attribution():
    catalogue = load_catalogue()
    assert len(catalogue.article4) == 34
    assert len(catalogue.article4_rules()) == 712
    assert catalogue.article4_council("barking-and-dagenham").name == "barkingAndDagenham"
    from importlib import resources

    folder = resources.files("datasets") / "data" / "article4"
    assert (folder / "SOURCES.md").read_text().count("planx-new") >= 1
    assert len([p for p in folder.iterdir() if p.name.endswith(".json")]) == 34


def test_buckinghamshire_keys_match_by_reference_and_by_notes(index):
    found = statuses(index.check(AYLESBURY, council="buckinghamshire"))
    assert found["articleFour.buckinghamshire.twyfordgrange"] == "intersects"  # reference "309"
    assert found["articleFour.buckinghamshire.amershamroadeast"] == "intersects"  # notes, exactly
    assert found["articleFour.buckinghamshire.ivylane"] == "clear"  # "318": no such area here
    assert sum(1 for k in found if k.startswith("articleFour.buckinghamshire.")) == 164 + 1  # and .caz


def test_lambeth_names_match_once_line_breaks_are_spaces_and_case_counts(index):
    found = statuses(index.check(STREATHAM, council="lambeth"))
    assert found["articleFour.lambeth.streathamLodge"] == "intersects"  # "STREATHAM LODGE\nESTATE"
    assert found["articleFour.lambeth.stockwell"] == "clear"  # "Stockwell Park" is not "STOCKWELL PARK"
    assert found["articleFour"] == "intersects"


def test_brents_shared_direction_A4D_CA_matches_by_reference_only(index):
    found = statuses(index.check(WEMBLEY, council="brent"))
    assert found["articleFour.brent.caTwo"] == "intersects"  # reference A4D_CA2
    assert found["articleFour.brent.ca"] == "clear"  # its article-4-direction A4D_CA is shared: not by that


def test_brents_A4D_CA_still_identifies_an_area_whose_reference_is_not_a_brent_value():
    brent = load_catalogue().article4_council("brent")
    found = brent.match([{"name": "x", "reference": "BR-9", "article-4-direction": "A4D_CA"}])
    assert [k for k, hits in found.items() if hits] == ["articleFour.brent.ca"]


@pytest.mark.parametrize(
    ("team", "site", "key"),
    [("lambeth", KENNINGTON, "articleFour.lambeth.caz"), ("westminster", MAYFAIR, "articleFour.westminster.caz")],
)
def test_the_central_activities_zone_is_answered_under_the_teams_own_key(index, team, site, key):
    answer = index.check(site, council=team)
    found = statuses(answer)
    assert found[key] == "intersects"
    # as in PlanX: in the zone while no article 4 area is met, articleFour takes the zone's entities
    assert found["articleFour"] == "intersects"
    planx = to_planx(answer)["constraints"]
    assert planx[key]["value"] is True and planx[key]["fn"] == key


def test_the_renamed_zone_key_is_camel_cased_as_planx_spells_the_council():
    assert load_catalogue().article4_council("barking-and-dagenham").caz_key == "articleFour.barkingAndDagenham.caz"
    assert load_catalogue().article4_council("st-albans").caz_key == "articleFour.stAlbans.caz"


def test_granular_keys_are_unknown_where_the_article_4_layer_does_not_cover_the_site(index):
    answer = index.check(NORWICH, council="lambeth")
    granular = [c for c in answer["constraints"] if c["key"].startswith("articleFour.lambeth.")]
    assert granular and {c["status"] for c in granular} == {"unknown"}
    assert all("does not cover" in c["reason"] for c in granular)
    assert statuses(answer)["articleFour"] == "unknown"
    planx = to_planx(answer)
    assert not [c["key"] for c in granular if c["key"] in planx["constraints"]], "never a false 'not': left out"
    assert all(c["key"] in planx["unknown"] for c in granular)


def test_granular_keys_are_unknown_where_an_area_is_met_but_the_layer_is_incomplete(tmp_path):
    cache = LayerCache(tmp_path)
    # an extract that holds one area and is complete only in a corner away from the site
    a4 = a4_layer([(around(STREATHAM, 0.002), {"name": "HYDE FARM"})])
    cache.write("article-4-direction-area", a4, source={"type": "test"}, coverage=shapely.box(0, 50, 0.1, 50.1))
    index = ConstraintIndex.from_cache(cache, load_catalogue())
    found = statuses(index.check(STREATHAM, council="lambeth"))
    assert found["articleFour.lambeth.hydeFarm"] == "intersects"
    assert found["articleFour.lambeth.streathamLodge"] == "unknown"  # another area might be missing


def test_gis_team_slugs_match_exactly(tmp_path, cache):
    import shutil

    shutil.copytree(cache.root, tmp_path / "data")
    with TestClient(make_app(tmp_path / "data", load_samples=False)) as client:
        body = client.get("/gis/lambeth", params={"geom": STREATHAM.wkt}).json()
        other_case = client.get("/gis/Lambeth", params={"geom": STREATHAM.wkt}).json()["constraints"]
    exact = body["constraints"]
    assert exact["articleFour.lambeth.streathamLodge"]["value"] is True
    # the zone layer does not reach Streatham: its renamed key is unknown, and the generic one is gone
    assert "articleFour.caz" not in exact and "articleFour.caz" not in body["unknown"]
    assert "articleFour.lambeth.caz" in body["unknown"]
    assert not [k for k in other_case if k.startswith("articleFour.lambeth.")]


def test_without_a_council_only_the_teams_that_can_match_are_asked_and_none_is_left_out():
    catalogue = load_catalogue()
    for team in catalogue.article4.values():
        for value in team._by_value:
            for field in ("name", "reference", "notes", "article-4-direction", "description"):
                entity = {field: value if field != "description" else value + " (the rest of its description)"}
                found = team.match([entity])
                if any(found.values()):
                    assert team in catalogue.article4_teams_for([entity]), (team.slug, field, value)
    assert catalogue.article4_teams_for([{"name": "", "reference": None, "description": ""}]) == []
