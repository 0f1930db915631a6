"""The widget on a service that has API keys: an auth failure is reported as one, and a key makes it work.

The service runs on loopback with keys in its key store. The demo page without a key must say that it
is not authorised (never that the boundary is invalid); given a ``check`` key it validates and checks.
The officer page loads and amends a stored boundary once given an officer key. No panel ever prints a
literal ``null``. Screenshots go to ``test-artifacts/widget-keys/``.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import httpx
import pytest
from api_fixtures import BATH_SITE, copy_cache
from browser_fixtures import *  # noqa: F403 - pytest fixtures: browser
from browser_fixtures import LOOPBACK, ROOT
from service_process import Service

from api.keys import KeyStore

pytestmark = pytest.mark.browser
ARTIFACTS = ROOT / "test-artifacts" / "widget-keys"
WIDGET = "document.querySelector('redline-map')"


@pytest.fixture(scope="module")
def keyed_service(sample_cache, tmp_path_factory):
    """One service for the module's tests. The demo test sends keys the service does not know, which count
    against this address's failed authentications: the allowance is raised so that the officer test never
    depends on the order the tests run in (test_rate_limits is where that limit is tested)."""
    data_dir = copy_cache(sample_cache, tmp_path_factory.mktemp("widget-keys") / "data")
    keys = KeyStore(data_dir)
    _, check_key = keys.create("demo page", ["check"])
    _, officer_key = keys.create("planning officer", ["officer", "check"])
    _, planx_key = keys.create("planx", ["boundary:write"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDLINE_")}
    env |= {"REDLINE_DATA_DIR": str(data_dir), "REDLINE_CHECK_PROCESS": "false", "REDLINE_FAILED_AUTH_BURST": "1000"}
    service = Service(env)
    try:
        yield service.url, {"check": check_key, "officer": officer_key, "planx": planx_key}
    finally:
        service.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    blocked, errors = [], []

    def guard(route):
        if urlsplit(route.request.url).hostname not in LOOPBACK | {None}:
            blocked.append(route.request.url)
            return route.abort("blockedbyclient")
        return route.continue_()

    context.route("**/*", guard)
    page = context.new_page()
    page.on("pageerror", lambda err: errors.append(str(err)))
    yield page
    context.close()
    assert not blocked and not errors, (blocked, errors)


def shoot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def state(page):
    return page.evaluate(f"{WIDGET}.dataset.state")


def test_the_demo_page_without_a_key_says_it_is_not_authorised_and_works_once_given_one(keyed_service, page):
    base, keys = keyed_service
    page.goto(base + "/")
    page.wait_for_function(f"{WIDGET} && {WIDGET}.dataset.state === 'unauthorised'", timeout=30_000)
    messages = page.locator(".rl-messages").inner_text()
    assert "Not authorised" in messages and "API key" in messages
    assert "not valid" not in messages.lower()
    assert "not valid" not in page.locator(".rl-status").inner_text().lower()
    shoot(page, "01-demo-without-key")

    page.get_by_label("API key with scope").fill(keys["check"])
    page.get_by_role("button", name="Use key").click()
    page.wait_for_function(f"{WIDGET}.dataset.state === 'checked'", timeout=30_000)
    page.wait_for_function(f"{WIDGET}.dataset.overlays !== undefined", timeout=30_000)
    panel = page.locator(".rl-panel").inner_text()
    assert "Area 3,098 m²" in panel and "Planning constraints" in panel
    assert "null" not in panel and "undefined" not in panel
    assert "null" not in page.locator(".rl-status").inner_text()
    shoot(page, "02-demo-with-key")

    # A key the service does not know is an auth failure too, named as such.
    page.get_by_label("API key with scope").fill("rl_not-a-key")
    page.get_by_role("button", name="Use key").click()
    page.wait_for_function(f"{WIDGET}.dataset.state === 'unauthorised'", timeout=30_000)
    assert "not recognised" in page.locator(".rl-messages").inner_text()


def test_the_officer_page_loads_and_amends_with_an_officer_key(keyed_service, page):
    base, keys = keyed_service
    created = httpx.post(
        f"{base}/v1/boundaries",
        json={"reference": "KEYS-1", "local_authority": "Bath and North East Somerset", "site": BATH_SITE},
        headers={"Authorization": f"Bearer {keys['planx']}"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    boundary_id = created.json()["id"]
    page.goto(f"{base}/officer/{boundary_id}")
    page.wait_for_function(f"{WIDGET} && {WIDGET}.dataset.state === 'error'", timeout=30_000)
    assert "API key" in page.locator(".rl-messages").inner_text()

    page.get_by_label("Officer API key").fill(keys["officer"])
    page.get_by_role("button", name="Use key and reload").click()
    page.wait_for_function(f"{WIDGET}.dataset.state === 'checked'", timeout=30_000)
    page.wait_for_function(f"{WIDGET}.dataset.diff === 'unchanged'", timeout=30_000)
    assert page.locator("path.rl-current").count() == 1
    assert "null" not in page.locator(".rl-panel").inner_text()
    shoot(page, "03-officer-with-key")
