"""The provider interface's one progress throttle."""

from __future__ import annotations

from service.providers.base import CallUsage, ProgressThrottle
from tests.providers.support import Recorder


async def test_the_throttle_passes_updates_at_most_once_per_interval_and_always_the_final_count() -> None:
    now = [0.0]
    heard = Recorder()
    throttle = ProgressThrottle(heard, interval=0.25, clock=lambda: now[0])
    for at, tokens in [(0.0, 1), (0.1, 2), (0.2, 3), (0.3, 4), (0.5, 5), (0.56, 6)]:
        now[0] = at
        await throttle.update(CallUsage(10, tokens))
    await throttle.finish(CallUsage(10, 7))
    await throttle.finish(CallUsage(10, 8))  # a call ends once
    assert heard.counts == [1, 4, 6, 7]  # 0.5 came 0.2 s after 0.3: held back
    assert [usage.final for _, usage in heard.calls] == [False, False, False, True]
