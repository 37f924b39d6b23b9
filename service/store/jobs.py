"""Report jobs in Redis: the record, its state changes, its checkpoint, and the arq queue entry."""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from typing import Any

import orjson
from redis.asyncio import Redis

from service.core.clock import now_ms
from service.store import ending_scripts, names, scripts, upkeep_scripts
from service.store.arq_wire import JOB_FUNCTION, queue_entry
from service.store.connection import RedisStore, translate_redis_errors
from service.store.job_types import (
    Checkpoint,
    NewJob,
    Retention,
    StartOutcome,
    StartPolicy,
    SubmitOutcome,
    SubmitPolicy,
)

TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})


def derive_job_id(user_id: str, idempotency_key: str) -> str:
    """Deterministic, URL-safe, and different for two users who send the same key."""
    return hashlib.sha256(f"{user_id}\x00{idempotency_key}".encode()).hexdigest()[:32]


def fingerprint(*fields: str) -> str:
    """What "the same payload" means for idempotency: the request's fields, in order."""
    return hashlib.sha256("\x00".join(fields).encode()).hexdigest()


class JobStore(RedisStore):
    def __init__(self, redis: Redis, *, deadline: float | None = None) -> None:
        super().__init__(redis, deadline=deadline)
        self._submit = redis.register_script(scripts.SUBMIT)
        self._start = redis.register_script(scripts.START)
        self._advance = redis.register_script(scripts.ADVANCE)
        self._requeue = redis.register_script(scripts.REQUEUE)
        self._complete = redis.register_script(ending_scripts.COMPLETE)
        self._fail = redis.register_script(ending_scripts.FAIL)
        self._cancel = redis.register_script(ending_scripts.CANCEL)
        self._compact = redis.register_script(upkeep_scripts.COMPACT)
        self._reap = redis.register_script(upkeep_scripts.REAP)

    @translate_redis_errors
    async def submit(
        self, job: NewJob, policy: SubmitPolicy, *, keep_ms: int, score_ms: int
    ) -> SubmitOutcome:
        """Creates the record and its queue entry in one step, or says why not (or what is there).

        ``score_ms`` is the job's place in the queue: its submit time, earlier for a higher priority.
        """
        now = now_ms()
        report_id = "rep_" + secrets.token_hex(12)
        payload = queue_entry(job.job_id, now)
        fields = {
            "job_id": job.job_id,
            "fingerprint": job.fingerprint,
            "user_id": job.user_id,
            "plan": job.plan,
            "report_id": report_id,
            "input_url": job.input_url,
            "model": job.model,
            "state": "queued",
            "stage": "queued",
            "progress": "0",
            "attempts": "0",
            "created_ms": str(now),  # strings: Lua would print a big number as 1.79e+12
        }
        if job.callback_url:
            fields["callback_url"] = job.callback_url
        limits: list[bytes | str | int] = [
            policy.per_minute,
            policy.burst,
            policy.budget,
            policy.reserve,
            policy.period,
        ]
        args: list[bytes | str | int] = [payload, score_ms, keep_ms, orjson.dumps(fields), *limits]
        keys = [names.job(job.job_id), names.arq_job(job.job_id)]
        if not job.callback_url:
            reply = await self._submit(keys=keys, args=args)
            return _submit_outcome(reply, report_id, job.fingerprint)
        # Watched in the same transaction the job is created in: however the job ends later, its
        # webhook is found (service.store.webhooks). A refused or replayed submission leaves a watch
        # entry that the first scan drops or settles.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(names.WEBHOOKS_WATCH, {job.job_id: now})
            await self._submit(keys=keys, args=args, client=pipe)
            _, reply = await pipe.execute()
        return _submit_outcome(reply, report_id, job.fingerprint)

    @translate_redis_errors
    async def get(self, job_id: str) -> dict[str, str] | None:
        fields: dict[str, str] = await self._redis.hgetall(names.job(job_id))  # type: ignore[misc]
        return fields or None

    @translate_redis_errors
    async def start(
        self,
        job_id: str,
        policy: StartPolicy,
        *,
        stage: str,
        progress: int,
        others_here: int = 0,
        suspect_here: bool = False,
    ) -> StartOutcome:
        """``others_here``: jobs this worker runs besides this one; ``suspect_here``: this worker
        runs a suspect alone (see START for who is blamed when a worker dies)."""
        args: list[str | int] = [stage, progress, policy.max_crashes, policy.cap_free, policy.cap_pro]
        args += [policy.lease_ms, others_here, "1" if suspect_here else "0"]
        args += [policy.failed_retention.seconds, policy.failed_retention.count]
        reply = await self._start(keys=[names.job(job_id)], args=args)
        flat = reply[3] if len(reply) > 3 else []
        record = dict(zip(flat[::2], flat[1::2], strict=True))
        first = len(reply) > 4 and int(reply[4]) == 1
        alone = len(reply) > 5 and int(reply[5]) == 1
        return StartOutcome(str(reply[0]), int(reply[1]), int(reply[2]), record, first, alone)

    @translate_redis_errors
    async def advance(self, job_id: str, *, stage: str, progress: int) -> bool:
        return bool(await self._advance(keys=[names.job(job_id)], args=[stage, progress]))

    @translate_redis_errors
    async def load_checkpoint(self, job_id: str) -> Checkpoint | None:
        raw = await self._redis.get(names.job_answer(job_id))
        return Checkpoint(**json.loads(raw)) if raw else None

    @translate_redis_errors
    async def complete(
        self, job_id: str, result: dict[str, Any], *, pdf_key: str, retention: Retention, period: str
    ) -> bool:
        """Marks the job completed and counts the report, once whatever happens (its tokens were
        counted by the call ledger as they were spent)."""
        args: list[str | int] = [json.dumps(result), retention.seconds, pdf_key, retention.count, period]
        return bool(await self._complete(keys=[names.job(job_id)], args=args))

    @translate_redis_errors
    async def fail(self, job_id: str, reason: str, *, code: str, retention: Retention) -> bool:
        args: list[str | int] = [reason, code, retention.seconds, retention.count]
        return bool(await self._fail(keys=[names.job(job_id)], args=args))

    @translate_redis_errors
    async def requeue(self, job_id: str, reason: str, *, count_attempt: bool) -> bool:
        counted = "1" if count_attempt else "0"
        return bool(await self._requeue(keys=[names.job(job_id)], args=[reason, counted]))

    @translate_redis_errors
    async def cancel(self, job_id: str, *, retention: Retention, queued_seconds: int) -> str:
        """Returns the state the job was in before; only 'queued' and 'active' were cancelled. A job
        cancelled while it waited is kept ``queued_seconds`` only: it cost nothing."""
        args: list[str | int] = [retention.seconds, queued_seconds, retention.count]
        return str(await self._cancel(keys=[names.job(job_id)], args=args))

    @translate_redis_errors
    async def compact_finished(self, older_than_seconds: float, limit: int = 500) -> int:
        """Shrinks the event streams of jobs finished longer ago than that; returns how many."""
        cutoff = now_ms() - int(older_than_seconds * 1000)
        return int(await self._compact(keys=[], args=[cutoff, limit]))

    @translate_redis_errors
    async def reap(
        self, *, older_than_ms: int, limit: int, max_losses: int, failed: Retention
    ) -> tuple[int, int, int]:
        """Puts back (or, past ``max_losses``, fails) jobs the queue lost; (looked at, put back, failed)."""
        now = now_ms()
        args: list[str | int] = [now, now - older_than_ms, limit, JOB_FUNCTION, max_losses]
        args += [failed.seconds, failed.count]
        looked, requeued, failed_count = await self._reap(keys=[names.LIVE_INDEX], args=args)
        return int(looked), int(requeued), int(failed_count)

    @translate_redis_errors
    async def usage(self, user_id: str, period: str) -> dict[str, int]:
        raw: dict[str, str] = await self._redis.hgetall(names.usage(user_id, period))  # type: ignore[misc]
        return {name: int(value) for name, value in raw.items()}


def _submit_outcome(reply: list[Any], report_id: str, fingerprint: str) -> SubmitOutcome:
    code = int(reply[0])
    if code == 1:
        return SubmitOutcome("created", report_id=report_id, state="queued")
    if code == -1:
        return SubmitOutcome("rate_limited", wait_seconds=math.ceil(int(reply[1]) / 1000))
    if code == -2:
        return SubmitOutcome("over_budget", tokens_left=max(0, int(reply[1])))
    _, existing_fingerprint, existing_report, state = reply
    return SubmitOutcome(
        "existing", report_id=existing_report, state=state, same_payload=existing_fingerprint == fingerprint
    )
