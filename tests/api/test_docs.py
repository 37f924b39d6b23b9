"""``GET /docs`` in a real Chromium: Swagger UI renders every operation of ``/openapi.json`` with
files the service serves itself (nothing from another origin), under a strict CSP that it obeys."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser
from swagger_ui_bundle import swagger_ui_path

from service.api.openapi.document import openapi_document
from service.app import ROUTES
from tests.api.browsers import watched_page
from tests.api.events.support import LiveApi


def operation_count() -> int:
    return sum(len(methods) for methods in openapi_document(ROUTES)["paths"].values())


async def test_the_docs_render_every_operation_from_this_origin_only(browser: Browser, live: LiveApi) -> None:
    watched = await watched_page(browser, live.url + "/docs")
    page = watched.page
    count = operation_count()
    await page.wait_for_function(
        f"() => document.querySelectorAll('.opblock').length === {count}", timeout=15_000
    )
    summaries = await page.eval_on_selector_all(
        ".opblock-summary-path", "nodes => nodes.map(node => node.getAttribute('data-path'))"
    )
    assert "/api/reports/{jobId}/events" in summaries and "/api/reports" in summaries
    await page.click("#operations-reports-createReport .opblock-summary")  # the body's schema opens
    await page.wait_for_selector("#operations-reports-createReport .body-param, .opblock-body", timeout=5_000)
    assert all(url.startswith(live.url + "/") or url.startswith("data:") for url in watched.requests)
    assert any(url.endswith("/openapi.json") for url in watched.requests)
    assert watched.problems == []  # no CSP violation, no script error


async def test_the_docs_page_is_served_under_a_strict_content_security_policy(live: LiveApi) -> None:
    response = await live.client.get("/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert "http" not in policy  # no other origin, no CDN
    assert policy.count("'sha256-") == 1  # the one inline script, by hash


async def test_only_the_pages_own_files_of_the_bundle_are_served(live: LiveApi) -> None:
    script = await live.client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert script.content == (Path(swagger_ui_path) / "swagger-ui-bundle.js").read_bytes()
    for name in ("index.html", "swagger-ui-bundle.js.map", "..%2F__init__.py", "%2E%2E"):
        refused = await live.client.get(f"/docs/assets/{name}")
        assert refused.status_code == 404 and refused.json()["error"] == "not_found", name
