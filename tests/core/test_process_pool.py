"""The deadline pool itself, with real processes: what only the pool decides, apart from any caller."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from service.core.errors import JobTimedOut
from service.core.process_pool import DeadlinePool
from tests.fakes.stuck import hang, process_is_gone, raise_timeout, runs


def pool(timeout: float = 1.0) -> DeadlinePool:
    return DeadlinePool(timeout=timeout, timed_out="the work took too long", died="the work's process died")


async def test_the_functions_own_timeout_error_is_raised_as_is_and_kills_nothing() -> None:
    async with pool(timeout=30) as deadline_pool:
        with pytest.raises(TimeoutError, match="socket"):
            await deadline_pool.run(raise_timeout, "socket read timed out")
        before = deadline_pool.pids()
        with pytest.raises(TimeoutError):
            await deadline_pool.run(raise_timeout, "again")
        assert deadline_pool.pids() == before != []


async def test_close_waits_for_a_stuck_call_until_its_deadline_then_kills_it(tmp_path: Path) -> None:
    """The worker closes its pool from the event loop: no caller's deadline can fire, close() must."""
    log = tmp_path / "hang"
    deadline_pool = pool(timeout=1.0)
    call = asyncio.create_task(deadline_pool.run(hang, str(log)))
    while not runs(log):
        await asyncio.sleep(0.02)
    (pid,) = runs(log)
    start = time.monotonic()
    deadline_pool.close()  # blocks the loop, as the worker's shutdown does
    assert time.monotonic() - start < 2.0
    assert process_is_gone(pid)
    with pytest.raises((JobTimedOut, RuntimeError)):
        await call


def test_a_deadline_must_be_positive_and_a_pool_needs_a_process() -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        DeadlinePool(timeout=0, timed_out="", died="")
    with pytest.raises(ValueError, match="at least 1"):
        DeadlinePool(timeout=1, timed_out="", died="", processes=0)
