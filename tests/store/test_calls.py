"""The call ledger on its own: a crash after any record loses nothing recorded and counts nothing
twice; a call whose worker died before its first record is counted its whole input."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import orjson
import pytest
from redis.asyncio import Redis

from service.store import names
from service.store.calls import LOST_REASON, CallLedger, PaidCall
from service.store.connection import open_redis
from service.store.job_types import NewJob, StartOutcome, StartPolicy, SubmitPolicy
from service.store.jobs import JobStore, derive_job_id, member_of
from tests.store.support import cancel, claim, record_of

OPEN = SubmitPolicy(per_minute=0, burst=1, budget=0, reserve=0, period="2026-12")
# A lease of a millisecond: the next start finds the worker of the last one dead.
START = StartPolicy(max_crashes=5, cap_free=0, cap_pro=0, lease_ms=1)
USAGE = names.usage("ann", "2026-12")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_url, fail_fast=False)
    yield client
    await client.aclose()


async def running_job(jobs: JobStore, name: str) -> str:
    job_id = derive_job_id("ann", name)
    await jobs.submit(NewJob(job_id, "ann", "pro", "https://x/y.csv", "m", "fp"), OPEN, keep_ms=0, score_ms=1)
    assert (await claim(jobs, job_id, START)).proceed
    return job_id


async def restarted(jobs: JobStore, ledger: CallLedger, job_id: str) -> None:
    """The job's worker died: its lease runs out and the next worker claims it."""
    await asyncio.sleep(0.01)
    outcome = await claim(jobs, job_id, START, ledger=ledger)
    assert outcome.proceed and outcome.restarted and outcome.lost_calls == ("c1",)


async def reserved(ledger: CallLedger, job_id: str, input_tokens: int = 400) -> PaidCall:
    call = PaidCall(job_id, "c1", USAGE, input_price_nusd=1000, output_price_nusd=5000)
    granted = await ledger.reserve(
        call, input_tokens=input_tokens, worst_case=input_tokens + 1000, budget=0, model="m", hold_key=USAGE
    )
    assert granted.granted
    return call


async def test_records_count_the_difference_so_a_repeated_record_counts_nothing_twice(redis: Redis) -> None:
    jobs, ledger = JobStore(redis), CallLedger(redis)
    call = await reserved(ledger, await running_job(jobs, "repeat"))
    for output in (10, 50, 50, 120):
        await ledger.record(call, 400, output, request_id="req_1")
    assert (await jobs.usage("ann", "2026-12")).get("input_tokens", 0) == 0  # counted when it closes
    for _ in range(2):
        await ledger.record(call, 400, 120, request_id="req_1", outcome="answered")
    usage = await jobs.usage("ann", "2026-12")
    assert (usage["input_tokens"], usage["output_tokens"]) == (400, 120)
    assert usage["reserved"] == 0  # the hold went back when the call closed
    assert usage["cost_nusd"] == 400 * 1000 + 120 * 5000


async def test_a_worker_death_after_records_counts_what_they_said_and_frees_the_hold(redis: Redis) -> None:
    jobs, ledger = JobStore(redis), CallLedger(redis)
    job_id = await running_job(jobs, "died")
    call = await reserved(ledger, job_id)
    await ledger.record(call, 400, 80)
    await restarted(jobs, ledger, job_id)
    usage = await jobs.usage("ann", "2026-12")
    assert (usage["input_tokens"], usage["output_tokens"], usage["reserved"]) == (400, 80, 0)
    assert (await ledger.entries(job_id))["c1"]["outcome"] == "lost"


async def test_a_worker_death_before_any_record_counts_the_whole_input(redis: Redis) -> None:
    jobs, ledger = JobStore(redis), CallLedger(redis)
    job_id = await running_job(jobs, "silent")
    await reserved(ledger, job_id, input_tokens=333)
    await restarted(jobs, ledger, job_id)
    usage = await jobs.usage("ann", "2026-12")
    assert (usage["input_tokens"], usage.get("output_tokens", 0), usage["reserved"]) == (333, 0, 0)


