"""Our Redis clients pack commands in C (hiredis) and send exactly the bytes redis-py would."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import DataError

from service.store.connection import open_redis, open_subscriber

ARGUMENTS: list[tuple[Any, ...]] = [
    ("SET", "key", "value"),
    ("EVALSHA", "a" * 40, 2, "rs:job:x", "rs:queue", 1765000000000, -3, b"\x00\xffraw", "é€𝄞"),
    ("ZADD", "z", 0.1, "m", 1e20, "n", float("inf"), "o", 1 / 3, "p", -0.0, "q"),
    ("CONFIG GET", "maxmemory"),  # a two-word name redis-py splits
    ("SET", "big", "x" * 100_000),  # past redis-py's buffer cutoff
]


@pytest.mark.parametrize("args", ARGUMENTS, ids=lambda args: str(args[0]))
def test_the_packed_bytes_are_redis_pys(args: tuple[Any, ...]) -> None:
    client = open_redis("redis://127.0.0.1:1/0", fail_fast=True)
    ours = client.connection_pool.connection_class()
    assert b"".join(ours.pack_command(*args)) == b"".join(Connection().pack_command(*args))


def test_what_hiredis_does_not_take_goes_the_python_way() -> None:
    ours = open_redis("redis://127.0.0.1:1/0", fail_fast=True).connection_pool.connection_class()
    view = memoryview(b"bytes in a view")
    assert b"".join(ours.pack_command("SET", "k", view)) == b"".join(
        Connection().pack_command("SET", "k", view)
    )
    refusals: list[Any] = [None, True, {"a": 1}]
    for refused in refusals:
        with pytest.raises(DataError):  # redis-py's own error, not hiredis's TypeError
            ours.pack_command("SET", "k", refused)


def test_every_kind_of_client_packs_in_c() -> None:
    tcp = open_redis("redis://127.0.0.1:1/0", fail_fast=False)
    unix = open_redis("unix:///tmp/none.sock", fail_fast=False)
    subscriber = open_subscriber("redis://127.0.0.1:1/0")
    for client in (tcp, unix, subscriber):
        assert client.connection_pool.connection_class.__name__.startswith("Hiredis")
    assert issubclass(unix.connection_pool.connection_class, UnixDomainSocketConnection)


async def test_commands_round_trip_through_a_real_server(redis_url: str) -> None:
    client = open_redis(redis_url, fail_fast=True)
    try:
        await client.set("rs:test:packing", "é€𝄞" * 1000)
        assert await client.get("rs:test:packing") == "é€𝄞" * 1000
        assert "maxmemory" in await client.config_get("maxmemory")
        await client.delete("rs:test:packing")
    finally:
        await client.aclose()
