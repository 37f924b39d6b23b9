"""Settings turned into the rules the store enforces: priorities, caps, rate and budget, retention."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime

from service.core.settings import Settings
from service.store.job_types import Retention, StartPolicy, SubmitPolicy
from service.store.upload_quota import UploadPolicy

# After an attempt times out at JOB_TIMEOUT_SECONDS the worker needs a moment to record it (up to
# the worker's settle deadline, 3 s): a claimed job's lease is longer, so a live worker never loses
# its job to another.
LEASE_MARGIN_SECONDS = 5


def budget_period(settings: Settings, now: datetime | None = None) -> str:
    if now is None:  # every submission asks: formatted once per UTC day
        return _period_of_day(settings.budget_period, int(time.time() // 86_400))
    return now.strftime("%Y-%m-%d" if settings.budget_period == "day" else "%Y-%m")


@functools.lru_cache(maxsize=4)
def _period_of_day(kind: str, day: int) -> str:
    moment = datetime.fromtimestamp(day * 86_400, UTC)
    return moment.strftime("%Y-%m-%d" if kind == "day" else "%Y-%m")


def queue_score(settings: Settings, plan: str, now_ms: int) -> int:
    """Pro jobs queue as if submitted ``PRIORITY_PRO_LEAD_SECONDS`` earlier: they go before free jobs
    that have waited less than that, and a free job is never passed by a pro job submitted more than
    that much later than itself."""
    lead = settings.priority_pro_lead_seconds if plan == "pro" else 0
    return now_ms - int(lead * 1000)


def submit_policy(settings: Settings, plan: str, minimal_call: int) -> SubmitPolicy:
    """``minimal_call``: the worst case of the smallest call there is; a queued report holds that
    much of the budget (or ``BUDGET_RESERVE_TOKENS``, when set) until its own call is reserved."""
    pro = plan == "pro"
    return _submit_policy(
        settings.submissions_per_minute_pro if pro else settings.submissions_per_minute_free,
        settings.budget_tokens_pro if pro else settings.budget_tokens_free,
        settings.budget_reserve_tokens or minimal_call,
        budget_period(settings),
    )


# Asked on every submission: cached on the numbers themselves (hashing the Settings would cost more
# than building the policy).
@functools.lru_cache(maxsize=32)
def _submit_policy(per_minute: int, budget: int, reserve: int, period: str) -> SubmitPolicy:
    return SubmitPolicy(
        per_minute=per_minute,
        burst=max(1, per_minute // 4),  # a quarter of a minute's worth at once
        budget=budget,
        reserve=reserve,
        period=period,
    )


def budget_of(settings: Settings, plan: str) -> int:
    return settings.budget_tokens_pro if plan == "pro" else settings.budget_tokens_free


def start_policy(settings: Settings) -> StartPolicy:
    return StartPolicy(
        max_crashes=settings.max_crash_restarts,
        cap_free=settings.user_max_active_free,
        cap_pro=settings.user_max_active_pro,
        lease_ms=int((settings.job_timeout_seconds + LEASE_MARGIN_SECONDS) * 1000),
        park_ms=int(settings.park_recheck_seconds * 1000),
        failed_retention=failed_retention(settings),
    )


def retention(settings: Settings) -> Retention:
    """Completed jobs: how long and how many per user (their results and idempotent replays)."""
    return Retention(settings.report_retention_seconds, settings.report_retention_count)


def failed_retention(settings: Settings) -> Retention:
    """Failed and cancelled jobs: how long and how many per user."""
    return Retention(settings.failed_retention_seconds, settings.failed_retention_count)


def upload_policy(settings: Settings, plan: str) -> UploadPolicy:
    pro = plan == "pro"
    per_minute = settings.uploads_per_minute_pro if pro else settings.uploads_per_minute_free
    return UploadPolicy(
        per_minute=per_minute,
        burst=max(1, per_minute // 4),  # a quarter of a minute's worth at once, as for submissions
        quota_bytes=settings.upload_quota_bytes_pro if pro else settings.upload_quota_bytes_free,
        retention_ms=settings.input_retention_seconds * 1000,
    )
