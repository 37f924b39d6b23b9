"""The API's batching client: the commands of one turn go out in one write on one shared
connection, and each caller still gets exactly its own reply or its own error, against a real
Redis that hangs, restarts and drops connections."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from service.core.errors import Unavailable
from service.dev.embedded_redis import EmbeddedRedis
from service.store.batching import BatchingRedis
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


async def connected_clients(redis_url: str) -> int:
    observer = open_redis(redis_url, fail_fast=True)
    try:
        return int((await observer.info("clients"))["connected_clients"]) - 1  # not the observer
    finally:
        await observer.aclose()


async def test_a_turns_commands_share_one_connection_each_with_its_own_reply(redis_url: str) -> None:
    client = batching(redis_url)
    before = await connected_clients(redis_url)
    try:
        await client.ping()
        replies = await asyncio.gather(*(client.set(f"rs:test:b{i}", str(i)) for i in range(50)))
        assert replies == [True] * 50
        values = await asyncio.gather(*(client.get(f"rs:test:b{i}") for i in range(50)))
        assert values == [str(i) for i in range(50)]
        assert await client.hgetall("rs:test:none") == {}  # type: ignore[misc]  # callbacks still applied
        assert await client.exists("rs:test:b1", "rs:test:none") == 1
        assert await client.zadd("rs:test:z", {"a": 1}) == 1
        assert await client.zrange("rs:test:z", 0, -1, withscores=True) == [("a", 1.0)]  # options reach it
        # 100 concurrent commands and more: one connection, none taken from the pool
        assert connections_made(client) == 0
        assert await connected_clients(redis_url) == before + 1
    finally:
        await client.aclose()


async def test_replies_larger_than_a_read_reach_their_callers_whole(redis_url: str) -> None:
    client = batching(redis_url)
    try:
        big = "x" * 300_000  # several reads of the socket, a reply split across them
        await client.set("rs:test:big", big)
        values = await asyncio.gather(
            *(client.get("rs:test:big") for _ in range(5)), client.get("rs:test:none")
        )
        assert values == [big] * 5 + [None]
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
        await asyncio.sleep(0.1)  # the deadline has dropped the shared connection
        assert len(client.connection_pool._in_use_connections) == 0
        server._process.send_signal(signal.SIGCONT)
        assert await jobs.get("a" * 32) is None  # and it works again at once
        assert await connected_clients(server.url) == 1  # on one connection: the dropped ones are gone
    finally:
        if server._process is not None:
            server._process.send_signal(signal.SIGCONT)
        await client.aclose()
        server.stop()


async def test_commands_sent_as_redis_restarts_are_sent_again_on_a_fresh_connection(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    server.start()
    client = batching(server.url)
    try:
        await client.config_resetstat()
        assert await client.incr("rs:test:n") == 1
        # Restarted without the loop running: the shared connection's reader has not seen it close,
        # so this turn's commands are written to the dead connection, then sent once more.
        server.stop()
        server.start()
        await client.config_resetstat()
        assert await asyncio.gather(*(client.incr("rs:test:n") for _ in range(5))) == [1, 2, 3, 4, 5]
        assert (await client.info("commandstats"))["cmdstat_incrby"]["calls"] == 5  # each once
    finally:
        await client.aclose()
        server.stop()


async def test_a_connection_idle_past_the_health_interval_is_replaced_before_use(redis_url: str) -> None:
    client = batching(redis_url)
    client.idle_reconnect = 0.05
    try:
        first = await client.execute_command("CLIENT", "ID")  # direct: not on the shared connection
        assert await client.set("rs:test:idle", "1")
        ids = await client.client_list()
        await asyncio.sleep(0.1)
        assert await client.get("rs:test:idle") == "1"
        await asyncio.sleep(0.05)  # the replaced connection's close reaches Redis
        after = await client.client_list()
        assert len(after) == len(ids)  # one shared connection still, a fresh one
        assert {entry["id"] for entry in after} != {entry["id"] for entry in ids}
        assert str(first) in {entry["id"] for entry in after}  # the pool's own is untouched
    finally:
        await client.aclose()


async def test_a_closed_client_fails_its_waiting_commands_and_refuses_new_ones(redis_url: str) -> None:
    client = batching(redis_url)
    await client.ping()
    waiting = asyncio.ensure_future(client.set("rs:test:late", "1"))
    await asyncio.sleep(0)  # queued for this turn's write
    await client.aclose()
    with pytest.raises(RedisConnectionError):
        await waiting
    with pytest.raises(RedisConnectionError):
        await client.get("rs:test:late")


async def test_a_server_that_closes_the_connection_fails_only_what_was_unanswered(redis_url: str) -> None:
    client = batching(redis_url)
    killer = open_redis(redis_url, fail_fast=True)
    try:
        assert await client.set("rs:test:k", "1")
        await killer.client_kill_filter(_type="normal", skipme=True)
        await asyncio.sleep(0.05)  # the reader sees the close with nothing waiting
        assert await client.get("rs:test:k") == "1"  # a fresh connection, no error seen
    finally:
        await client.aclose()
        await killer.aclose()