async def test_a_reservation_that_does_not_fit_the_budget_is_refused_and_holds_nothing(redis: Redis) -> None:
    jobs, ledger = JobStore(redis), CallLedger(redis)
    job_id = await running_job(jobs, "too-big")
    call = PaidCall(job_id, "c1", USAGE, input_price_nusd=0, output_price_nusd=0)
    refused = await ledger.reserve(
        call, input_tokens=900, worst_case=1900, budget=1500, model="m", hold_key=USAGE
    )
    assert (refused.granted, refused.tokens_left) == (False, 1500)
    assert (await jobs.usage("ann", "2026-12")).get("reserved", 0) == 0
    assert await ledger.entries(job_id) == {}


async def test_a_call_that_showed_text_then_lost_its_worker_makes_the_next_call_say_restart(
    redis: Redis,
) -> None:
    jobs, ledger = JobStore(redis), CallLedger(redis)
    job_id = await running_job(jobs, "lost-text")
    call = await reserved(ledger, job_id)
    await ledger.record(call, 400, 30, text="Revenue rose")  # the page shows this much
    await restarted(jobs, ledger, job_id)
    again = PaidCall(job_id, "c2", USAGE, input_price_nusd=1000, output_price_nusd=5000)
    await ledger.reserve(again, input_tokens=400, worst_case=1400, budget=0, model="m", hold_key=USAGE)
    events = [fields for _, fields in await redis.xrange(names.job_events(job_id))]
    names_in_order = [fields["event"] for fields in events]
    assert names_in_order.count("restart") == 1
    restart = orjson.loads(events[names_in_order.index("restart")]["data"])
    assert restart == {"offset": 0, "reason": LOST_REASON}
    assert names_in_order.index("text") < names_in_order.index("restart")


async def cached_call(ledger: CallLedger, job_id: str) -> PaidCall:
    """A call whose input is priced as Opus-class models price it: a cache read at a tenth of the
    input price, a write at 1.25 times."""
    call = PaidCall(
        job_id, "c1", USAGE, input_price_nusd=1000, output_price_nusd=5000,
        cache_read_price_nusd=100, cache_write_price_nusd=1250,
    )  # fmt: skip
    granted = await ledger.reserve(
        call, input_tokens=400, worst_case=1400, budget=0, model="m", hold_key=USAGE
    )
    assert granted.granted
    return call


async def test_cache_reads_and_writes_are_counted_once_and_priced_at_their_own_rates(redis: Redis) -> None:
    jobs, ledger = JobStore(redis), CallLedger(redis)
    call = await cached_call(ledger, await running_job(jobs, "cached"))
    # 400 input tokens billed: 100 uncached, 250 read from the cache, 50 written to it.
    for output in (10, 60, 60):
        await ledger.record(call, 400, output, cache_read_tokens=250, cache_write_tokens=50)
    for _ in range(2):  # a close sent twice (a retried save) counts nothing twice
        await ledger.record(call, 400, 90, outcome="answered", cache_read_tokens=250, cache_write_tokens=50)
    usage = await jobs.usage("ann", "2026-12")
    assert (usage["input_tokens"], usage["output_tokens"]) == (400, 90)
    assert (usage["cache_read_tokens"], usage["cache_write_tokens"]) == (250, 50)
    assert usage["cost_nusd"] == 100 * 1000 + 250 * 100 + 50 * 1250 + 90 * 5000


