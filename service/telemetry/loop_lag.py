"""Event-loop lag, measured all the time: how late a short sleep wakes up is how long anything waits.

A blocked loop (a CPU-bound call, a synchronous library) shows up here first; the worker logs a
summary periodically (``event_loop_lag``) so dashboards can alert on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import deque
from typing import Any

import structlog

log = structlog.get_logger("service.telemetry.loop_lag")


class LoopLagMonitor:
    def __init__(self, *, interval: float = 0.05, report_every: float = 60.0, window: int = 100_000) -> None:
        self.interval = interval
        self.report_every = report_every
        self.samples: deque[float] = deque(maxlen=window)
        self.gc_pauses: list[float] = []
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag")
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Full collections walk every live object: with thousands of jobs in flight, the usual suspect.
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.append(time.perf_counter() - self._gc_started)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.samples)
        if not ordered:
            return {"samples": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}

        def pick(share: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000, 1)

        return {"samples": len(ordered), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": pick(1.0)}

    async def _run(self) -> None:
        next_report = time.monotonic() + self.report_every
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self.samples.append(max(0.0, now - before - self.interval))
            if now >= next_report:
                pauses = self.gc_pauses
                gc_max = round(max(pauses, default=0.0) * 1000, 1)
                log.info("event_loop_lag", window_s=self.report_every, full_gcs=len(pauses), gc_max_ms=gc_max,
                         **self.summary())  # fmt: skip
                self.samples.clear()  # each report covers its own window
                self.gc_pauses = []
                next_report = now + self.report_every


def calm_garbage_collector() -> None:
    """For a long-lived asyncio process with many concurrent tasks: full collections walk every live
    object, and with a thousand jobs in flight (worker) or 5,000 open streams (API) that was a pause
    of 0.3 to 1 s every few seconds (measured). Objects alive after start-up (modules, borb's tables,
    clients) are frozen out of collection, and young objects are collected less eagerly; the monitor
    above reports full collections and their longest pause."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
