"""Bearer keys as an attacker floods them: a bad key retried, or garbage, costs Redis (next to) nothing."""

from __future__ import annotations

import asyncio
import secrets

import httpx

from service.core.settings import Settings
from tests.conftest import bearer, command_calls


async def test_a_flood_with_one_unknown_key_costs_one_redis_read(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    key = bearer("rsk_" + secrets.token_urlsafe(32))  # shaped like a real key: only Redis can tell
    before = await command_calls(settings.redis_url, "hgetall")
    for _ in range(10):
        answers = await asyncio.gather(*(api.get("/api/usage", headers=key) for _ in range(20)))
        assert {answer.status_code for answer in answers} == {401}
    # Twenty at once share the first read; every later one is answered from the negative cache.
    assert await command_calls(settings.redis_url, "hgetall") - before == 1


async def test_garbage_bearer_keys_cost_no_redis_read(api: httpx.AsyncClient, settings: Settings) -> None:
    before = await command_calls(settings.redis_url, "hgetall")
    for _ in range(100):
        garbage = bearer("rsk_" + secrets.token_hex(8))
        assert (await api.get("/api/usage", headers=garbage)).status_code == 401
    assert await command_calls(settings.redis_url, "hgetall") == before
