"""What a job does, counted for the fleet's metrics (labels: the job's plan, never its user or id)."""

from __future__ import annotations

import time
from typing import Literal

from service.providers.base import CallUsage
from service.telemetry.metrics import MetricsBuffer
from service.telemetry.pricing import cost_usd

# Every count takes the job's plan from its record, passed in: never from ambient state, which a
# job given up before it started (too many crashes) would not have.


def job_started(metrics: MetricsBuffer, record: dict[str, str], first_start: bool) -> None:
    if first_start and record.get("started_ms") and record.get("created_ms"):
        wait = (int(record["started_ms"]) - int(record["created_ms"])) / 1000
        metrics.observe("job_queue_wait_seconds", max(0.0, wait), plan=record.get("plan", ""))


def job_retried(metrics: MetricsBuffer, record: dict[str, str], reason: str) -> None:
    metrics.inc("job_retries_total", plan=record.get("plan", ""), reason=reason)


def job_finished(metrics: MetricsBuffer, record: dict[str, str], state: str) -> None:
    plan = record.get("plan", "")
    metrics.inc("jobs_finished_total", plan=plan, state=state)
    if state == "completed" and record.get("started_ms"):
        ran = time.time() - int(record["started_ms"]) / 1000
        metrics.observe("job_run_seconds", max(0.0, ran), plan=plan)


def model_billed(
    metrics: MetricsBuffer, model: str, usage: CallUsage, lane: Literal["realtime", "batch"] = "realtime"
) -> None:
    """``usage``'s input is the uncached part; cache reads and writes are priced apart."""
    reads, writes = usage.cache_read_tokens, usage.cache_write_tokens
    metrics.inc("llm_tokens_total", usage.input_tokens + reads + writes, model=model, kind="input")
    metrics.inc("llm_tokens_total", usage.output_tokens, model=model, kind="output")
    cost = cost_usd(model, usage.input_tokens, usage.output_tokens, reads, writes, lane=lane)
    metrics.inc("llm_cost_usd_total", cost, model=model)
