"""Report jobs in Redis: the record, the queue, and every state change, each one script call with
all its keys named here (``service.store.names``)."""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from service.core.clock import now_ms
from service.store import ending_scripts, names, scripts
from service.store.connection import RedisStore, translate_one_command_errors, translate_redis_errors
from service.store.job_types import (
    Checkpoint,
    NewJob,
    Retention,
    StartOutcome,
    StartPolicy,
    SubmitOutcome,
    SubmitPolicy,
)
from service.store.views import stored_result

TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})

Record = dict[str, str]  # a job's record: job_id, user_id, plan, state, ... (see SUBMIT)


def derive_job_id(user_id: str, idempotency_key: str) -> str:
    """Deterministic, URL-safe, and different for two users who send the same key."""
    return hashlib.sha256(f"{user_id}\x00{idempotency_key}".encode()).hexdigest()[:32]


def fingerprint(*fields: str) -> str:
    """What "the same payload" means for idempotency: the request's fields, in order."""
    return hashlib.sha256("\x00".join(fields).encode()).hexdigest()


def member_of(record: Record) -> str:
    return names.queue_member(record["job_id"], record["user_id"])


def checkpoint_of(record: Record) -> Checkpoint | None:
    """The paid answer saved in the record, if there is one (a retry resumes from it)."""
    raw = record.get(names.ANSWER_FIELD)
    return Checkpoint(**json.loads(raw)) if raw else None


def call_entries(record: Record) -> dict[str, dict[str, Any]]:
    """The record's call ledger: call id -> entry (see ``service.store.call_scripts``); a finished
    job keeps each closed call as [outcome, input, output, request id]."""
    prefix = names.CALL_FIELD_PREFIX
    entries: dict[str, dict[str, Any]] = {}
    for field, raw in record.items():
        if field.startswith(prefix):
            entry = orjson.loads(raw)
            if isinstance(entry, list):
                entry = dict(zip(("outcome", "input", "output", "request_id"), entry, strict=False))
            entries[field[len(prefix) :]] = entry
    return entries


@dataclass(frozen=True)
class Due:
    members: list[str]  # queue members due now, in queue order
    next_in_ms: int | None  # when the first one not yet due is due; None: the queue has no other


def _hold_usage(record: Record, period: str) -> str:
    """The usage the job's queue hold was taken from (the period it was submitted in)."""
    return names.usage(record["user_id"], record.get("budget_period") or period)


def _slot_keys(user_id: str) -> list[str]:
    return [
        names.QUEUE,
        names.active(user_id),
        names.parked(user_id),
        names.QUEUED_COUNTS,
        names.RUNNING_COUNTS,
    ]


