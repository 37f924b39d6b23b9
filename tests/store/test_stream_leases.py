"""The stream-lease scripts on a real Redis: the cap is never passed, leases run out unless refreshed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from service.store import names
from service.store.connection import open_redis
from service.store.stream_leases import StreamLeaseStore


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_url, fail_fast=False)
    yield client
    await client.aclose()


async def test_leases_are_granted_up_to_the_cap_and_no_further(redis: Redis) -> None:
    store = StreamLeaseStore(redis)
    wanted = [("alice", f"p:{n}") for n in range(5)] + [("bob", "p:9")]
    assert await store.acquire(wanted, cap=3, lease_ms=60_000) == [True, True, True, False, False, True]
    assert (await store.count("alice"), await store.count("bob")) == (3, 1)


async def test_two_processes_admitting_at_once_never_pass_the_cap_together(redis_url: str) -> None:
    clients = [open_redis(redis_url, fail_fast=False) for _ in range(2)]
    try:
        stores = [StreamLeaseStore(client) for client in clients]
        answers = await asyncio.gather(
            *(
                store.acquire([("alice", f"{i}:{n}") for n in range(10)], cap=7, lease_ms=60_000)
                for i, store in enumerate(stores)
            )
        )
    finally:
        for client in clients:
            await client.aclose()
    assert sum(sum(granted) for granted in answers) == 7


async def test_a_released_lease_frees_its_slot(redis: Redis) -> None:
    store = StreamLeaseStore(redis)
    assert await store.acquire([("alice", "p:1")], cap=1, lease_ms=60_000) == [True]
    await store.release([("alice", "p:1")])
    assert await store.acquire([("alice", "p:2")], cap=1, lease_ms=60_000) == [True]


async def test_a_lease_runs_out_unless_refreshed_and_the_set_goes_with_it(redis: Redis) -> None:
    store = StreamLeaseStore(redis)
    assert await store.acquire([("alice", "kept"), ("alice", "dropped")], cap=5, lease_ms=300) == [True, True]
    for _ in range(3):
        await asyncio.sleep(0.15)
        await store.refresh({"alice": ["kept"]}, lease_ms=300)
    assert await store.count("alice") == 1
    assert await store.acquire([("alice", "new")], cap=2, lease_ms=300) == [True]  # the expired one is pruned
    assert await redis.zrange(names.stream_leases("alice"), 0, -1) == ["kept", "new"]
    await asyncio.sleep(0.4)
    assert await redis.exists(names.stream_leases("alice")) == 0  # nothing stale stays


async def test_a_refresh_puts_back_a_lease_that_ran_out_while_its_stream_stayed_open(redis: Redis) -> None:
    """Redis unreachable for longer than a lease: the stream is still open, so it counts again."""
    store = StreamLeaseStore(redis)
    assert await store.acquire([("alice", "open")], cap=1, lease_ms=100) == [True]
    await asyncio.sleep(0.15)
    assert await store.count("alice") == 0
    await store.refresh({"alice": ["open"]}, lease_ms=60_000)
    assert await store.acquire([("alice", "another")], cap=1, lease_ms=60_000) == [False]
