"""Errors after the 200: an ``overloaded_error`` event or a dropped connection in the middle of a
streamed answer is retried without spending an attempt (up to ``MID_ANSWER_RETRIES`` per job), the
cut call is counted in usage as far as it was billed, and the job's events say ``restart`` before
the next call's text begins again at offset 0. The fake Anthropic, through the real SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from service.report.renderer import PdfRenderer
from service.store import names
from service.store.calls import CallLedger
from tests.conftest import (
    InputFiles,
    api_with,
    bearer,
    create_key,
    make_settings,
    run_burst_worker,
    submit,
    worker_deps,
)
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.anthropic_errors import Disconnect, StreamFailure
from tests.worker.support import CSV, status

LONG_ANSWER = "# Report\n\n" + "Revenue grew in every region this quarter. " * 120  # ~5,000 characters
# 120 chunks of 16 characters at 10 ms: a cut comes after the first recorded text (once a second).
SHOWN_CHUNKS = 120


async def job_events(redis_url: str, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries = await client.xrange(names.job_events(job_id))
    finally:
        await client.aclose()
    return [(fields["event"], orjson.loads(fields["data"])) for _, fields in entries]


async def test_cut_answers_restart_without_spending_attempts_and_every_cut_call_is_counted(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:  # fmt: skip
    fake_anthropic.reply, fake_anthropic.chunk_delay = (lambda body: LONG_ANSWER), 0.01
    fake_anthropic.fail_next(StreamFailure(after_chunks=SHOWN_CHUNKS), Disconnect(after_chunks=SHOWN_CHUNKS))
    settings = make_settings(
        redis_url, tmp_path / "data", anthropic_api_key="sk-ant-test",
        anthropic_base_url=fake_anthropic.base_url, max_attempts=1,
    )  # fmt: skip
    async with api_with(settings) as api:
        key = bearer(await create_key(settings, "rita", "pro"))
        job_id = (await submit(api, key, inputs.add("a.csv", CSV)))["jobId"]
        async with worker_deps(settings, renderer) as deps:
            await run_burst_worker(settings, deps)
            ledger = await CallLedger(deps.jobs._redis).entries(job_id)
        done = await status(api, key, job_id)
        spent: dict[str, Any] = (await api.get("/api/usage", headers=key)).json()
    # One attempt allowed, two cuts: neither spent it.
    assert (done["state"], done["attempts"]) == ("completed", 1)
    assert fake_anthropic.call_count == 3
    assert sorted(entry["outcome"] for entry in ledger.values()) == ["answered", "cut", "cut"]
    billed_input, billed_output = fake_anthropic.billed_tokens
    assert spent["reports"] == 1 and spent["inputTokens"] == billed_input  # the cut calls' input too
    assert billed_output - 16 <= spent["outputTokens"] <= billed_output  # what had streamed of each
    assert spent["reservedTokens"] == 0

    events = await job_events(redis_url, job_id)
    restarts = [n for n, (name, _) in enumerate(events) if name == "restart"]
    assert len(restarts) == 2
    assert "overloaded_error" in events[restarts[0]][1]["reason"]
    assert "dropped" in events[restarts[1]][1]["reason"]
    for at in restarts:
        assert events[at][1]["offset"] == 0
        shown_before = [data for name, data in events[:at] if name == "text"]
        assert shown_before, "the cut answer had shown text, which the restart drops"
        first_after = next(data for name, data in events[at:] if name == "text")
        assert first_after["offset"] == 0  # the new call's text starts over


async def test_past_mid_answer_retries_a_cut_spends_an_attempt_so_a_cutting_provider_cannot_bill_forever(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:  # fmt: skip
    fake_anthropic.fail_next(*[Disconnect(after_chunks=1)] * 5)
    settings = make_settings(
        redis_url, tmp_path / "data", anthropic_api_key="sk-ant-test",
        anthropic_base_url=fake_anthropic.base_url, max_attempts=2, mid_answer_retries=1,
    )  # fmt: skip
    async with api_with(settings) as api:
        key = bearer(await create_key(settings, "sam", "pro"))
        job_id = (await submit(api, key, inputs.add("a.csv", CSV)))["jobId"]
        async with worker_deps(settings, renderer) as deps:
            await run_burst_worker(settings, deps)
        failed = await status(api, key, job_id)
        spent: dict[str, Any] = (await api.get("/api/usage", headers=key)).json()
    # One free restart, then two attempts: three paid calls, all counted, and the job fails.
    assert (failed["state"], failed["attempts"]) == ("failed", 2)
    assert isinstance(failed["error"], dict) and failed["error"]["code"] == "provider_unavailable"
    assert fake_anthropic.call_count == 3
    assert spent["inputTokens"] == fake_anthropic.billed_tokens[0] > 0