async def test_a_worker_death_after_a_record_with_cache_counts_keeps_them_counted_once(redis: Redis) -> None:
    jobs, ledger = JobStore(redis), CallLedger(redis)
    job_id = await running_job(jobs, "cached-died")
    call = await cached_call(ledger, job_id)
    await ledger.record(call, 400, 20, cache_read_tokens=0, cache_write_tokens=300)  # then it dies
    await restarted(jobs, ledger, job_id)  # the next worker closes it as far as it was recorded
    usage = await jobs.usage("ann", "2026-12")
    assert (usage["cache_write_tokens"], usage["cost_nusd"]) == (300, 100 * 1000 + 300 * 1250 + 20 * 5000)
    # The close its worker sent before it died arrives late: it corrects the count, never doubles it.
    await ledger.record(call, 400, 30, outcome="cut", cache_read_tokens=0, cache_write_tokens=300)
    usage = await jobs.usage("ann", "2026-12")
    assert (usage["input_tokens"], usage["output_tokens"], usage["reserved"]) == (400, 30, 0)
    assert (usage["cache_read_tokens"], usage["cache_write_tokens"]) == (0, 300)
    assert usage["cost_nusd"] == 100 * 1000 + 300 * 1250 + 30 * 5000
    entry = (await ledger.entries(job_id))["c1"]
    assert (entry["outcome"], entry["cache_write"], entry["counted_cw"]) == ("lost", 300, 300)


async def test_a_call_without_cache_prices_prices_its_cached_input_as_uncached(redis: Redis) -> None:
    jobs, ledger = JobStore(redis), CallLedger(redis)
    call = await reserved(ledger, await running_job(jobs, "no-cache-prices"))
    await ledger.record(call, 400, 10, outcome="answered", cache_read_tokens=200)
    usage = await jobs.usage("ann", "2026-12")
    assert (usage["cache_read_tokens"], usage["cost_nusd"]) == (200, 400 * 1000 + 10 * 5000)


# A worker presumed lost may be alive after all (its lease lapsed under load, or a cancel reached it
# late): its own close of a call can land after the next worker picked the job up, and before or
# after that worker's close of the call as lost. The steps below are driven in each order, with the
# lease already run out at every start (no waiting on a clock).
LAPSED = StartPolicy(max_crashes=5, cap_free=0, cap_pro=0, lease_ms=0)
COUNTERS = ("input_tokens", "output_tokens", "cost_nusd", "cache_read_tokens", "cache_write_tokens")


async def lapsing_job(jobs: JobStore, name: str) -> str:
    """A running job whose lease has run out already: any start finds its worker presumed dead."""
    job_id = derive_job_id("ann", name)
    await jobs.submit(NewJob(job_id, "ann", "pro", "https://x/y.csv", "m", "fp"), OPEN, keep_ms=0, score_ms=1)
    assert (await jobs.start(member_of(await record_of(jobs, job_id)), LAPSED)).proceed
    return job_id


async def picked_up(jobs: JobStore, job_id: str) -> StartOutcome:
    """START as the next worker sends it, without its close of the lost calls (that comes later)."""
    outcome = await jobs.start(member_of(await record_of(jobs, job_id)), LAPSED)
    assert outcome.lost_calls == ("c1",)
    return outcome


async def counted(jobs: JobStore) -> dict[str, int]:
    usage = await jobs.usage("ann", "2026-12")
    return {name: usage.get(name, 0) for name in (*COUNTERS, "reserved")}


async def test_the_original_workers_close_landing_after_the_pick_up_is_not_undone_by_the_lost_close(
    redis: Redis,
) -> None:
    jobs, ledger = JobStore(redis), CallLedger(redis)
    job_id = await lapsing_job(jobs, "late-close")
    call = await reserved(ledger, job_id)
    await ledger.record(call, 400, 80)
    again = await picked_up(jobs, job_id)  # its record: the call at 400 in, 80 out
    await ledger.record(call, 400, 200, outcome="cancelled")  # the first worker was not dead after all
    assert (await counted(jobs))["output_tokens"] == 200
    await ledger.close_lost(job_id, again.record, again.lost_calls)
    usage = await counted(jobs)
    assert (usage["input_tokens"], usage["output_tokens"], usage["reserved"]) == (400, 200, 0)
    assert usage["cost_nusd"] == 400 * 1000 + 200 * 5000
    entry = (await ledger.entries(job_id))["c1"]
    assert (entry["output"], entry["counted_out"], entry["outcome"]) == (200, 200, "cancelled")


