"""The ``<redline-map>`` widget in a real browser (Debian's headless Chromium) against the real service.

Each test is a story a person can follow on the demo page (``/``) or the officer page
(``/officer/{id}``): draw by mouse, drag a corner, type the same boundary by keyboard, upload a file, read
the constraints, amend a stored boundary. Every page runs under a request guard: a request to any host
other than loopback fails the test. Screenshots of each state go to ``test-artifacts/widget/``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import zipfile
from pathlib import Path

import geopandas as gpd
import httpx
import pytest
import shapely
from browser_fixtures import *  # noqa: F403 - pytest fixtures: browser, live_service, guarded_page
from browser_fixtures import ROOT
from playwright.sync_api import expect
from pyproj import Geod
from shapely.geometry import Polygon, box, mapping, shape

from datasets import crs

pytestmark = pytest.mark.browser

SAMPLES = ROOT / "datasets" / "data" / "samples"
VENDOR = ROOT / "api" / "static" / "vendor"
SCREENSHOT = ROOT / "tests" / "screenshots" / "widget-draw.png"
# The demo page's view: Westgate Street, Bath, zoom 17.
CENTRE = (-2.3610, 51.3815)
ZOOM = 17
WIDGET = "document.querySelector('redline-map')"
GEOD = Geod(ellps="WGS84")


# --- helpers -------------------------------------------------------------------------------------------
def open_page(gp, path: str = "/?empty=1"):
    page = gp.page
    page.goto(gp.base + path)
    page.wait_for_function(f"{WIDGET} && {WIDGET}.ready && {WIDGET}.dataset.state !== undefined")
    page.evaluate(f"{WIDGET}.ready")
    page.evaluate(
        f"""() => {{
            window.widgetEvents = [];
            for (const type of ['boundarychange', 'constraintschange'])
                {WIDGET}.addEventListener(type, (e) => window.widgetEvents.push({{type, detail: e.detail}}));
        }}"""
    )
    return page


def wait_state(page, *states: str, timeout: float = 15_000) -> str:
    wanted = list(states)
    page.wait_for_function(f"{wanted!r}.includes({WIDGET}.dataset.state)", timeout=timeout)
    return page.evaluate(f"{WIDGET}.dataset.state")


def wait_checked(page) -> dict:
    """Wait for the check and its overlays; return the native answer the widget holds."""
    wait_state(page, "checked")
    page.wait_for_function(f"{WIDGET}.dataset.overlays !== undefined")
    return page.evaluate(f"{WIDGET}.constraints")


def map_centre(page) -> tuple[float, float, dict]:
    b = page.locator(".rl-map").bounding_box()
    return b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, b


def pixel_to_lonlat(dx: float, dy: float, centre=CENTRE, zoom=ZOOM) -> tuple[float, float]:
    """Web Mercator (Leaflet's default): where a click ``dx, dy`` pixels from the map centre lands."""
    scale = 256 * 2**zoom
    lon = centre[0] + dx / scale * 360
    y = (1 - math.log(math.tan(math.pi / 4 + math.radians(centre[1]) / 2)) / math.pi) / 2 * scale + dy
    lat = math.degrees(2 * math.atan(math.exp(math.pi * (1 - 2 * y / scale))) - math.pi / 2)
    return lon, lat


def draw_by_mouse(page, offsets: list[tuple[int, int]]) -> None:
    cx, cy, _ = map_centre(page)
    page.get_by_role("button", name="Draw boundary").click()
    for dx, dy in offsets:
        page.mouse.click(cx + dx, cy + dy)
    page.get_by_role("button", name="Finish shape").click()


def geodesic_area(geometry: dict) -> float:
    return abs(GEOD.geometry_area_perimeter(shape(geometry))[0])


def ring(feature: dict) -> list[list[float]]:
    assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
    return feature["geometry"]["coordinates"][0]


def text_of(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def save_readme_screenshot(path: Path) -> None:
    """Refresh the README's picture on request only, so a test run leaves the work tree clean."""
    if os.environ.get("REDLINE_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOT)


# --- files the service sends ---------------------------------------------------------------------------
def test_vendored_libraries_are_the_pinned_npm_files():
    sums = (VENDOR / "SHA256SUMS").read_text().splitlines()
    assert len(sums) >= 11
    for line in sums:
        digest, name = line.split(maxsplit=1)
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    assert "BSD 2-Clause" in (VENDOR / "leaflet-1.9.4" / "LICENSE").read_text()
    assert "MIT License" in (VENDOR / "leaflet-geoman-free-2.20.2" / "LICENSE").read_text()


def test_the_service_serves_the_widget_and_its_pages(live_service):
    script = httpx.get(f"{live_service}/widget/redline-map.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert 'customElements.define("redline-map"' in script.text
    for path in (
        "leaflet-1.9.4/leaflet.js",
        "leaflet-1.9.4/leaflet.css",
        "leaflet-geoman-free-2.20.2/leaflet-geoman.min.js",
    ):
        assert httpx.get(f"{live_service}/widget/vendor/{path}").status_code == 200, path
    demo = httpx.get(f"{live_service}/")
    assert demo.status_code == 200 and '<redline-map id="map" mode="draw"' in demo.text
    officer = httpx.get(f"{live_service}/officer/abc-123")
    assert officer.status_code == 200 and 'boundary="abc-123"' in officer.text
    bad = httpx.get(f"{live_service}/officer/%3Cscript%3E")
    assert bad.status_code == 404 and bad.headers["content-type"] == "application/problem+json"


def test_coordinates_in_british_national_grid_are_converted_through_ostn15(live_service):
    lon = [-2.3614, -2.3606, -2.3606, -2.3614]
    lat = [51.3812, 51.3812, 51.3817, 51.3817]
    e, n = crs.lonlat_to_bng(lon, lat)
    text = "\n".join(f"{x:.3f} {y:.3f}" for x, y in zip(e, n, strict=True))
    answer = httpx.post(f"{live_service}/widget/coordinates", json={"text": text}).json()
    assert answer["properties"] == {"entered_as": "bng", "points": 4}
    got = answer["geometry"]["coordinates"][0]
    assert got[0] == got[-1]
    for (glon, glat), wlon, wlat in zip(got[:-1], lon, lat, strict=True):
        assert abs(glon - wlon) < 1e-7 and abs(glat - wlat) < 1e-7
    for body, title in (
        ({"text": "-2.36 51.38 -2.35"}, "Coordinates come in pairs"),
        ({"text": "-2.36 51.38\n375000 164000\n-2.35 51.39"}, "Mixed coordinate systems"),
        ({"text": "hello"}, "No coordinates"),
        ({"text": "-2.36 51.38\n-2.35 51.38"}, "Too few points"),
        ({"text": "900000 300000\n900100 300000\n900100 300100"}, "Outside the National Grid"),
    ):
        r = httpx.post(f"{live_service}/widget/coordinates", json=body)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", body
        assert r.json()["title"] == title


def test_features_in_view_for_display_and_snapping(live_service):
    bath = httpx.get(
        f"{live_service}/widget/features", params={"bbox": "-2.3625,51.3805,-2.3595,51.3825"}
    ).json()
    datasets = {f["properties"]["dataset"] for f in bath["features"]}
    assert {"conservation-area", "listed-building"} <= datasets
    assert all(isinstance(f["properties"]["entity"], str) for f in bath["features"]), (
        "64-bit ids survive JavaScript"
    )
    wide = httpx.get(f"{live_service}/widget/features", params={"bbox": "-3,51,-2,52"}).json()
    assert wide["features"] == [] and wide["properties"]["zoom_in"] is True
    sea = httpx.get(f"{live_service}/widget/features", params={"bbox": "2.8,60.9,2.85,60.95"})
    assert sea.status_code == 200 and sea.json()["features"] == []
    for bad in ("1,2,3", "a,b,c,d", "-2.3,51.4,-2.4,51.3", "nan,51,-2,52"):
        r = httpx.get(f"{live_service}/widget/features", params={"bbox": bad})
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", bad


# --- the widget in the browser ------------------------------------------------------------------------
CLICKS = [(-150, -60), (110, -80), (130, 70), (-120, 90)]


def test_drawing_a_polygon_by_mouse_clicks_sets_value_and_checks_it(guarded_page):
    page = open_page(guarded_page)
    page.wait_for_function(f"{WIDGET}.dataset.features !== undefined")
    draw_by_mouse(page, CLICKS)
    answer = wait_checked(page)
    feature = page.evaluate(f"{WIDGET}.value")
    coords = ring(feature)
    assert len(coords) == 5 and coords[0] == coords[-1]
    assert shapely.is_ccw(shapely.linearrings(coords)), "RFC 7946: exterior ring counterclockwise"
    # Each corner is where it was clicked, or snapped to a constraint feature within 15 px.
    px = 360 / (256 * 2**ZOOM)
    for dx, dy in CLICKS:
        lon, lat = pixel_to_lonlat(dx, dy)
        nearest = min(
            math.hypot((c[0] - lon) / px, (c[1] - lat) / (px * math.cos(math.radians(lat))))
            for c in coords[:-1]
        )
        assert nearest < 16, f"no corner near the click at {dx}, {dy} ({nearest:.1f} px away)"
    events = page.evaluate("window.widgetEvents")
    change = next(e["detail"] for e in events if e["type"] == "boundarychange")
    assert change["feature"] == feature and change["validation"]["valid"] is True
    assert change["area_m2"] == pytest.approx(geodesic_area(feature["geometry"]), rel=1e-3)
    assert change["area_ha"] == pytest.approx(change["area_m2"] / 10_000, rel=1e-3)
    assert f"{round(change['area_m2']):,} m²" in text_of(page, ".rl-area")
    assert [e for e in events if e["type"] == "constraintschange"][0]["detail"] == answer
    assert {c["key"]: c["status"] for c in answer["constraints"]}[
        "designated.conservationArea"
    ] == "intersects"
    assert "Bath (conservation-area)" in text_of(page, ".rl-applies")
    shot = guarded_page.shoot("01-drawn-by-mouse")
    save_readme_screenshot(shot)


def test_dragging_a_vertex_changes_the_area_and_a_deleted_vertex_can_be_undone(guarded_page):
    page = open_page(guarded_page, "/")  # the demo's sample site, set through `value`
    wait_checked(page)
    before = page.evaluate(f"{WIDGET}.validation")
    start = page.evaluate(f"{WIDGET}.value")
    corners = page.locator(".leaflet-marker-icon.marker-icon:not(.marker-icon-middle)")
    assert corners.count() == 4
    boxes = [corners.nth(i).bounding_box() for i in range(4)]
    north_east = max(boxes, key=lambda b: b["x"] - b["y"])
    x, y = north_east["x"] + north_east["width"] / 2, north_east["y"] + north_east["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 50, y - 40, steps=10)
    page.mouse.up()
    page.wait_for_function(f"{WIDGET}.validation && {WIDGET}.validation.area_m2 !== {before['area_m2']}")
    wait_checked(page)
    after = page.evaluate(f"{WIDGET}.validation")
    moved = page.evaluate(f"{WIDGET}.value")
    assert after["area_m2"] > before["area_m2"] * 1.1, (
        "dragging the north-east corner outwards enlarges the site"
    )
    assert after["area_m2"] == pytest.approx(geodesic_area(moved["geometry"]), rel=1e-3)
    changed = [p for p in ring(moved)[:-1] if p not in ring(start)]
    assert len(changed) == 1, "one corner moved, the others stayed"
    assert f"{round(after['area_m2']):,} m²" in text_of(page, ".rl-area")
    guarded_page.shoot("02-vertex-dragged")

    # Right-click a corner to delete it; Undo brings it back.
    south_west = min(boxes, key=lambda b: b["x"] - b["y"])
    page.mouse.click(
        south_west["x"] + south_west["width"] / 2, south_west["y"] + south_west["height"] / 2, button="right"
    )
    page.wait_for_function(f"{WIDGET}.value.geometry.coordinates[0].length === 4")
    wait_checked(page)
    assert page.evaluate(f"{WIDGET}.validation.area_m2") < after["area_m2"] * 0.75
    page.get_by_role("button", name="Undo").click()
    page.wait_for_function(f"{WIDGET}.value.geometry.coordinates[0].length === 5")
    wait_checked(page)
    assert page.evaluate(f"{WIDGET}.value") == moved
    assert page.evaluate(f"{WIDGET}.validation.area_m2") == after["area_m2"]


def _tab_to(page, predicate_js: str, limit: int = 40) -> list[dict]:
    """Press Tab until the focused element matches; return what each stop looked like."""
    stops = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        stop = page.evaluate(
            """() => { const el = document.activeElement; const s = getComputedStyle(el);
                return {tag: el.tagName, text: (el.getAttribute('aria-label') || el.textContent || '').trim().slice(0, 40),
                        inWidget: !!el.closest('redline-map'), outline: s.outlineStyle, width: parseFloat(s.outlineWidth)}; }"""
        )
        stops.append(stop)
        if page.evaluate(f"(el => {predicate_js})(document.activeElement)"):
            return stops
    raise AssertionError(f"Tab never reached the element; stops: {stops}")


def test_the_same_boundary_entered_by_keyboard_only_gives_the_same_geojson(guarded_page):
    page = open_page(guarded_page)
    draw_by_mouse(page, CLICKS)
    wait_checked(page)
    drawn = page.evaluate(f"{WIDGET}.value")

    page = open_page(guarded_page)
    stops = _tab_to(page, "el.tagName === 'TEXTAREA'")
    widget_stops = [s for s in stops if s["inWidget"]]
    assert {s["text"] for s in widget_stops} >= {"Draw boundary", "Undo", "Clear"}
    invisible = [s for s in widget_stops if s["outline"] == "none" or s["width"] < 2]
    assert not invisible, f"controls without a visible focus indicator: {invisible}"
    typed = "\n".join(f"{lon}, {lat}" for lon, lat in ring(drawn)[:-1])
    page.keyboard.type(typed)
    _tab_to(page, "el.type === 'submit'", limit=2)
    page.keyboard.press("Enter")
    wait_checked(page)
    assert page.evaluate(f"{WIDGET}.value") == drawn
    guarded_page.shoot("03-entered-by-keyboard")

    # The same corners as British National Grid eastings and northings (OSTN15 on the server).
    lon, lat = zip(*ring(drawn)[:-1], strict=True)
    east, north = crs.lonlat_to_bng(list(lon), list(lat))
    coordinates = page.get_by_label("Boundary coordinates")
    coordinates.fill("")
    coordinates.focus()
    page.keyboard.type("\n".join(f"{e:.3f} {n:.3f}" for e, n in zip(east, north, strict=True)))
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_function(f"JSON.stringify({WIDGET}.value) !== {json.dumps(json.dumps(drawn))}")
    wait_checked(page)
    from_grid = ring(page.evaluate(f"{WIDGET}.value"))
    for a, b in zip(from_grid, ring(drawn), strict=True):
        assert abs(a[0] - b[0]) < 2e-7 and abs(a[1] - b[1]) < 2e-7
    # the status line follows the check's answer; on a loaded machine it may trail the state by a moment
    expect(page.locator(".rl-status")).to_have_text(re.compile("^Constraints checked"), timeout=15_000)


def _bath_site_bng() -> Polygon:
    """A site on Westgate Street, Bath, in British National Grid metres (as a GIS exports it)."""
    return crs.to_bng(box(-2.3620, 51.3810, -2.3612, 51.3815))


def _upload_files(tmp: Path) -> dict[str, Path]:
    frame = gpd.GeoDataFrame({"name": ["site"]}, geometry=[_bath_site_bng()], crs="EPSG:27700")
    gpkg = tmp / "site.gpkg"
    frame.to_file(gpkg, driver="GPKG")
    shp_dir = tmp / "shp"
    shp_dir.mkdir()
    frame.to_file(shp_dir / "site.shp", driver="ESRI Shapefile")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for part in shp_dir.iterdir():
            zf.write(part, part.name)
    zipped = tmp / "site.zip"
    zipped.write_bytes(buffer.getvalue())
    return {"gpkg": gpkg, "zip": zipped}


def test_uploading_a_boundary_file_loads_validates_and_checks_it(guarded_page, tmp_path):
    files = _upload_files(tmp_path)
    expected = crs.to_wgs84(_bath_site_bng())
    page = open_page(guarded_page)
    for kind, path in files.items():
        page.evaluate("window.widgetEvents = []")
        page.locator("input[type=file]").set_input_files(str(path))
        page.wait_for_function("window.widgetEvents.some(e => e.type === 'constraintschange')")
        answer = wait_checked(page)
        got = shape(page.evaluate(f"{WIDGET}.value")["geometry"])
        assert got.symmetric_difference(expected).area < 1e-12, kind
        assert {c["key"]: c["status"] for c in answer["constraints"]}[
            "designated.conservationArea"
        ] == "intersects"
        guarded_page.shoot(f"04-uploaded-{kind}")
    page.locator("input[type=file]").set_input_files(
        files={"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}
    )
    page.wait_for_function("document.querySelector('.rl-messages').textContent.includes('notes.txt')")
    assert "upload a GeoJSON" in text_of(page, ".rl-messages")


def _monkton_combe():
    ca = gpd.read_parquet(SAMPLES / "conservation-area.parquet")
    return ca[ca["name"] == "Monkton Combe"].geometry.iloc[0]


def _sites_on(area) -> tuple[dict, dict]:
    """A site straddling the conservation area's edge, and one sharing an edge with it from outside."""
    shell = max(shapely.get_parts(area), key=lambda p: p.area).exterior.coords
    corner = shell[0]
    straddle = box(corner[0] - 0.0004, corner[1] - 0.0003, corner[0] + 0.0004, corner[1] + 0.0003)
    for a, b in zip(shell[:-1], shell[1:], strict=True):
        dx, dy = b[0] - a[0], b[1] - a[1]
        length = math.hypot(dx, dy)
        if length < 2e-4:
            continue
        for side in (1, -1):
            nx, ny = -dy / length * 1.5e-4 * side, dx / length * 1.5e-4 * side
            outside = Polygon([a, b, (b[0] + nx, b[1] + ny), (a[0] + nx, a[1] + ny)])
            if outside.is_valid and outside.intersection(area).area < 1e-14 and outside.touches(area):
                return mapping(straddle), mapping(outside)
    raise AssertionError("no edge of the conservation area to build a touching site on")


def test_a_site_on_a_real_conservation_area_shows_the_list_and_labelled_overlays(guarded_page):
    straddle, touching = _sites_on(_monkton_combe())
    page = open_page(guarded_page)
    page.evaluate(
        f"site => {{ {WIDGET}.value = {{type: 'Feature', properties: {{}}, geometry: site}}; }}", straddle
    )
    answer = wait_checked(page)
    keys = {c["key"]: c for c in answer["constraints"]}
    area = keys["designated.conservationArea"]
    assert area["status"] == "intersects"
    entity = area["entities"][0]
    assert (
        entity["name"] == "Monkton Combe"
        and entity["relation"] == "overlaps"
        and 0 < entity["overlap_pct"] < 100
    )
    applies = page.locator(".rl-applies li[data-key='designated.conservationArea']")
    assert "is in a Conservation Area" in applies.inner_text()
    assert "Monkton Combe (conservation-area): it overlaps the site" in applies.inner_text()
    assert page.locator("path.rl-overlay-applies").count() >= 1
    assert (
        page.locator(".leaflet-tooltip.rl-label", has_text="Monkton Combe (conservation-area)").count() == 1
    )
    assert "not checked" in text_of(page, ".rl-unknown h4").lower(), (
        "datasets not loaded are never shown as clear"
    )
    assert "Monkton Combe" in text_of(page, ".rl-status")
    guarded_page.shoot("05-conservation-area-applies")

    page.evaluate(
        f"site => {{ {WIDGET}.value = {{type: 'Feature', properties: {{}}, geometry: site}}; }}", touching
    )
    answer = wait_checked(page)
    area = {c["key"]: c for c in answer["constraints"]}["designated.conservationArea"]
    assert area["status"] == "clear" and area["nearby"][0]["name"] == "Monkton Combe"
    nearby = page.locator(".rl-nearby-list")
    assert "Monkton Combe (conservation-area): it touches the site's edge only" in nearby.inner_text()
    assert page.locator("path.rl-overlay-nearby").count() >= 1
    assert (
        page.locator(
            ".leaflet-tooltip.rl-label-nearby", has_text="Nearby: Monkton Combe (conservation-area)"
        ).count()
        == 1
    )
    assert "dashed" in text_of(page, ".rl-legend"), "the legend says in words what the line styles mean"
    guarded_page.shoot("06-conservation-area-nearby")


def test_amend_mode_shows_added_and_removed_areas_and_sends_the_change_request(guarded_page):
    base = guarded_page.base
    site = mapping(box(-2.3614, 51.3812, -2.3606, 51.3817))
    created = httpx.post(
        f"{base}/v1/boundaries",
        json={"reference": "WIDGET-1", "local_authority": "Bath and North East Somerset", "site": site},
    )
    assert created.status_code == 201, created.text
    boundary = created.json()
    page = open_page(guarded_page, f"/officer/{boundary['id']}")
    wait_checked(page)
    page.wait_for_function(f"{WIDGET}.dataset.diff === 'unchanged'")
    assert page.locator("path.rl-current").count() == 1
    corners = page.locator(".leaflet-marker-icon.marker-icon:not(.marker-icon-middle)")
    boxes = [corners.nth(i).bounding_box() for i in range(corners.count())]
    north_east = max(boxes, key=lambda b: b["x"] - b["y"])
    x, y = north_east["x"] + north_east["width"] / 2, north_east["y"] + north_east["height"] / 2
    # Pull the north-east corner east and south: land is added on the east, removed on the north.
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 50, steps=10)
    page.mouse.up()
    page.wait_for_function(f"{WIDGET}.dataset.diff === 'changed'")
    assert page.locator("path.rl-added").count() == 1 and page.locator("path.rl-removed").count() == 1
    proposed = shape(page.evaluate(f"{WIDGET}.value")["geometry"])
    original = shape(site)
    added = abs(GEOD.geometry_area_perimeter(proposed.difference(original))[0])
    removed = abs(GEOD.geometry_area_perimeter(original.difference(proposed))[0])
    assert added > 10 and removed > 10
    diff = page.locator(".rl-diff").inner_text()
    assert f"{round(added):,} m²" in diff and f"{round(removed):,} m²" in diff
    assert page.locator(".leaflet-tooltip.rl-label", has_text=f"Added {round(added):,} m²").count() == 1
    assert page.locator(".leaflet-tooltip.rl-label", has_text=f"Removed {round(removed):,} m²").count() == 1
    wait_checked(page)
    assert "is in a Conservation Area" in text_of(page, ".rl-applies"), "the proposal is checked too"
    guarded_page.shoot("07-amend-added-removed")

    page.get_by_label("Reason for the change").fill("The red line must follow the garden wall")
    page.get_by_role("button", name="Send change request").click()
    page.wait_for_function(f"{WIDGET}.dataset.changeRequest !== undefined")
    request_id = page.evaluate(f"{WIDGET}.dataset.changeRequest")
    stored = httpx.get(f"{base}/v1/change-requests/{request_id}").json()
    assert stored["state"] == "open"
    assert stored["area_added_m2"] == pytest.approx(added, rel=1e-3, abs=0.01)
    assert stored["area_removed_m2"] == pytest.approx(removed, rel=1e-3, abs=0.01)
    assert page.locator("#token").inner_text().strip() not in ("", "(not returned)")
    guarded_page.shoot("08-amend-sent")


def test_a_self_intersecting_drawing_shows_the_message_and_runs_no_check(guarded_page):
    page = open_page(guarded_page)
    draw_by_mouse(page, [(-120, -80), (120, 80), (120, -80), (-120, 80)])
    assert wait_state(page, "invalid") == "invalid"
    checks_before = [r for r in guarded_page.requests if r.endswith("/v1/check")]
    page.wait_for_timeout(1200)  # three times the check's debounce
    messages = text_of(page, ".rl-messages")
    assert "crosses itself" in messages, messages
    assert "not valid" in text_of(page, ".rl-status")
    assert [r for r in guarded_page.requests if r.endswith("/v1/check")] == checks_before == []
    assert page.evaluate(f"{WIDGET}.constraints") is None
    assert page.locator(".rl-constraints li").count() == 0
    event = page.evaluate("window.widgetEvents.filter(e => e.type === 'boundarychange').pop().detail")
    assert event["validation"]["valid"] is False and event["area_m2"] is None
    guarded_page.shoot("09-self-intersection")


def test_the_request_guard_catches_a_request_off_the_origin(guarded_page):
    """Only a `tiles` attribute may send the browser elsewhere; the guard sees (and stops) it."""
    page = open_page(guarded_page)
    wait_state(page, "empty")
    assert guarded_page.blocked == [], "the widget alone stays on the service's origin"
    page.evaluate(
        """() => { const el = document.createElement('redline-map');
            el.setAttribute('tiles', 'https://tiles.example.org/{z}/{x}/{y}.png');
            el.setAttribute('centre', '-2.3610,51.3815'); el.setAttribute('zoom', '15');
            document.body.append(el); }"""
    )
    page.wait_for_function("document.querySelectorAll('.leaflet-tile').length > 0")
    page.wait_for_timeout(300)
    assert guarded_page.blocked and all(
        u.startswith("https://tiles.example.org/") for u in guarded_page.blocked
    )
    guarded_page.blocked.clear()  # seen and stopped: the fixture's own check would fail the test otherwise
