"""The scripts as Redis gets them: each one compiles, and keeps exactly the shared helpers it uses."""

from __future__ import annotations

import re

import pytest
import redis.asyncio as aioredis

from service.store.lua import COMMON, with_names, without_unused_helpers
from tests.store.test_names import SCRIPTS

_DEFINED = re.compile(r"^local (?:function )?(\w+)", re.MULTILINE)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
async def test_every_script_compiles_in_redis(redis_url: str, name: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert len(await client.script_load(SCRIPTS[name])) == 40
    finally:
        await client.aclose()


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_shared_helper_a_script_names_is_defined_in_it(name: str) -> None:
    script = SCRIPTS[name]
    for helper in set(_DEFINED.findall(with_names(COMMON))):
        if re.search(rf"\b{helper}\b", script):
            assert re.search(rf"^local (function )?{helper}\b", script, re.MULTILINE), helper


def test_unused_helpers_go_with_their_comments_and_used_ones_stay_with_theirs() -> None:
    source = "\n".join(
        [
            "-- the clock",
            "local NOW = nil",
            "local function now_ms()",
            "  if not NOW then NOW = 1 end",
            "  return NOW",
            "end",
            "-- unused, and what only it uses",
            "local LIMIT = tonumber('5')",
            "local function capped(x) return math.min(x, LIMIT) end",
            "local TABLE = {a = true,",
            "  b = true}",
            "local x = redis.call('GET', KEYS[1])",  # a statement with an effect: never removed
            "return now_ms()",
        ]
    )
    kept = without_unused_helpers(source)
    assert "capped" not in kept and "LIMIT" not in kept and "TABLE" not in kept and "unused" not in kept
    assert "-- the clock\nlocal NOW = nil\nlocal function now_ms()" in kept
    assert "redis.call('GET', KEYS[1])" in kept and kept.endswith("return now_ms()")


def test_the_submit_script_carries_no_more_than_it_needs() -> None:
    from service.store.scripts import SUBMIT

    defined = set(_DEFINED.findall(SUBMIT))
    assert {"now_ms", "wake_one"} <= defined
    assert not {"emit", "count_call", "rewrite_finished", "retain", "leave_slot"} & defined
