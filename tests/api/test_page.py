"""The web page at ``GET /`` in a real headless Chromium against a real uvicorn and worker: upload a
CSV, watch the bar reach 100 % over SSE, fetch the PDF; refresh re-attaches; nothing is injected."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page

from service.core.settings import Settings
from service.report.renderer import PdfRenderer
from service.store.jobs import JobStore
from tests.api.browsers import Watched, watched_page
from tests.api.events.support import LiveApi, fail, start, work_off_the_queue
from tests.conftest import create_key

CSV = "region,revenue,units\nnorth,1200.50,10\nsouth,980.25,8\nwest,700,5\n"


async def open_page(browser: Browser, live: LiveApi) -> Watched:
    return await watched_page(browser, live.url + "/")


async def bar_value(page: Page) -> int:
    value: int = await page.eval_on_selector("#bar", "bar => bar.value")
    return value


async def test_the_page_uploads_a_csv_watches_progress_to_100_and_fetches_the_pdf(
    browser: Browser, live: LiveApi, settings: Settings, renderer: PdfRenderer, tmp_path: Path
) -> None:
    key = await create_key(settings, "pat", "pro")
    source = tmp_path / "sales.csv"
    source.write_text(CSV)
    watched = await open_page(browser, live)
    page = watched.page
    await page.fill("#api-key", key)
    await page.set_input_files("#input-file", str(source))
    await page.click("#submit")
    await work_off_the_queue(settings, renderer)

    await page.wait_for_function("() => document.getElementById('bar').value === 100", timeout=15_000)
    await page.wait_for_selector("#download-pdf", state="visible", timeout=10_000)
    assert await page.text_content("#state") == "completed"
    assert "offline" in (await page.text_content("#message") or "")
    async with page.expect_download() as downloading:
        await page.click("#download-pdf")
    pdf = await (await downloading.value).path()
    assert (await asyncio.to_thread(Path(pdf).read_bytes)).startswith(b"%PDF")

    assert any("/api/inputs" in url for url in watched.requests)
    assert any("/events?token=" in url for url in watched.requests)  # progress came over SSE
    assert watched.problems == []  # no CSP violation, no script error
    assert await page.evaluate("localStorage.getItem('reportService.apiKey')") == key


async def test_a_refresh_reattaches_to_the_running_job(
    browser: Browser, live: LiveApi, settings: Settings
) -> None:
    key = await create_key(settings, "pat", "pro")
    watched = await open_page(browser, live)
    page = watched.page
    await page.fill("#api-key", key)
    await page.fill("#input-url", "https://example.com/data/sales.csv")
    await page.click("#submit")
    await page.wait_for_function("() => document.getElementById('job-id').textContent.length === 32")
    job_id = await page.text_content("#job-id")
    assert job_id is not None

    await page.reload()
    await page.wait_for_function(f"() => document.getElementById('job-id').textContent === '{job_id}'")
    assert await page.input_value("#api-key") == key
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        jobs = JobStore(redis)
        await start(jobs, job_id)
        await jobs.advance(job_id, stage="summarizing", progress=55)
        await page.wait_for_function("() => document.getElementById('bar').value === 55", timeout=10_000)
        assert await page.text_content("#stage") == "summarizing"
        await fail(jobs, job_id, 'boom <img src=x onerror="window.pwned=1"> & more')
    finally:
        await redis.aclose()
    await page.wait_for_function("() => document.getElementById('state').textContent === 'failed'")
    # Server text is shown as text: the markup in the reason is visible, never parsed.
    assert "<img src=x" in (await page.text_content("#message") or "")
    assert await page.evaluate("document.querySelectorAll('main img').length") == 0
    assert await page.evaluate("window.pwned === undefined")
    assert watched.problems == []


async def test_the_page_is_served_with_a_strict_content_security_policy(live: LiveApi) -> None:
    response = await live.client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert policy.count("'sha256-") == 2  # the page's one script and one style, by hash
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "rsk_" not in response.text.replace('placeholder="rsk_', "")  # no key baked in


async def test_the_page_needs_no_key_to_load(live: LiveApi) -> None:
    async with httpx.AsyncClient(base_url=live.url) as anonymous:
        assert (await anonymous.get("/")).status_code == 200
