"""Tighter reservations near the end of a budget: answered calls feed a short sample of output
counts per model and plan; a call whose worst case no longer fits may still run, holding what is
left with its max_tokens cut to it, when that covers the sample's 95th percentile. Whatever runs at
once, the usage plus what open calls hold never passes the budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from service.store import names
from service.store.calls import OUTPUT_SAMPLE_LEAST, OUTPUT_SAMPLE_SIZE, CallLedger, PaidCall
from service.store.connection import open_redis
from service.store.jobs import JobStore
from tests.store.test_calls import running_job

USAGE = names.usage("ann", "2026-12")
SAMPLE = names.output_sample("m", "free")
INPUT, MAX_TOKENS = 400, 1000


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_url, fail_fast=False)
    yield client
    await client.aclose()


def paid_call(job_id: str, call_id: str = "c1", usage: str = USAGE) -> PaidCall:
    return PaidCall(job_id, call_id, usage, input_price_nusd=0, output_price_nusd=0, sample_key=SAMPLE)


async def reserve(ledger: CallLedger, call: PaidCall, budget: int) -> tuple[bool, int]:
    granted = await ledger.reserve(
        call,
        input_tokens=INPUT,
        worst_case=INPUT + MAX_TOKENS,
        budget=budget,
        model="m",
        hold_key=call.usage_key,
    )
    return granted.granted, granted.max_tokens if granted.granted else granted.tokens_left


async def sample(redis: Redis) -> list[int]:
    values: list[bytes] = await redis.hvals(SAMPLE)  # type: ignore[misc]
    return sorted(int(value) for value in values)


def call_id(n: int) -> str:
    """Call ids are random hex (``secrets.token_hex``), which picks a call's slot in the sample:
    here the n-th call takes slot n modulo the sample's size."""
    return f"{n:06x}{'0' * 6}"


async def answered(jobs: JobStore, ledger: CallLedger, outputs: list[int]) -> None:
    """Other users' calls of the same model and plan that ran to their answer, each with its
    output count (counted in their own usage, not ann's)."""
    for n, output in enumerate(outputs):
        job_id = await running_job(jobs, f"sample-{n}")
        call = paid_call(job_id, call_id(n), usage=names.usage("others", "2026-12"))
        assert (await reserve(ledger, call, budget=0))[0]
        await ledger.record(call, INPUT, output, outcome="answered", sample=True)


async def test_answered_calls_feed_a_fixed_size_sample_once_each_and_cut_or_capped_ones_do_not(
    redis: Redis,
) -> None:
    jobs, ledger = JobStore(redis), CallLedger(redis)
    size = OUTPUT_SAMPLE_SIZE
    await answered(jobs, ledger, list(range(size + 10)))
    assert await sample(redis) == list(range(10, size + 10))  # the ten newest replaced ten old ones
    call = paid_call(await running_job(jobs, "saved-twice"), call_id(size + 10))  # slot 10
    await reserve(ledger, call, budget=0)
    for _ in range(2):  # a save retried after a Redis blip: one sample
        await ledger.record(call, INPUT, 7, outcome="answered", sample=True)
    cut = paid_call(await running_job(jobs, "cut"), call_id(size + 11))
    await reserve(ledger, cut, budget=0)
    await ledger.record(cut, INPUT, 5, outcome="cut", sample=True)
    capped = paid_call(await running_job(jobs, "capped"), call_id(size + 12))
    await reserve(ledger, capped, budget=0)
    await ledger.record(capped, INPUT, 3, outcome="answered", sample=False)
    assert await sample(redis) == [7, *range(11, size + 10)]


async def test_near_the_end_of_the_budget_a_call_holds_what_is_left_with_max_tokens_cut(
    redis: Redis,
) -> None:
    jobs, ledger = JobStore(redis), CallLedger(redis)
    await answered(jobs, ledger, [100] * 19 + [300] * 1)  # p95 of 20 answers: 100
    budget = INPUT + MAX_TOKENS - 1  # the worst case no longer fits
    granted, max_tokens = await reserve(ledger, paid_call(await running_job(jobs, "tight")), budget)
    margin = INPUT // 50 + 16  # the input count is the provider's estimate
    assert (granted, max_tokens) == (True, budget - INPUT - margin)
    assert (await jobs.usage("ann", "2026-12"))["reserved"] == budget  # all that is left, held


async def test_without_enough_answers_known_the_worst_case_rule_stands(redis: Redis) -> None:
    jobs, ledger = JobStore(redis), CallLedger(redis)
    await answered(jobs, ledger, [100] * (OUTPUT_SAMPLE_LEAST - 1))
    granted, left = await reserve(ledger, paid_call(await running_job(jobs, "unknown")), INPUT + 999)
    assert (granted, left) == (False, INPUT + 999)


async def test_a_call_refused_when_what_is_left_is_below_a_typical_answer(redis: Redis) -> None:
    jobs, ledger = JobStore(redis), CallLedger(redis)
    await answered(jobs, ledger, [600] * OUTPUT_SAMPLE_LEAST)
    granted, left = await reserve(ledger, paid_call(await running_job(jobs, "short")), INPUT + 600)
    assert (granted, left) == (False, INPUT + 600)
    assert (await jobs.usage("ann", "2026-12")).get("reserved", 0) == 0


async def test_many_calls_reserving_at_once_never_hold_more_than_the_budget(redis: Redis) -> None:
    """The attack at the ledger: 40 calls of one user reserve at once against a budget with room
    for a few worst cases; each may then spend up to what it holds (its cut max_tokens)."""
    jobs, ledger = JobStore(redis), CallLedger(redis)
    await answered(jobs, ledger, [50] * OUTPUT_SAMPLE_LEAST)
    budget = 3 * (INPUT + MAX_TOKENS) + 700
    calls = [paid_call(await running_job(jobs, f"rush-{n}"), f"c{n}") for n in range(40)]
    results = await asyncio.gather(*(reserve(ledger, call, budget) for call in calls))
    granted = [max_tokens for ok, max_tokens in results if ok]
    # Three worst cases, then one cut call in the 700 left; nothing else fits a typical answer.
    assert sorted(granted) == [700 - INPUT - (INPUT // 50 + 16)] + [MAX_TOKENS] * 3
    assert (await jobs.usage("ann", "2026-12"))["reserved"] == budget
    # Every granted call spends all it may (input + its max_tokens): the budget still holds.
    for call, (ok, max_tokens) in zip(calls, results, strict=True):
        if ok:
            await ledger.record(call, INPUT, max_tokens, outcome="answered", sample=False)
    usage = await jobs.usage("ann", "2026-12")
    assert usage["input_tokens"] + usage["output_tokens"] <= budget and usage["reserved"] == 0
