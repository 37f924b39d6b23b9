"""The batch lane in Redis: jobs handed to it, the intent written before a batch is created, the
batches followed, the driver's lease (see ``service.store.batch_scripts``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from service.store import batch_scripts, names, scripts
from service.store.connection import RedisStore, translate_redis_errors
from service.store.jobs import Record, member_of

KNOWN_MS = 3 * 24 * 3600 * 1000  # batches stay known (never another intent's) this long


@dataclass(frozen=True)
class Intent:
    token: str
    written_at: str  # ISO 8601, the writer's clock
    members: tuple[str, ...]


@dataclass(frozen=True)
class Taken:
    intent: Intent | None  # None: another intent is open (its batch may be on its way)
    gone: tuple[str, ...] = ()  # members that stopped running before they were sent


@dataclass(frozen=True)
class PendingDue:
    members: list[str]  # to send now
    wait_ms: int | None  # until the oldest's window ends; None: nothing waits


class BatchStore(RedisStore):
    def __init__(self, redis: Redis, *, deadline: float | None = None) -> None:
        super().__init__(redis, deadline=deadline)
        register = redis.register_script
        self._hand_off = register(batch_scripts.HAND_OFF)
        self._pending_due = register(batch_scripts.PENDING_DUE)
        self._take = register(batch_scripts.TAKE)
        self._record = register(batch_scripts.RECORD_BATCH)
        self._reset = register(batch_scripts.RESET_INTENT)
        self._reschedule = register(batch_scripts.RESCHEDULE)
        self._return = register(batch_scripts.RETURN)
        self._forget = register(batch_scripts.FORGET)
        self._lease = register(batch_scripts.LEASE)
        self._due = register(scripts.DUE)

    @translate_redis_errors
    async def hand_off(self, record: Record, request: str, *, lease_ms: int, call_id: str, source: str,
                       input_name: str) -> bool:  # fmt: skip
        """The prepared job joins the next batch; False when it stopped running meanwhile."""
        job_id, user = record["job_id"], record["user_id"]
        keys = [names.job(job_id), names.job_events(job_id), names.QUEUE, names.active(user)]
        keys += [names.parked(user), names.MARKER, names.BATCH_PENDING, names.batch_request(job_id)]
        args: list[str | int] = [member_of(record), request, lease_ms, call_id, source, input_name]
        return bool(await self._hand_off(keys=keys, args=args))

    @translate_redis_errors
    async def drop(self, member: str) -> None:
        """A pending member whose prepared request is gone: the report queue brings its job back."""
        await self._redis.zrem(names.BATCH_PENDING, member)

    @translate_redis_errors
    async def states(self, members: list[str]) -> list[str | None]:
        """Each member's job state (None: the record is gone)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.hget(_job_key(member), "state")
            return [None if state is None else str(state) for state in await pipe.execute()]

    @translate_redis_errors
    async def pending_due(self, window_ms: int, most: int) -> PendingDue:
        reply = await self._pending_due(keys=[names.BATCH_PENDING], args=[window_ms, most])
        wait = int(reply[0])
        return PendingDue([str(m) for m in reply[1:]], None if wait < 0 else wait)

    @translate_redis_errors
    async def requests(self, members: list[str]) -> dict[str, str]:
        """The prepared requests of these members (by member); one missing has expired."""
        job_ids = [names.split_member(member)[0] for member in members]
        raws = await self._redis.mget([names.batch_request(job_id) for job_id in job_ids])
        return {member: str(raw) for member, raw in zip(members, raws, strict=True) if raw}

    @translate_redis_errors
    async def take(self, members: list[str], token: str, written_at: str) -> Taken:
        keys = [names.BATCH_PENDING, names.BATCH_INTENT, *(_job_key(member) for member in members)]
        intent = orjson.dumps({"token": token, "written_at": written_at})
        reply = await self._take(keys=keys, args=[intent, *members])
        if int(reply[0]) == 0:
            return Taken(None)
        taken = tuple(str(member) for member in reply[1])
        gone = tuple(str(member) for member in reply[2])
        return Taken(Intent(token, written_at, taken) if taken else None, gone)

    @translate_redis_errors
    async def intent(self) -> Intent | None:
        raw = await self._redis.get(names.BATCH_INTENT)
        if raw is None:
            return None
        data = orjson.loads(raw)
        return Intent(str(data["token"]), str(data["written_at"]), tuple(data.get("members") or ()))

    @translate_redis_errors
    async def record_batch(
        self, intent: Intent, batch_id: str, *, created_ms: int, first_poll_ms: int
    ) -> bool:
        keys = [names.BATCH_INTENT, names.BATCH_OPEN, names.BATCH_KNOWN, names.batch(batch_id)]
        keys += [_job_key(member) for member in intent.members]
        args: list[str | int | bytes] = [intent.token, batch_id, first_poll_ms, created_ms]
        args += [orjson.dumps(list(intent.members)), KNOWN_MS]
        recorded = bool(await self._record(keys=keys, args=args))
        if recorded:  # sent: the prepared requests are no longer needed (they expire anyway)
            await self._redis.delete(*(names.batch_request(names.split_member(m)[0]) for m in intent.members))
        return recorded

    @translate_redis_errors
    async def reset_intent(self, intent: Intent) -> bool:
        keys = [names.BATCH_INTENT, names.BATCH_PENDING, *(_job_key(member) for member in intent.members)]
        return bool(await self._reset(keys=keys, args=[intent.token, *intent.members]))

    @translate_redis_errors
    async def known(self) -> set[str]:
        """Batches recorded lately: never a candidate for another intent."""
        return {str(batch_id) for batch_id in await self._redis.zrange(names.BATCH_KNOWN, 0, -1)}

    @translate_redis_errors
    async def due_batches(self, limit: int) -> tuple[list[str], int | None]:
        """Followed batches due for a look, and ms until the next one is (None: none followed)."""
        reply = await self._due(keys=[names.BATCH_OPEN], args=[limit])
        next_in = int(reply[-1])
        return [str(batch_id) for batch_id in reply[:-1]], None if next_in < 0 else next_in

    @translate_redis_errors
    async def members(self, batch_id: str) -> list[str]:
        raw = await self._redis.hget(names.batch(batch_id), "members")  # type: ignore[misc]
        return [str(member) for member in orjson.loads(raw)] if raw else []

    @translate_redis_errors
    async def reschedule(self, batch_id: str, delay_ms: int) -> int:
        """Looks at the batch again after ``delay_ms``; returns how often it was looked at before."""
        keys = [names.BATCH_OPEN, names.batch(batch_id)]
        return int(await self._reschedule(keys=keys, args=[batch_id, delay_ms]))

    @translate_redis_errors
    async def polls(self, batch_id: str) -> int:
        raw = await self._redis.hget(names.batch(batch_id), "polls")  # type: ignore[misc]
        return int(raw or 0)

    @translate_redis_errors
    async def finished(self, batch_id: str) -> None:
        """Every job of the batch has its outcome: the batch is no longer followed."""
        await self._redis.zrem(names.BATCH_OPEN, batch_id)
        await self._redis.delete(names.batch(batch_id))

    @translate_redis_errors
    async def return_job(
        self, member: str, batch_id: str, outcome: str, error: dict[str, Any] | None
    ) -> bool:
        job_id = names.split_member(member)[0]
        keys = [names.job(job_id), names.job_events(job_id), names.QUEUE, names.QUEUED_COUNTS]
        keys += [names.RUNNING_COUNTS, names.MARKER]
        raw_error = orjson.dumps(error).decode() if error else ""
        return bool(await self._return(keys=keys, args=[member, batch_id, outcome, raw_error]))

    @translate_redis_errors
    async def forget(self, member: str) -> bool:
        keys = [_job_key(member), names.BATCH_PENDING, names.QUEUE]
        return bool(await self._forget(keys=keys, args=[member]))

    @translate_redis_errors
    async def clear_outcome(self, job_id: str) -> None:
        """The job's batch outcome is acted on (a retry): its next attempt is a fresh batch job."""
        await self._redis.hdel(names.job(job_id), "batch_state", "batch_error", "batch_id")  # type: ignore[misc]

    @translate_redis_errors
    async def lease(self, token: str, lease_ms: int) -> bool:
        return bool(await self._lease(keys=[names.BATCH_DRIVER], args=[token, lease_ms]))

    @translate_redis_errors
    async def release(self, token: str) -> None:
        if await self._redis.get(names.BATCH_DRIVER) == token:
            await self._redis.delete(names.BATCH_DRIVER)


def _job_key(member: str) -> str:
    return names.job(names.split_member(member)[0])
