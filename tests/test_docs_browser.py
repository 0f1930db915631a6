"""The API documentation page works on a network with no way out: every asset comes from the service itself."""

from __future__ import annotations

import httpx
import pytest
from browser_fixtures import *  # noqa: F403 - pytest fixtures: browser, live_service, guarded_page

pytestmark = pytest.mark.browser


def test_docs_page_names_only_the_services_own_assets(live_service):
    page = httpx.get(f"{live_service}/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    assert "/widget/vendor/swagger-ui-dist-5.32.0/swagger-ui-bundle.js" in page.text


def test_docs_render_every_operation_with_the_network_blocked_but_loopback(guarded_page):
    page = guarded_page.page
    page.goto(f"{guarded_page.base}/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    spec = httpx.get(f"{guarded_page.base}/openapi.json").json()
    operations = sum(
        1 for item in spec["paths"].values() for method in item if method in {"get", "post", "put", "patch", "delete"}
    )
    shown = page.locator(".opblock").count()
    assert shown == operations and operations > 10
    assert page.locator(".opblock-summary-path", has_text="/v1/check").count() >= 1
    # the operation opens and shows its example body, rendered from the service's own spec
    page.locator(".opblock-summary-path", has_text="/v1/check").first.click()
    page.wait_for_selector(".opblock.is-open .body-param__example, .opblock.is-open .microlight", timeout=10_000)
    guarded_page.shoot("docs")
    assert any(request.endswith("/openapi.json") for request in guarded_page.requests)