@pytest.mark.parametrize("order", list(itertools.permutations(("own", "restart", "end"))))
async def test_three_closes_of_one_call_in_any_order_count_it_once_and_never_lower_the_usage(
    redis: Redis, order: tuple[str, ...]
) -> None:
    """The call's own worker's close, the close of the worker that restarted the job, and the close
    of the worker that found the job ended (cancelled) with the call still open."""
    jobs, ledger = JobStore(redis), CallLedger(redis)
    job_id = await lapsing_job(jobs, "three-closes")
    call = await cached_call(ledger, job_id)
    await ledger.record(call, 400, 80, cache_read_tokens=250, cache_write_tokens=50)
    restart = await picked_up(jobs, job_id)  # records the call at 80 out
    await ledger.record(call, 400, 150, cache_read_tokens=250, cache_write_tokens=50)  # still streaming
    assert await cancel(jobs, job_id) == "active"
    end = await picked_up(jobs, job_id)  # the ended job's record: 150 out, the call still open
    assert end.state == "cancelled"
    closes: dict[str, Callable[[], Awaitable[object]]] = {
        "own": partial(
            ledger.record, call, 400, 200, outcome="cancelled", cache_read_tokens=250, cache_write_tokens=50
        ),
        "restart": partial(ledger.close_lost, job_id, restart.record, restart.lost_calls),
        "end": partial(ledger.close_lost, job_id, end.record, end.lost_calls),
    }
    before = await counted(jobs)
    for name in order:
        await closes[name]()
        after = await counted(jobs)
        lowered = {counter for counter in COUNTERS if after[counter] < before[counter]}
        assert not lowered, f"the {name} close lowered {lowered}: {before} -> {after}"
        before = after
    usage = await counted(jobs)
    assert (usage["input_tokens"], usage["output_tokens"], usage["reserved"]) == (400, 200, 0)
    assert (usage["cache_read_tokens"], usage["cache_write_tokens"]) == (250, 50)
    assert usage["cost_nusd"] == 100 * 1000 + 250 * 100 + 50 * 1250 + 200 * 5000
    entry = (await ledger.entries(job_id))["c1"]
    assert (entry["input"], entry["output"]) == (400, 200)
    assert (entry["counted_in"], entry["counted_out"]) == (400, 200)


async def test_a_lost_close_counts_what_the_call_recorded_after_the_pick_up(redis: Redis) -> None:
    """The worker recorded more after the next one picked the job up, then died for good: the close
    counts the entry as it is when it closes, not as the pick-up saw it."""
    jobs, ledger = JobStore(redis), CallLedger(redis)
    job_id = await lapsing_job(jobs, "recorded-after")
    call = await reserved(ledger, job_id)
    await ledger.record(call, 400, 80)
    again = await picked_up(jobs, job_id)
    await ledger.record(call, 400, 150)  # its last record
    await ledger.close_lost(job_id, again.record, again.lost_calls)
    usage = await counted(jobs)
    assert (usage["input_tokens"], usage["output_tokens"], usage["reserved"]) == (400, 150, 0)
    assert (await ledger.entries(job_id))["c1"]["output"] == 150


@pytest.mark.parametrize("own_first", [True, False])
async def test_a_call_lost_before_its_first_record_keeps_its_whole_input_counted(
    redis: Redis, own_first: bool
) -> None:
    """Nothing recorded: the lost close counts the whole input (the safe side). The first worker's
    own close may say less (the provider's count was below the estimate): it raises what it can
    (the output), and lowers nothing."""
    jobs, ledger = JobStore(redis), CallLedger(redis)
    job_id = await lapsing_job(jobs, "silent-then-late")
    call = await reserved(ledger, job_id, input_tokens=400)
    again = await picked_up(jobs, job_id)
    own = partial(ledger.record, call, 380, 60, outcome="cut")
    lost = partial(ledger.close_lost, job_id, again.record, again.lost_calls)
    for close in (own, lost) if own_first else (lost, own):
        await close()
    usage = await counted(jobs)
    whole_input = 380 if own_first else 400  # the first close to count the input sets it
    assert (usage["input_tokens"], usage["output_tokens"], usage["reserved"]) == (whole_input, 60, 0)
