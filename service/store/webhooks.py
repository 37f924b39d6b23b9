"""Completion webhooks in Redis: which deliveries are due, who holds one, how each attempt ended.

A job submitted with a callback URL is *watched* (``rs:webhooks:watch``) in the same transaction that
creates it. When it ends, its delivery is *scheduled* (``rs:webhooks:due``, scored by when its next
attempt is due) by whoever saw it end: the worker, right after the job's end (``schedule``); the API,
after a cancel; and the delivery loop's scan of the watched jobs (``scan_watched``), which finds any
ended job whose scheduling was lost to a crash. Each attempt *claims* the delivery with a lease (its
due time moves to the lease's end, so a worker killed mid-attempt hands it on by itself) and
*settles* it: delivered, retried later, or failed. Everything is in Redis (with AOF, across restarts).

The one line that would make scheduling part of the job's end itself, inside the job-ending scripts
(``finish`` in ``service.store.lua``)::

    if redis.call('HEXISTS', job, 'callback_url') == 1 then
      redis.call('ZADD', '@WEBHOOKS_DUE@', 'NX', now_ms(), job_id_of(job))
    end

``CLAIM`` accepts a delivery scheduled that way as it is (it creates the delivery from the record).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from service.store import names, webhook_lua
from service.store.connection import RedisStore, translate_redis_errors
from service.store.views import webhook_event, webhook_message_id

# A delivery's state outlives its give-up time by this much, whatever happens to the loop meanwhile.
KEEP_MARGIN_SECONDS = 3600


@dataclass(frozen=True)
class Claim:
    """One attempt of a delivery, leased to this worker until it settles or the lease runs out."""

    job_id: str
    token: str  # the lease: settling with another token changes nothing
    attempts: int  # this one included
    url: str = ""
    user_id: str = ""
    message_id: str = ""  # empty until the first attempt writes the message
    body: bytes = b""
    gave_up: bool = False  # past the give-up time already: failed without another attempt


class WebhookDeliveries(RedisStore):
    def __init__(self, redis: Redis, *, deadline: float | None = None) -> None:
        super().__init__(redis, deadline=deadline)
        self._schedule = redis.register_script(webhook_lua.SCHEDULE)
        self._due = redis.register_script(webhook_lua.DUE)
        self._claim = redis.register_script(webhook_lua.CLAIM)
        self._keep = redis.register_script(webhook_lua.KEEP_MESSAGE)
        self._settle = redis.register_script(webhook_lua.SETTLE)
        self._release = redis.register_script(webhook_lua.RELEASE)

    @translate_redis_errors
    async def schedule(self, job_id: str) -> str:
        """Schedules the ended job's delivery, once; 'scheduled', 'known', 'running' or 'none'."""
        keys = [names.WEBHOOKS_WATCH, names.WEBHOOKS_DUE, names.job(job_id)]
        return str(await self._schedule(keys=keys, args=[job_id]))

    @translate_redis_errors
    async def scan_watched(self, *, older_than_ms: int, limit: int) -> dict[str, int]:
        """Looks at watched jobs not looked at for ``older_than_ms`` (oldest first): ended ones are
        scheduled, running ones looked at again a scan later. Counts per answer of ``schedule``."""
        time = await self._redis.time()
        cutoff = int(time[0]) * 1000 + int(time[1]) // 1000 - older_than_ms
        watched: list[str] = await self._redis.zrangebyscore(
            names.WEBHOOKS_WATCH, "-inf", cutoff, start=0, num=limit
        )
        counts: dict[str, int] = {"looked_at": len(watched)}
        if not watched:
            return counts
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in watched:
                keys = [names.WEBHOOKS_WATCH, names.WEBHOOKS_DUE, names.job(job_id)]
                await self._schedule(keys=keys, args=[job_id], client=pipe)
            answers = await pipe.execute()
        for answer in answers:
            counts[str(answer)] = counts.get(str(answer), 0) + 1
        return counts

    @translate_redis_errors
    async def due(self, limit: int) -> list[str]:
        """Job ids whose delivery is due now, soonest first."""
        found: list[str] = await self._due(keys=[names.WEBHOOKS_DUE], args=[limit])
        return found

    @translate_redis_errors
    async def claim(self, job_ids: list[str], *, lease_ms: int, give_up_ms: int) -> list[Claim]:
        """Leases each delivery still due to this worker; those another worker took are left out."""
        if not job_ids:
            return []
        keep_seconds = give_up_ms // 1000 + KEEP_MARGIN_SECONDS
        tokens = [secrets.token_hex(8) for _ in job_ids]
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id, token in zip(job_ids, tokens, strict=True):
                keys = [names.WEBHOOKS_DUE, names.webhook(job_id), names.job(job_id)]
                args: list[str | int] = [job_id, lease_ms, token, keep_seconds, give_up_ms]
                await self._claim(keys=keys, args=args, client=pipe)
            replies = await pipe.execute()
        claims = map(_claim, job_ids, tokens, replies)
        return [claim for claim in claims if claim is not None]

    @translate_redis_errors
    async def with_message(self, claim: Claim) -> Claim | None:
        """The claim with its message: written from the job's record at the first attempt, the same
        bytes and id ever after. None when the record is gone or no longer pending."""
        if claim.message_id:
            return claim
        record: dict[str, str] = await self._redis.hgetall(names.job(claim.job_id))  # type: ignore[misc]
        if not record.get("report_id") or record.get("evicted"):
            return None
        body = orjson.dumps(webhook_event(claim.job_id, record))
        args: list[str | bytes] = [webhook_message_id(record), body]
        kept = await self._keep(keys=[names.webhook(claim.job_id)], args=args)
        if not kept:
            return None
        message_id, stored = kept
        return Claim(**{**claim.__dict__, "message_id": message_id, "body": stored.encode()})

    @translate_redis_errors
    async def settle(self, claim: Claim, outcome: str, *, retry_in_ms: int = 0, give_up_ms: int) -> str:
        """``outcome``: 'delivered', 'failed' or 'retry'; returns what was recorded ('stale' when the
        lease had run out and another worker holds the delivery)."""
        keys = [names.WEBHOOKS_DUE, names.webhook(claim.job_id), names.job(claim.job_id)]
        args: list[str | int] = [claim.job_id, claim.token, outcome, retry_in_ms, give_up_ms]
        return str(await self._settle(keys=keys, args=args))

    @translate_redis_errors
    async def release(self, claim: Claim) -> bool:
        """Gives the lease back (a stopping worker): the delivery is due again at once."""
        keys = [names.WEBHOOKS_DUE, names.webhook(claim.job_id)]
        return bool(await self._release(keys=keys, args=[claim.job_id, claim.token]))


def _claim(job_id: str, token: str, reply: Any) -> Claim | None:
    if not reply:
        return None
    if reply[0] == "gave_up":
        return Claim(job_id, token, int(reply[1]), gave_up=True)
    _, attempts, url, user_id, message_id, body, _first_ms = reply
    return Claim(job_id, token, int(attempts), url, user_id, message_id, body.encode())