class JobStore(RedisStore):
    def __init__(self, redis: Redis, *, deadline: float | None = None) -> None:
        super().__init__(redis, deadline=deadline)
        self._submit = redis.register_script(scripts.SUBMIT)
        self._due = redis.register_script(scripts.DUE)
        self._start = redis.register_script(scripts.START)
        self._advance = redis.register_script(scripts.ADVANCE)
        self._requeue = redis.register_script(scripts.REQUEUE)
        self._complete = redis.register_script(ending_scripts.COMPLETE)
        self._fail = redis.register_script(ending_scripts.FAIL)
        self._cancel = redis.register_script(ending_scripts.CANCEL)
        self._evict = redis.register_script(ending_scripts.EVICT)

    @translate_one_command_errors
    async def submit(
        self, job: NewJob, policy: SubmitPolicy, *, keep_ms: int, score_ms: int
    ) -> SubmitOutcome:
        """Creates the record and its queue entry in one step, or says why not (or what is there).

        ``score_ms`` is the job's place in the queue: its submit time, earlier for a higher priority.
        """
        report_id = "rep_" + secrets.token_hex(12)
        created_ms = now_ms()
        fields: list[str | int] = [
            "job_id", job.job_id, "fingerprint", job.fingerprint, "user_id", job.user_id,
            "plan", job.plan, "report_id", report_id, "input_url", job.input_url, "model", job.model,
            "state", "queued", "stage", "queued", "progress", "0", "attempts", "0",
            "created_ms", created_ms, "due_ms", score_ms,
        ]  # fmt: skip
        # Carried to the worker for its log lines and its spans; left out when empty (tracing off).
        for name, value in (("request_id", job.request_id), ("traceparent", job.traceparent)):
            if value:
                fields += [name, value]
        if job.callback_url:
            fields += ["callback_url", job.callback_url]
        if job.lane != "realtime":
            fields += ["lane", job.lane]
        if policy.budget > 0:  # what the hold is, and which period's usage holds it
            fields += ["budget_period", policy.period, "budget_reserved", policy.reserve]
        member = names.queue_member(job.job_id, job.user_id)
        args: list[str | int] = [member, score_ms, keep_ms, job.job_id, created_ms, job.plan]
        args += [policy.per_minute, policy.burst, policy.budget, policy.reserve, *fields]
        user = job.user_id
        keys = [names.job(job.job_id), names.QUEUE, names.user_finished(user, "jobs"), names.QUEUED_COUNTS]
        keys += [names.usage(user, policy.period), names.rate_bucket(user), names.MARKER]
        reply = await self._submit(keys=keys, args=args)
        return _submit_outcome(reply, report_id, job.fingerprint)

    @translate_redis_errors
    async def get(self, job_id: str) -> Record | None:
        fields: Record = await self._redis.hgetall(names.job(job_id))  # type: ignore[misc]
        return fields or None

    @translate_redis_errors
    async def due(self, limit: int) -> Due:
        """Up to ``limit`` members due now, and when the next one is due: one command."""
        reply = await self._due(keys=[names.QUEUE], args=[limit])
        next_in = int(reply[-1])
        return Due([str(member) for member in reply[:-1]], None if next_in < 0 else next_in)

    @translate_redis_errors
    async def queue_size(self) -> int:
        """Jobs in the queue, due or not, running ones included (a burst worker stops at 0)."""
        return int(await self._redis.zcard(names.QUEUE))

    @translate_redis_errors
    async def wake_one(self) -> None:
        """Wakes one idle worker (a worker that found more due work than it could take)."""
        await self._redis.zadd(names.MARKER, {"0": 0})

    @translate_redis_errors
    async def start(
        self,
        member: str,
        policy: StartPolicy,
        *,
        others_here: int = 0,
        suspect_here: bool = False,
        defer_ms: int = 2_000,
    ) -> StartOutcome:
        """Claims the queue member for this worker. ``others_here``: jobs this worker runs besides
        this one; ``suspect_here``: this worker runs a suspect alone (see START for who is blamed
        when a worker dies); ``defer_ms``: how long a job not taken here waits."""
        job_id, user_id = names.split_member(member)
        keys = [names.job(job_id), names.job_events(job_id), *_slot_keys(user_id)]
        args: list[str | int] = [member, policy.max_crashes, policy.cap_free, policy.cap_pro, policy.lease_ms]
        args += [others_here, "1" if suspect_here else "0", defer_ms, policy.park_ms]
        reply = await self._start(keys=keys, args=args)
        flat = reply[3]
        return StartOutcome(
            state=str(reply[0]),
            attempts=int(reply[1]),
            crashes=int(reply[2]),
            record=dict(zip(flat[::2], flat[1::2], strict=True)),
            first=int(reply[4]) == 1,
            alone=int(reply[5]) == 1,
            restarted=int(reply[6]) == 1,
            lost_calls=tuple(str(call_id) for call_id in reply[7]),
            member=member,
        )

    @translate_redis_errors
    async def advance(self, job_id: str, *, stage: str, progress: int) -> bool:
        """False when the job is no longer running (cancelled meanwhile)."""
        keys = [names.job(job_id), names.job_events(job_id)]
        return bool(await self._advance(keys=keys, args=[stage, progress]))

    @translate_redis_errors
    async def load_checkpoint(self, job_id: str) -> Checkpoint | None:
        raw = await self._redis.hget(names.job(job_id), names.ANSWER_FIELD)  # type: ignore[misc]
        return Checkpoint(**json.loads(raw)) if raw else None

    @translate_redis_errors
    async def requeue(
        self, record: Record, reason: str, *, count_attempt: bool, delay_seconds: float
    ) -> bool:
        """Back to the queue, due after ``delay_seconds``; False when the job is no longer running."""
        job_id = record["job_id"]
        keys = [names.job(job_id), names.job_events(job_id), *_slot_keys(record["user_id"]), names.MARKER]
        args: list[str | int] = [member_of(record), reason, "1" if count_attempt else "0"]
        args.append(max(0, int(delay_seconds * 1000)))
        return bool(await self._requeue(keys=keys, args=args))

    def _ending_keys(self, record: Record, index_kind: str, period: str) -> list[str]:
        job_id, user_id = record["job_id"], record["user_id"]
        keys = [names.job(job_id), names.job_events(job_id), *_slot_keys(user_id)]
        keys += [_hold_usage(record, period), names.MARKER, names.user_finished(user_id, index_kind)]
        keys.append(names.WEBHOOKS_DUE)
        return keys

    @translate_redis_errors
    async def complete(
        self, record: Record, result: dict[str, Any], *, pdf_key: str, retention: Retention, period: str
    ) -> bool:
        """Marks the job completed and counts the report, once whatever happens (its tokens were
        counted by the call ledger as they were spent)."""
        keys = [*self._ending_keys(record, "completed", period), names.usage(record["user_id"], period)]
        args: list[str | int] = [member_of(record), record["job_id"], json.dumps(result), retention.seconds]
        args += [retention.count, pdf_key, stored_result(result)]
        reply = await self._complete(keys=keys, args=args)
        return await self._ended(reply, record["user_id"])

    @translate_redis_errors
    async def fail(
        self, record: Record, reason: str, *, code: str, retention: Retention, period: str
    ) -> bool:
        keys = self._ending_keys(record, "ended", period)
        args: list[str | int] = [member_of(record), record["job_id"], reason, code, retention.seconds]
        args.append(retention.count)
        return await self._ended(await self._fail(keys=keys, args=args), record["user_id"])

    @translate_redis_errors
    async def cancel(self, record: Record, *, retention: Retention, queued_seconds: int, period: str) -> str:
        """Returns the state the job was in before; only 'queued' and 'active' were cancelled. A job
        cancelled while it waited is kept ``queued_seconds`` only: it cost nothing."""
        keys = self._ending_keys(record, "ended", period)
        args: list[str | int] = [member_of(record), record["job_id"], retention.seconds, queued_seconds]
        args.append(retention.count)
        reply = await self._cancel(keys=keys, args=args)
        await self._ended([1, *reply[1:]], record["user_id"])
        return str(reply[0])

    async def _ended(self, reply: list[Any], user_id: str) -> bool:
        """The ending's evictions: each job past the user's cap becomes a tombstone."""
        if int(reply[0]) != 1:
            return False
        evicted = [str(job_id) for job_id in (reply[1] if len(reply) > 1 else [])]
        if evicted:
            listing = names.user_finished(user_id, "jobs")
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id in evicted:
                    keys = [names.job(job_id), names.job_events(job_id), listing]
                    await self._evict(keys=keys, args=[job_id], client=pipe)
                await pipe.execute()
        return True

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
