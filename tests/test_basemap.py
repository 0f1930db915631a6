"""The background map: a tile archive served by redline, or an XYZ server proxied so its key stays hidden.

The tests make their own small archives (``tile_archive``: MBTiles as QGIS writes it, and PMTiles v3)
around the demo page's site in Bath, and run a fake upstream tile server on loopback that insists on its
key. The browser test opens the demo page on a service configured with the archive and checks that the
tiles came from loopback only and are on screen; its screenshot is ``test-artifacts/basemap/``.
"""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from api_fixtures import LiveServer, assert_problem, copy_cache, make_app
from browser_fixtures import *  # noqa: F403 - pytest fixtures: browser
from browser_fixtures import LOOPBACK, ROOT
from service_process import Service
from tile_archive import ATTRIBUTION, FILL, tile_png, tiles_for, write_mbtiles, write_pmtiles

from api.basemap import ArchiveTiles

# Around the demo page's sample site on Westgate Street, Bath.
BATH = (-2.3680, 51.3780, -2.3540, 51.3850)
ZOOMS = range(15, 19)
ARTIFACTS = ROOT / "test-artifacts" / "basemap"
KEY = "os-maps-api-key-that-must-stay-on-the-server"


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiles")
    mbtiles, pmtiles = folder / "bath.mbtiles", folder / "bath.pmtiles"
    assert write_mbtiles(mbtiles, BATH, ZOOMS) == write_pmtiles(pmtiles, BATH, ZOOMS) > 0
    return {"mbtiles": mbtiles, "pmtiles": pmtiles}


# --- archives ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mbtiles", "pmtiles"])
def test_an_archive_gives_each_tile_at_its_xyz_address(archives, kind):
    source = ArchiveTiles(archives[kind])
    assert (source.info.minzoom, source.info.maxzoom, source.info.attribution) == (15, 18, ATTRIBUTION)
    for z, x, y in list(tiles_for(BATH, ZOOMS))[::7]:
        assert source.tile(z, x, y) == tile_png(z, x, y)  # MBTiles' TMS rows are turned the right way up


@pytest.mark.parametrize("kind", ["mbtiles", "pmtiles"])
def test_the_service_serves_the_archive_and_describes_it_as_tilejson(archives, kind, sample_cache, tmp_path):
    app = make_app(copy_cache(sample_cache, tmp_path / "data"), basemap_archive=archives[kind])
    with LiveServer(app) as server:
        config = httpx.get(f"{server.url}/widget/basemap.json").json()
        assert config == {
            "tilejson": "3.0.0",
            "configured": True,
            "tiles": ["/basemap/{z}/{x}/{y}"],
            "minzoom": 15,
            "maxzoom": 18,
            "attribution": ATTRIBUTION,
        }
        z, x, y = next(iter(tiles_for(BATH, range(17, 18))))
        tile = httpx.get(f"{server.url}/basemap/{z}/{x}/{y}")
        assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
        assert tile.content == tile_png(z, x, y)
        assert "max-age" in tile.headers["cache-control"]
        assert_problem(httpx.get(f"{server.url}/basemap/17/0/0"), 404)  # the Pacific is not in Bath's archive
        assert_problem(httpx.get(f"{server.url}/basemap/3/9/0"), 404)  # off the tile grid


def test_without_a_basemap_the_service_says_how_to_configure_one(sample_cache, tmp_path):
    app = make_app(copy_cache(sample_cache, tmp_path / "data"))
    with LiveServer(app) as server:
        config = httpx.get(f"{server.url}/widget/basemap.json").json()
        assert config["configured"] is False
        assert "REDLINE_BASEMAP_ARCHIVE" in config["help"] and "REDLINE_BASEMAP_URL" in config["help"]
        assert_problem(httpx.get(f"{server.url}/basemap/17/64000/43000"), 404)


