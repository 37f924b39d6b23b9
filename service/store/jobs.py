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
from service.store import names, scripts
from service.store.arq_wire import queue_entry
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
        self._complete = redis.register_script(scripts.COMPLETE)
        self._fail = redis.register_script(scripts.FAIL)
        self._requeue = redis.register_script(scripts.REQUEUE)
        self._cancel = redis.register_script(scripts.CANCEL)
        self._compact = redis.register_script(scripts.COMPACT)

    @translate_redis_errors
    async def submit(
        self, job: NewJob, policy: SubmitPolicy, *, arq_ttl_ms: int, score_ms: int
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
        limits: list[bytes | str | int] = [
            policy.per_minute,
            policy.burst,
            policy.budget,
            policy.reserve,
            policy.period,
        ]
        args: list[bytes | str | int] = [payload, score_ms, arq_ttl_ms, orjson.dumps(fields), *limits]
        reply = await self._submit(keys=[names.job(job.job_id), names.arq_job(job.job_id)], args=args)
        return _submit_outcome(reply, report_id, job.fingerprint)

    @translate_redis_errors
    async def get(self, job_id: str) -> dict[str, str] | None:
        fields: dict[str, str] = await self._redis.hgetall(names.job(job_id))  # type: ignore[misc]
        return fields or None

    @translate_redis_errors
    async def start(self, job_id: str, policy: StartPolicy, *, stage: str, progress: int) -> StartOutcome:
        args: list[str | int] = [
            stage,
            progress,
            policy.max_crashes,
            policy.cap_free,
            policy.cap_pro,
            policy.lease_ms,
        ]
        reply = await self._start(keys=[names.job(job_id)], args=args)
        flat = reply[3] if len(reply) > 3 else []
        record = dict(zip(flat[::2], flat[1::2], strict=True))
        first = len(reply) > 4 and int(reply[4]) == 1
        return StartOutcome(str(reply[0]), int(reply[1]), int(reply[2]), record, first)

    @translate_redis_errors
    async def advance(self, job_id: str, *, stage: str, progress: int) -> bool:
        return bool(await self._advance(keys=[names.job(job_id)], args=[stage, progress]))

    @translate_redis_errors
    async def load_checkpoint(self, job_id: str) -> Checkpoint | None:
        raw = await self._redis.get(names.job_answer(job_id))
        return Checkpoint(**json.loads(raw)) if raw else None

    @translate_redis_errors
    async def save_checkpoint(self, job_id: str, checkpoint: Checkpoint, *, ttl_seconds: int) -> None:
        body = json.dumps(checkpoint.__dict__)
        await self._redis.set(names.job_answer(job_id), body, ex=ttl_seconds)

    @translate_redis_errors
    async def complete(
        self, job_id: str, result: dict[str, Any], *, pdf_key: str, retention: Retention, period: str
    ) -> bool:
        """Marks the job completed and adds its tokens to the user's usage, once whatever happens."""
        tokens = [result["inputTokens"], result["outputTokens"]]
        args: list[str | int] = [
            json.dumps(result),
            *tokens,
            retention.seconds,
            pdf_key,
            retention.count,
            period,
        ]
        return bool(await self._complete(keys=[names.job(job_id), names.COMPLETED_INDEX], args=args))

    @translate_redis_errors
    async def fail(self, job_id: str, reason: str, *, retention_seconds: int) -> bool:
        return bool(await self._fail(keys=[names.job(job_id)], args=[reason, retention_seconds]))

    @translate_redis_errors
    async def requeue(self, job_id: str, reason: str, *, count_attempt: bool) -> bool:
        return bool(
            await self._requeue(keys=[names.job(job_id)], args=[reason, "1" if count_attempt else "0"])
        )

    @translate_redis_errors
    async def cancel(self, job_id: str, *, retention_seconds: int) -> str:
        """Returns the state the job was in before; only 'queued' and 'active' were cancelled."""
        return str(await self._cancel(keys=[names.job(job_id)], args=[retention_seconds]))

    @translate_redis_errors
    async def compact_finished(self, older_than_seconds: float, limit: int = 500) -> int:
        """Shrinks the event streams of jobs finished longer ago than that; returns how many."""
        cutoff = now_ms() - int(older_than_seconds * 1000)
        return int(await self._compact(keys=[], args=[cutoff, limit]))

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
