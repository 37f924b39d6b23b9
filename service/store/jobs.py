"""Report jobs in Redis: the record, its state changes, its checkpoint, and the arq queue entry."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any, cast

import orjson
from arq.constants import abort_jobs_ss, default_queue_name, job_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

from service.clock import now_ms
from service.store import scripts
from service.store.connection import RedisStore, translate_redis_errors

JOB_FUNCTION = "generate_report"
COMPLETED_INDEX = "rs:completed"  # job ids by finish time, to cap how many completed jobs are kept
TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})


def job_key(job_id: str) -> str:
    return f"rs:job:{job_id}"


def events_key(job_id: str) -> str:
    return f"rs:job:{job_id}:events"


def checkpoint_key(job_id: str) -> str:
    return f"rs:job:{job_id}:answer"


def usage_key(user_id: str) -> str:
    return f"rs:usage:{user_id}"


def derive_job_id(user_id: str, idempotency_key: str) -> str:
    """Deterministic, URL-safe, and different for two users who send the same key."""
    return hashlib.sha256(f"{user_id}\x00{idempotency_key}".encode()).hexdigest()[:32]


def fingerprint(*fields: str) -> str:
    """What "the same payload" means for idempotency: the request's fields, in order."""
    return hashlib.sha256("\x00".join(fields).encode()).hexdigest()


def dumps_job(data: dict[str, Any]) -> bytes:
    """arq's job serializer: JSON, so the API can write queue entries in its own atomic script."""
    return orjson.dumps(data)


def loads_job(raw: bytes) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(raw))


@dataclass(frozen=True)
class Retention:
    """How long, and how many, completed jobs are kept (their results and idempotent replays)."""

    seconds: int
    count: int


@dataclass(frozen=True)
class NewJob:
    job_id: str
    user_id: str
    plan: str
    input_url: str
    model: str
    fingerprint: str


@dataclass(frozen=True)
class SubmitOutcome:
    created: bool
    report_id: str
    state: str
    same_payload: bool


@dataclass(frozen=True)
class StartOutcome:
    state: str  # 'active': go on; 'crashed': too many crash restarts; anything else: nothing to do
    attempts: int
    crashes: int

    @property
    def proceed(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True)
class Checkpoint:
    """The model's answer, saved before rendering so no later attempt ever pays for it again."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    offline: bool
    source: str  # "sales.csv (8.5 kB)", printed under the title
    input_name: str = "input"


class JobStore(RedisStore):
    def __init__(
        self, redis: Redis, *, queue_name: str = default_queue_name, deadline: float | None = None
    ) -> None:
        super().__init__(redis, deadline=deadline)
        self._queue = queue_name
        self._submit = redis.register_script(scripts.SUBMIT)
        self._start = redis.register_script(scripts.START)
        self._advance = redis.register_script(scripts.ADVANCE)
        self._complete = redis.register_script(scripts.COMPLETE)
        self._fail = redis.register_script(scripts.FAIL)
        self._requeue = redis.register_script(scripts.REQUEUE)
        self._cancel = redis.register_script(scripts.CANCEL)

    @translate_redis_errors
    async def submit(self, job: NewJob, *, arq_ttl_ms: int) -> SubmitOutcome:
        """Creates the record and its queue entry in one step, or reports the job already there."""
        now = now_ms()
        report_id = "rep_" + secrets.token_hex(12)
        payload = serialize_job(JOB_FUNCTION, (job.job_id,), {}, None, now, serializer=dumps_job)
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
        args: list[bytes | str | int] = [payload, now, arq_ttl_ms, orjson.dumps(fields)]
        keys = [job_key(job.job_id), job_key_prefix + job.job_id, self._queue]
        reply = await self._submit(keys=keys, args=args)
        if reply[0] == 1:
            return SubmitOutcome(created=True, report_id=report_id, state="queued", same_payload=True)
        _, existing_fingerprint, existing_report, state = reply
        return SubmitOutcome(False, existing_report, state, existing_fingerprint == job.fingerprint)

    @translate_redis_errors
    async def get(self, job_id: str) -> dict[str, str] | None:
        fields: dict[str, str] = await self._redis.hgetall(job_key(job_id))  # type: ignore[misc]
        return fields or None

    @translate_redis_errors
    async def start(self, job_id: str, *, stage: str, progress: int, max_crashes: int) -> StartOutcome:
        state, attempts, crashes = await self._start(
            keys=[job_key(job_id), events_key(job_id)], args=[now_ms(), stage, progress, max_crashes]
        )
        return StartOutcome(str(state), int(attempts), int(crashes))

    @translate_redis_errors
    async def advance(self, job_id: str, *, stage: str, progress: int) -> bool:
        return bool(await self._advance(keys=[job_key(job_id), events_key(job_id)], args=[stage, progress]))

    @translate_redis_errors
    async def load_checkpoint(self, job_id: str) -> Checkpoint | None:
        raw = await self._redis.get(checkpoint_key(job_id))
        return Checkpoint(**json.loads(raw)) if raw else None

    @translate_redis_errors
    async def save_checkpoint(self, job_id: str, checkpoint: Checkpoint, *, ttl_seconds: int) -> None:
        body = json.dumps(checkpoint.__dict__)
        await self._redis.set(checkpoint_key(job_id), body, ex=ttl_seconds)

    @translate_redis_errors
    async def complete(
        self, job_id: str, user_id: str, result: dict[str, Any], *, pdf_key: str, retention: Retention
    ) -> bool:
        """Marks the job completed and adds its tokens to the user's usage, once whatever happens."""
        keys = [
            job_key(job_id),
            events_key(job_id),
            checkpoint_key(job_id),
            usage_key(user_id),
            COMPLETED_INDEX,
        ]
        args = [
            now_ms(),
            json.dumps(result),
            result["inputTokens"],
            result["outputTokens"],
            retention.seconds,
            pdf_key,
            retention.count,
            job_id,
        ]
        return bool(await self._complete(keys=keys, args=args))

    @translate_redis_errors
    async def fail(self, job_id: str, reason: str, *, retention_seconds: int) -> bool:
        keys = [job_key(job_id), events_key(job_id), checkpoint_key(job_id)]
        return bool(await self._fail(keys=keys, args=[now_ms(), reason, retention_seconds]))

    @translate_redis_errors
    async def requeue(self, job_id: str, reason: str, *, count_attempt: bool) -> bool:
        keys = [job_key(job_id), events_key(job_id)]
        return bool(await self._requeue(keys=keys, args=[reason, "1" if count_attempt else "0"]))

    @translate_redis_errors
    async def cancel(self, job_id: str, *, retention_seconds: int) -> str:
        """Returns the state the job was in before; only 'queued' and 'active' were cancelled."""
        keys = [
            job_key(job_id),
            events_key(job_id),
            job_key_prefix + job_id,
            self._queue,
            abort_jobs_ss,
            checkpoint_key(job_id),
        ]
        return str(await self._cancel(keys=keys, args=[job_id, now_ms(), retention_seconds]))

    @translate_redis_errors
    async def usage(self, user_id: str) -> dict[str, int]:
        raw: dict[str, str] = await self._redis.hgetall(usage_key(user_id))  # type: ignore[misc]
        return {name: int(value) for name, value in raw.items()}
