"""The page in a real Chromium against a real uvicorn and Redis: the model's text appears as it
streams (``text`` events appended to the job's Redis stream, as the worker will) and starts over when
a retried call begins again at offset 0; the caller's recent reports from the listing, page by page;
usage against the budget as a bar; cancel buttons; a listed job followed with the key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page

from service.core.settings import Settings
from service.report.renderer import PdfRenderer
from service.store import names
from service.store.jobs import JobStore
from tests.api.browsers import Watched, watched_page
from tests.api.events.support import LiveApi, advance_text, cancel, complete, start
from tests.conftest import bearer, create_key, make_settings, run_burst_worker, submit, worker_deps
from tests.fakes.anthropic import FakeAnthropic

URL = "https://example.com/data/sales.csv"
CSV = b"region,revenue,units\nnorth,1200.50,10\nsouth,980.25,8\n"


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def signed_in(browser: Browser, live: LiveApi, key: str) -> Watched:
    watched = await watched_page(browser, live.url + "/")
    await watched.page.fill("#api-key", key)
    return watched


async def text_of(page: Page, selector: str) -> str:
    return await page.text_content(selector) or ""


async def wait_for_text(page: Page, selector: str, expected: str) -> None:
    await page.wait_for_function(
        "([selector, expected]) => document.querySelector(selector).textContent === expected",
        arg=[selector, expected],
        timeout=10_000,
    )


async def submitted_from_the_page(page: Page) -> str:
    await page.fill("#input-url", URL)
    await page.click("#submit")
    await page.wait_for_function("() => document.getElementById('job-id').textContent.length === 32")
    return await text_of(page, "#job-id")


async def test_the_answer_appears_as_the_model_writes_it_and_starts_over_on_a_retry(
    browser: Browser, live: LiveApi, settings: Settings, redis: aioredis.Redis
) -> None:
    watched = await signed_in(browser, live, await create_key(settings, "tess", "pro"))
    page = watched.page
    job_id = await submitted_from_the_page(page)
    await start(JobStore(redis), job_id, stage="summarizing", progress=30)
    await wait_for_text(page, "#state", "active")  # the page follows the stream: what comes next reaches it
    assert await page.is_hidden("#answer-box")
    await advance_text(redis, job_id, 0, "Revenue rose ")
    await advance_text(redis, job_id, 13, "12% in the north.")
    await wait_for_text(page, "#answer", "Revenue rose 12% in the north.")
    await advance_text(redis, job_id, 0, "Sales")  # the call was retried: its answer starts over
    await wait_for_text(page, "#answer", "Sales")
    await advance_text(redis, job_id, 5, " <b>fell</b> & rose.")
    await wait_for_text(page, "#answer", "Sales <b>fell</b> & rose.")  # text, never markup
    assert await page.evaluate("document.querySelectorAll('#answer b').length") == 0
    assert await page.is_hidden("#answer-gap")
    await advance_text(redis, job_id, 400, "…and the end.")  # deltas this page never saw
    await wait_for_text(page, "#answer", "…and the end.")
    assert await page.is_visible("#answer-gap")
    # The PDF the page fetches when the job completes (the store-level helper names this key).
    (settings.storage_root / "reports").mkdir(parents=True)
    (settings.storage_root / "reports" / "x.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    await complete(JobStore(redis), job_id)
    await wait_for_text(page, "#state", "completed")
    await page.wait_for_selector("#download-pdf", state="visible")
    assert await text_of(page, "#answer") == "…and the end."  # the finished answer stays
    assert watched.problems == []


async def test_a_restart_event_clears_the_streamed_answer_and_says_why(
    browser: Browser, live: LiveApi, settings: Settings, redis: aioredis.Redis
) -> None:
    watched = await signed_in(browser, live, await create_key(settings, "rhea", "pro"))
    page = watched.page
    job_id = await submitted_from_the_page(page)
    await start(JobStore(redis), job_id, stage="summarizing", progress=30)
    await wait_for_text(page, "#state", "active")
    await advance_text(redis, job_id, 0, "Revenue rose 12%")
    await wait_for_text(page, "#answer", "Revenue rose 12%")
    reason = "the model provider failed mid-answer (overloaded_error)"
    restart = orjson.dumps({"offset": 0, "reason": reason}).decode()
    await redis.xadd(names.job_events(job_id), {"event": "restart", "data": restart})
    await wait_for_text(page, "#answer", "")  # the cut answer is gone at once, before new text
    assert await page.is_hidden("#answer-box")
    assert reason in await text_of(page, "#answer-restart")
    assert await page.is_visible("#answer-restart")
    await advance_text(redis, job_id, 0, "Sales fell")
    await wait_for_text(page, "#answer", "Sales fell")
    assert await page.is_hidden("#answer-restart") and await page.is_hidden("#answer-gap")
    assert watched.problems == []


async def test_the_recent_reports_are_listed_newest_first_page_by_page(
    browser: Browser, live: LiveApi, settings: Settings, redis: aioredis.Redis
) -> None:
    key = bearer(await create_key(settings, "lena", "pro"))
    job_ids = []
    for _ in range(12):
        await asyncio.sleep(0.002)  # a millisecond of its own: newest first is by creation time
        job_ids.append((await submit(live.client, key, URL))["jobId"])
    await start(JobStore(redis), job_ids[-1])
    await complete(JobStore(redis), job_ids[-1])
    watched = await signed_in(browser, live, key["Authorization"].removeprefix("Bearer "))
    page = watched.page
    await page.wait_for_function("() => document.querySelectorAll('#reports tr').length === 10")
    listed = await page.eval_on_selector_all("#reports tr", "rows => rows.map(row => row.dataset.jobId)")
    assert listed == job_ids[::-1][:10]
    states = await page.eval_on_selector_all(
        "#reports .state", "cells => cells.map(cell => cell.textContent)"
    )
    assert states == ["completed"] + ["queued"] * 9
    assert await page.locator("#reports tr").first.locator(".cancel").count() == 0  # finished: no cancel
    await page.click("#more-reports")
    await page.wait_for_function("() => document.querySelectorAll('#reports tr').length === 12")
    listed = await page.eval_on_selector_all("#reports tr", "rows => rows.map(row => row.dataset.jobId)")
    assert listed == job_ids[::-1] and await page.is_hidden("#more-reports")
    assert watched.problems == []


async def test_usage_is_a_bar_of_the_budget_as_the_api_counts_it(
    browser: Browser,
    live: LiveApi,
    settings: Settings,
    renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:
    key = bearer(await create_key(settings, "uma", "pro"))
    upload = await live.client.post("/api/inputs", content=CSV, headers={**key, "Content-Type": "text/csv"})
    await submit(live.client, key, upload.json()["inputDataUrl"])
    # A real worker and the real SDK against the fake Anthropic: the tokens it bills are counted.
    paid = make_settings(settings.redis_url, tmp_path / "data", anthropic_api_key="sk-ant-test",
                         anthropic_base_url=fake_anthropic.base_url)  # fmt: skip
    async with worker_deps(paid, renderer) as deps:
        await run_burst_worker(paid, deps)
    await submit(live.client, key, URL)  # one queued: its reservation is held back
    usage = (await live.client.get("/api/usage", headers=key)).json()
    assert usage["reports"] == 1 and usage["tokensUsed"] > 0 and usage["reservedTokens"] > 0
    watched = await signed_in(browser, live, key["Authorization"].removeprefix("Bearer "))
    page = watched.page
    await page.wait_for_selector("#usage", state="visible")
    bar = await page.eval_on_selector("#usage-bar", "bar => [bar.value, bar.max]")
    assert bar == [usage["tokensUsed"], usage["budget"]]
    text = await text_of(page, "#usage-text")
    for figure in ("tokensUsed", "budget", "reservedTokens", "budgetRemaining"):
        assert f"{usage[figure]:,}" in text, (figure, text)
    assert f"in {usage['period']}" in text and "(1 report," in text
    percent = f"{round(100 * usage['tokensUsed'] / usage['budget'])}%"
    assert await text_of(page, "#usage-percent") == percent
    assert watched.problems == []


async def test_cancel_buttons_end_a_listed_job_and_the_job_shown(
    browser: Browser, live: LiveApi, settings: Settings, redis: aioredis.Redis
) -> None:
    key = bearer(await create_key(settings, "cato", "pro"))
    listed = (await submit(live.client, key, URL))["jobId"]
    watched = await signed_in(browser, live, key["Authorization"].removeprefix("Bearer "))
    page = watched.page
    shown = await submitted_from_the_page(page)
    await start(JobStore(redis), shown)
    await page.wait_for_function("() => document.querySelectorAll('#reports .cancel').length === 2")
    await page.click(f"#reports tr[data-job-id='{listed}'] .cancel")
    await wait_for_text(page, f"#reports tr[data-job-id='{listed}'] .state", "cancelled")
    assert (await live.client.get(f"/api/reports/{listed}", headers=key)).json()["state"] == "cancelled"
    await page.click("#cancel")  # the job being watched, active: aborted
    await wait_for_text(page, "#state", "cancelled")
    await wait_for_text(page, "#message", "Cancelled.")
    assert (await live.client.get(f"/api/reports/{shown}", headers=key)).json()["state"] == "cancelled"
    assert await page.is_hidden("#cancel")
    await page.wait_for_function("() => document.querySelectorAll('#reports .cancel').length === 0")
    assert watched.problems == []


async def test_a_listed_job_is_followed_with_the_key_and_its_text_shown(
    browser: Browser, live: LiveApi, settings: Settings, redis: aioredis.Redis
) -> None:
    key = bearer(await create_key(settings, "vic", "pro"))
    job_id = (await submit(live.client, key, URL))["jobId"]  # from elsewhere: the page has no eventsUrl
    watched = await signed_in(browser, live, key["Authorization"].removeprefix("Bearer "))
    page = watched.page
    await page.click(f"#reports tr[data-job-id='{job_id}'] .watch")
    await wait_for_text(page, "#job-id", job_id)
    jobs = JobStore(redis)
    await start(jobs, job_id)
    await jobs.advance(job_id, stage="summarizing", progress=45)
    await page.wait_for_function("() => document.getElementById('bar').value === 45", timeout=10_000)
    await advance_text(redis, job_id, 0, "North leads.")
    await wait_for_text(page, "#answer", "North leads.")
    await cancel(jobs, job_id)
    await wait_for_text(page, "#state", "cancelled")
    events = [url for url in watched.requests if url.endswith(f"/api/reports/{job_id}/events")]
    assert events and not any("token=" in url for url in watched.requests)
    assert watched.problems == []


async def test_the_page_answers_an_unknown_key_with_the_apis_message(
    browser: Browser, live: LiveApi, settings: Settings
) -> None:
    watched = await signed_in(browser, live, "rsk_" + "0" * 40)
    await wait_for_text(watched.page, "#error", "the API key is unknown or revoked")
    assert await watched.page.is_hidden("#usage") and await watched.page.is_hidden("#recent")
    async with httpx.AsyncClient(base_url=live.url) as anonymous:  # and the page itself needs none
        assert (await anonymous.get("/")).status_code == 200
