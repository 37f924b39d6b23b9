"""API keys in the store: what a lookup costs in Redis when the key is bad, and how long it is remembered."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from service.core.errors import Unavailable
from service.dev.embedded_redis import free_port
from service.store import names
from service.store.connection import open_redis
from service.store.keys import KEY_PREFIX, KeyStore, digest_of
from service.store.ttl_cache import TtlCache
from tests.conftest import command_calls


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_url, fail_fast=False)
    yield client
    await client.aclose()


KEY = KEY_PREFIX + "k" * 43


def random_key() -> str:
    """Shaped exactly like a real key: only Redis can tell it is not one."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def test_one_unknown_key_sent_again_and_again_costs_one_redis_read(
    redis: Redis, redis_url: str
) -> None:
    store = KeyStore(redis, cache_seconds=5, unknown_seconds=5)
    key = random_key()
    before = await command_calls(redis_url, "hgetall")
    for _ in range(200):
        assert await store.authenticate(key) is None
    assert await command_calls(redis_url, "hgetall") - before == 1


@pytest.mark.parametrize(
    "presented",
    ["rsk_short", "rsk_" + "a" * 44, "rsk_" + "é" * 43, "sk-" + "a" * 44, "rsk_" + "a" * 42 + "\x00", ""],
)
async def test_a_key_not_shaped_like_one_costs_no_redis_read(
    redis: Redis, redis_url: str, presented: str
) -> None:
    store = KeyStore(redis)
    before = await command_calls(redis_url, "hgetall")
    assert await store.authenticate(presented) is None
    assert await command_calls(redis_url, "hgetall") == before


async def test_a_revoked_key_is_remembered_as_refused(redis: Redis, redis_url: str) -> None:
    store = KeyStore(redis, unknown_seconds=5)
    key, _ = await store.create("alice", "free")
    await store.revoke(key)
    assert await store.authenticate(key) is None
    before = await command_calls(redis_url, "hgetall")
    assert await store.authenticate(key) is None
    assert await command_calls(redis_url, "hgetall") == before


async def test_a_key_unknown_at_first_gets_in_once_the_refusal_is_forgotten(redis: Redis) -> None:
    """The negative cache can only delay a key Redis learns later (restored from a backup, say),
    by at most its few seconds; it can never let a bad key in."""
    store = KeyStore(redis, unknown_seconds=0.2)
    key = random_key()
    assert await store.authenticate(key) is None
    record = {"key_id": digest_of(key)[:12], "user_id": "late", "plan": "free", "created_ms": 1}
    await redis.hset(names.api_key(digest_of(key)), mapping=record)  # type: ignore[misc]
    assert await store.authenticate(key) is None  # still remembered as unknown
    await asyncio.sleep(0.25)
    caller = await store.authenticate(key)
    assert caller is not None and caller.user_id == "late"


async def test_a_key_is_found_by_its_id_until_it_is_revoked(redis: Redis) -> None:
    store = KeyStore(redis)
    _, info = await store.create("bob", "pro")
    found = await store.by_key_id(info.key_id)
    assert found is not None and (found.user_id, found.plan, found.key_id) == ("bob", "pro", info.key_id)
    assert await store.by_key_id("0" * 12) is None
    await store.revoke(info.key_id)
    assert await store.by_key_id(info.key_id) is None


def test_the_cache_holds_at_most_its_limit_dropping_the_oldest_first() -> None:
    cache: TtlCache[str, int] = TtlCache(60, limit=3)
    for number in range(10):
        cache.put(f"k{number}", number)
    assert len(cache) == 3
    assert [cache.get(f"k{number}") for number in (6, 7, 8, 9)] == [None, 7, 8, 9]


async def test_cache_entries_expire_and_a_zero_lifetime_remembers_nothing() -> None:
    short: TtlCache[str, int] = TtlCache(0.05, limit=10)
    short.put("k", 1)
    assert short.get("k") == 1
    await asyncio.sleep(0.06)
    assert short.get("k") is None
    off: TtlCache[str, int] = TtlCache(0, limit=10)
    off.put("k", 1)
    assert off.get("k") is None and len(off) == 0


async def test_concurrent_lookups_of_one_key_share_a_read_and_its_failure() -> None:
    """Redis unreachable: every request waiting on the shared read gets the 503 error, none hangs."""
    dead = open_redis(f"redis://127.0.0.1:{free_port()}/0", fail_fast=True)
    store = KeyStore(dead, unknown_seconds=5, deadline=1.0)
    try:
        outcomes = await asyncio.gather(*(store.authenticate(KEY) for _ in range(5)), return_exceptions=True)
    finally:
        await dead.aclose()
    assert all(isinstance(outcome, Unavailable) for outcome in outcomes), outcomes
