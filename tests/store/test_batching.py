"""The API's batching client: the commands of one turn share a round trip, and each caller still
gets exactly its own reply or its own error, against a real Redis."""

from __future__ import annotations

import asyncio
import math
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import NoScriptError, ResponseError

from service.core.errors import Unavailable
from service.dev.embedded_redis import EmbeddedRedis
from service.store.batching import MAX_BATCH, BatchingRedis
from service.store.connection import API_OPERATION_DEADLINE, open_redis
from service.store.job_types import NewJob, SubmitPolicy
from service.store.jobs import JobStore


def batching(url: str) -> BatchingRedis:
    client = open_redis(url, fail_fast=True, batching=True)
    assert isinstance(client, BatchingRedis)
    return client


def connections_made(client: BatchingRedis) -> int:
    pool = client.connection_pool
    return len(pool._available_connections) + len(pool._in_use_connections)


async def test_a_turns_commands_go_in_one_round_trip_each_with_its_own_reply(redis_url: str) -> None:
    client = batching(redis_url)
    try:
        await client.ping()
        replies = await asyncio.gather(*(client.set(f"rs:test:b{i}", str(i)) for i in range(50)))
        assert replies == [True] * 50
        values = await asyncio.gather(*(client.get(f"rs:test:b{i}") for i in range(50)))
        assert values == [str(i) for i in range(50)]
        assert await client.hgetall("rs:test:none") == {}  # type: ignore[misc]  # callbacks still applied
        # 100 concurrent commands: a batch (and a connection at most) per MAX_BATCH of them
        assert connections_made(client) <= math.ceil(50 / MAX_BATCH) < 50
    finally:
        await client.aclose()


async def test_a_commands_error_is_its_own_and_the_others_answer(redis_url: str) -> None:
    client = batching(redis_url)
    try:
        await client.set("rs:test:text", "not a number")
        results = await asyncio.gather(
            client.incr("rs:test:count"),
            client.incr("rs:test:text"),  # refused by Redis
            client.incr("rs:test:count"),
            return_exceptions=True,
        )
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], ResponseError) and "not an integer" in str(results[1])
    finally:
        await client.aclose()


async def test_scripts_flushed_from_redis_are_loaded_again_in_a_batch(redis_url: str) -> None:
    client = batching(redis_url)
    try:
        script = client.register_script("return ARGV[1] + 1")
        await client.script_flush()
        assert await asyncio.gather(*(script(args=[i]) for i in range(10))) == list(range(1, 11))
        with pytest.raises(NoScriptError):
            await client.evalsha("0" * 40, 0)  # type: ignore[misc]
    finally:
        await client.aclose()


async def test_a_caller_that_gives_up_leaves_the_others_their_replies(redis_url: str) -> None:
    client = batching(redis_url)
    try:
        leaving = asyncio.ensure_future(client.set("rs:test:gone", "1"))
        staying = asyncio.ensure_future(client.incr("rs:test:stays"))
        await asyncio.sleep(0)  # both queued in this turn's batch
        leaving.cancel()
        assert await staying == 1
        assert await client.incr("rs:test:stays") == 2
    finally:
        await client.aclose()


async def test_blocking_commands_go_alone_and_hold_up_nothing(redis_url: str) -> None:
    client = batching(redis_url)
    try:
        blocked: asyncio.Future[Any] = asyncio.ensure_future(client.blpop(["rs:test:empty"], timeout=2))  # type: ignore[arg-type]
        started = time.monotonic()
        assert await client.set("rs:test:meanwhile", "1")
        assert time.monotonic() - started < 0.5
        await client.rpush("rs:test:empty", "x")  # type: ignore[misc]
        assert await blocked == ("rs:test:empty", "x")
    finally:
        await client.aclose()


async def test_every_callers_command_reaches_redis_once(redis_url: str) -> None:
    """No command lost or sent twice, however the turn's commands are split into batches."""
    client = batching(redis_url)
    try:
        await client.config_resetstat()
        await asyncio.gather(*(client.incr("rs:test:n") for _ in range(200)))
        assert await client.get("rs:test:n") == "200"
        assert (await client.info("commandstats"))["cmdstat_incrby"]["calls"] == 200  # redis-py INCRs by 1
    finally:
        await client.aclose()


async def test_a_hung_redis_fails_the_batch_in_time_and_piles_up_no_connections(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    server.start()
    client = batching(server.url)
    jobs = JobStore(client, deadline=API_OPERATION_DEADLINE)
    try:
        await client.ping()
        assert server._process is not None
        server._process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        for _ in range(3):  # three turns of requests while Redis hangs
            results = await asyncio.gather(*(jobs.get("a" * 32) for _ in range(20)), return_exceptions=True)
            assert all(isinstance(result, Unavailable) for result in results)
        assert time.monotonic() - started < 3 * (API_OPERATION_DEADLINE + 0.5)
        # A submission arms no timer of its own on this client: its batch's deadline bounds it.
        started = time.monotonic()
        job = NewJob(
            job_id="b" * 32, user_id="u1", plan="pro", input_url="https://e.com/x", model="m", fingerprint="f"
        )
        with pytest.raises(Unavailable):
            await jobs.submit(job, SubmitPolicy(0, 1, 0, 0, "2026-12"), keep_ms=1000, score_ms=1)
        assert time.monotonic() - started < API_OPERATION_DEADLINE + 0.5
        await asyncio.sleep(0.1)  # the batches' own deadlines have dropped their connections
        assert len(client.connection_pool._in_use_connections) == 0
        server._process.send_signal(signal.SIGCONT)
        assert await jobs.get("a" * 32) is None  # and it works again at once
    finally:
        if server._process is not None:
            server._process.send_signal(signal.SIGCONT)
        await client.aclose()
        server.stop()
