"""Fleet-wide metrics: each process counts in memory and flushes to Redis; any API replica serves
the whole fleet's figures at ``GET /metrics`` (Prometheus text format).

Why not prometheus-client's multi-process mode or a scrape endpoint per worker: on Fly or Railway the
workers run on other machines than the API, often with no port Prometheus can reach, while every
process already shares Redis. So counters and histogram buckets are summed in one Redis hash
(flushed every few seconds in one pipeline: nothing on the request path but a dict update),
per-process gauges live in per-instance hashes that expire when the process is gone, and queue
figures are read from Redis at scrape time (``service.store.metrics`` does the Redis part). Every
replica answers with the same numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import socket
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import structlog

from service.core.errors import Unavailable
from service.store.metrics import MetricsStore

log = structlog.get_logger("service.telemetry.metrics")

FLUSH_SECONDS = 5.0
# Gauges are rewritten at most this often when nothing else changes (they expire after
# ``service.store.metrics.GAUGE_TTL_SECONDS``, so a process that stops reporting drops out by itself):
# an idle process costs Redis a write now and then, not every flush.
GAUGE_REFRESH_SECONDS = 20.0


def gauge_refresh_seconds(flush_seconds: float) -> float:
    """How often a process rewrites its gauges when it flushes every ``flush_seconds``: the health
    check (``service.telemetry.health``) allows two of these to be missed."""
    return min(GAUGE_REFRESH_SECONDS, 4 * flush_seconds)


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # "counter" | "histogram" | "gauge"
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
FAMILIES = {
    f.name: f
    for f in (
        Family("reports_submitted_total", "counter", "Report submissions by outcome", ("plan", "outcome")),
        Family("http_requests_total", "counter", "HTTP requests answered", ("route", "method", "status")),
        Family("http_request_duration_seconds", "histogram", "HTTP request time", ("route",), _SECONDS),
        Family("jobs_finished_total", "counter", "Jobs that reached a final state", ("plan", "state")),
        Family("job_retries_total", "counter", "Attempts put back, by reason", ("plan", "reason")),
        Family("job_queue_wait_seconds", "histogram", "Submission to first start", ("plan",), _SECONDS),
        Family("job_run_seconds", "histogram", "First start to completion", ("plan",), _SECONDS),
        Family("llm_tokens_total", "counter", "Tokens the model provider billed", ("model", "kind")),
        Family("llm_cost_usd_total", "counter", "Estimated provider cost in USD", ("model",)),
        Family("llm_limiter_wait_seconds", "histogram", "Waiting for model capacity", ("model",), _SECONDS),
        Family("provider_errors_total", "counter", "Provider error answers", ("model", "status")),
        Family("worker_jobs_in_flight", "gauge", "Jobs a worker process is running", ("worker",)),
        Family("sse_subscribers", "gauge", "Open event streams on an API process", ("node",)),
        Family("event_loop_lag_seconds", "gauge", "Event-loop lag p99, last window", ("process", "node")),
    )
}
PREFIX = "report_service_"


def instance_name() -> str:
    """Which process a gauge belongs to (its ``node`` label: Prometheus keeps ``instance`` for the
    scrape target): host and pid (Fly and Railway set HOSTNAME per machine)."""
    return f"{socket.gethostname()}:{os.getpid()}"


Key = tuple[str, tuple[tuple[str, str], ...]]  # (name, sorted labels): cheap to build on a hot path


def _key(name: str, labels: dict[str, str]) -> Key:
    return name, tuple(sorted(labels.items()))


# A histogram's keys for one label set: one bucket key per bound (and +Inf), the sum's, the count's.
_HistogramKeys = tuple[tuple[Key, ...], Key, Key, tuple[float, ...]]


def _histogram_keys(name: str, labels: dict[str, str]) -> _HistogramKeys:
    buckets = FAMILIES[name].buckets
    bounds = [*(str(bound) for bound in buckets), "+Inf"]
    bucket_keys = tuple(_key(name + "_bucket", {**labels, "le": le}) for le in bounds)
    return bucket_keys, _key(name + "_sum", labels), _key(name + "_count", labels), buckets


@functools.lru_cache(maxsize=1024)  # routes are templates, methods and statuses few: a small set
def _request_keys(route: str, method: str, status: int) -> tuple[Key, _HistogramKeys]:
    counted = _key("http_requests_total", {"route": route, "method": method, "status": str(status)})
    return counted, _histogram_keys("http_request_duration_seconds", {"route": route})


def _field(key: Key) -> str:
    """The Redis hash field for a key, built only when flushing."""
    return key[0] + "\x1f" + orjson.dumps(dict(key[1])).decode()


def parse_field(field: str) -> tuple[str, dict[str, str]]:
    name, _, labels = field.partition("\x1f")
    parsed: dict[str, str] = orjson.loads(labels) if labels else {}
    return name, parsed


class MetricsBuffer:
    """This process's increments since the last flush, and its current gauges."""

    def __init__(self, instance: str | None = None) -> None:
        self.instance = instance or instance_name()
        self._counts: dict[Key, float] = defaultdict(float)
        self._gauges: dict[Key, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._gauges_written = -math.inf  # monotonic time of the last gauge write
        self._gauge_refresh = GAUGE_REFRESH_SECONDS
        # Read just before each flush, to refresh gauges (in-flight jobs, loop lag, subscribers).
        self.gauge_sources: list[Callable[[MetricsBuffer], None]] = []

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self._counts[_key(name, labels)] += value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        buckets = FAMILIES[name].buckets
        index = bisect_left(buckets, seconds)
        le = str(buckets[index]) if index < len(buckets) else "+Inf"
        self._counts[_key(name + "_bucket", {**labels, "le": le})] += 1  # cumulated when served
        self._counts[_key(name + "_sum", labels)] += seconds
        self._counts[_key(name + "_count", labels)] += 1

    def count_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """``http_requests_total`` and ``http_request_duration_seconds`` for one answered request:
        on every request's path, so its keys are built once per route, method and status."""
        counted, (bucket_keys, sum_key, count_key, buckets) = _request_keys(route, method, status)
        counts = self._counts
        counts[counted] += 1
        counts[bucket_keys[bisect_left(buckets, seconds)]] += 1  # the same keys ``observe`` makes
        counts[sum_key] += seconds
        counts[count_key] += 1

    def pending(self, name: str, **labels: str) -> float:
        """What this process has counted for ``name`` with exactly these labels since its last flush."""
        return self._counts.get(_key(name, labels), 0.0)

    def set_gauge(self, name: str, value: float, **labels: str) -> None:
        self._gauges[_key(name, labels)] = value

    async def flush(self, store: MetricsStore, *, force: bool = True) -> None:
        """Writes the counts since the last flush, and the gauges when ``force``d or when they are
        due (``gauge_refresh_seconds``)."""
        counts, self._counts = self._counts, defaultdict(float)
        gauges: dict[str, float] = {}
        if force or time.monotonic() - self._gauges_written >= self._gauge_refresh:
            for source in self.gauge_sources:
                source(self)
            gauges = {_field(key): value for key, value in self._gauges.items()}
        if not counts and not gauges:
            return
        try:
            await store.add({_field(key): value for key, value in counts.items()}, self.instance, gauges)
            if gauges:
                self._gauges_written = time.monotonic()
        except Unavailable:
            for key, value in counts.items():  # keep them for the next flush
                self._counts[key] += value
            raise

    def start(self, store: MetricsStore, every: float = FLUSH_SECONDS) -> None:
        self._gauge_refresh = gauge_refresh_seconds(every)
        self._task = asyncio.create_task(self._flush_forever(store, every), name="metrics-flush")

    async def stop(self, store: MetricsStore) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Unavailable):
            await self.flush(store)

    async def _flush_forever(self, store: MetricsStore, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.flush(store, force=False)
            except Unavailable as exc:
                log.warning("metrics_flush_failed", error=str(exc))