# --- the key-holding proxy -----------------------------------------------------------------------------
class Upstream:
    """An XYZ tile server on loopback that answers only with the right key, and counts requests."""

    def __init__(self):
        upstream = self
        self.hits: list[str] = []
        self.fail = False

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                parts = urlsplit(self.path)
                upstream.hits.append(parts.path)
                if parse_qs(parts.query).get("key") != [KEY]:
                    self.send_response(401)
                    self.end_headers()
                    return
                if upstream.fail:
                    self.send_response(500)
                    self.end_headers()
                    return
                _, _, z, x, y = parts.path.removesuffix(".png").split("/")
                body = tile_png(int(z), int(x), int(y))
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_an_xyz_server_is_proxied_and_cached_and_its_key_never_reaches_the_browser(sample_cache, tmp_path):
    upstream = Upstream()
    try:
        app = make_app(
            copy_cache(sample_cache, tmp_path / "data"),
            basemap_url=f"{upstream.url}/zxy/{{z}}/{{x}}/{{y}}.png?key={KEY}",
            basemap_attribution="Contains OS data © Crown copyright and database rights 2026",
        )
        with LiveServer(app) as server:
            config = httpx.get(f"{server.url}/widget/basemap.json")
            assert KEY not in config.text and config.json()["tiles"] == ["/basemap/{z}/{x}/{y}"]
            assert config.json()["attribution"].startswith("Contains OS data")
            first = httpx.get(f"{server.url}/basemap/17/64561/43716")
            again = httpx.get(f"{server.url}/basemap/17/64561/43716")
            assert first.status_code == again.status_code == 200
            assert first.content == again.content == tile_png(17, 64561, 43716)
            assert upstream.hits == ["/zxy/17/64561/43716.png"], "the second request came from the cache"
            assert KEY not in str(first.headers)
            upstream.fail = True
            down = assert_problem(httpx.get(f"{server.url}/basemap/17/64562/43716"), 502)
            assert KEY not in down["detail"] and upstream.url not in down["detail"]
    finally:
        upstream.close()


# --- in the browser ------------------------------------------------------------------------------------
def test_the_demo_page_shows_the_archive_as_its_background_map(browser, archives, sample_cache, tmp_path):
    data_dir = copy_cache(sample_cache, tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDLINE_")}
    env |= {
        "REDLINE_DATA_DIR": str(data_dir),
        "REDLINE_CHECK_PROCESS": "false",
        "REDLINE_BASEMAP_ARCHIVE": str(archives["pmtiles"]),
    }
    service = Service(env)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    requested, blocked, errors = [], [], []

    def guard(route):
        parts = urlsplit(route.request.url)
        if parts.scheme in ("http", "https") and parts.hostname not in LOOPBACK:
            blocked.append(route.request.url)
            return route.abort("blockedbyclient")
        requested.append(route.request.url)
        return route.continue_()

    context.route("**/*", guard)
    try:
        page = context.new_page()
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(service.url + "/")
        page.wait_for_function("document.querySelector('redline-map').dataset.basemap === 'on'", timeout=30_000)
        page.wait_for_function("document.querySelector('redline-map').dataset.state === 'checked'", timeout=30_000)
        page.wait_for_function(
            "document.querySelectorAll('img.leaflet-tile-loaded').length >= 4 && "
            "[...document.querySelectorAll('img.leaflet-tile')].every((t) => t.complete)",
            timeout=30_000,
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "demo-page-with-archive-basemap.png"), full_page=True)

        tiles = [u for u in requested if "/basemap/" in u]
        assert tiles and all(urlsplit(u).hostname == "127.0.0.1" for u in tiles)
        assert not blocked, blocked
        # The tiles are on screen, inside the map, and are the archive's (its fill colour, read back).
        seen = page.evaluate(
            """() => {
                const map = document.querySelector('.rl-map').getBoundingClientRect();
                return [...document.querySelectorAll('img.leaflet-tile-loaded')].map((img) => {
                    const r = img.getBoundingClientRect();
                    const canvas = document.createElement('canvas');
                    canvas.width = canvas.height = 256;
                    const g = canvas.getContext('2d');
                    g.drawImage(img, 0, 0);
                    return {
                        visible: r.right > map.left && r.left < map.right && r.bottom > map.top && r.top < map.bottom
                            && getComputedStyle(img).opacity === '1',
                        pixel: [...g.getImageData(32, 32, 1, 1).data].slice(0, 3),
                        src: img.src,
                    };
                });
            }"""
        )
        visible = [t for t in seen if t["visible"]]
        assert len(visible) >= 4, seen
        assert all(abs(t["pixel"][2] - FILL[2]) <= 1 and abs(t["pixel"][0] - FILL[0]) <= 6 for t in visible), visible
        attribution = page.locator(".leaflet-control-attribution").inner_text()
        assert ATTRIBUTION in attribution
        assert ATTRIBUTION in page.locator("#basemap-note").inner_text()
        assert not errors, errors
    finally:
        context.close()
        service.stop()
