"""Completion webhooks in Redis: which deliveries are due, who holds one, how each attempt ended.

A job submitted with a callback URL keeps it in its record. Its delivery is *scheduled* by the job's
end itself (``rs:webhooks:due``, scored by when its next attempt is due), in the same script that
ends the job (``service.store.lua.webhook_due``), so no ending can lose it; the workers' delivery
loops hear of it on ``rs:webhooks:wake``. Each attempt *claims* the delivery with a lease (its due
time moves to the lease's end, so a worker killed mid-attempt hands it on by itself) and *settles*
it: delivered, retried later, or failed. Everything is in Redis (with AOF, across restarts).
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
        self._due = redis.register_script(webhook_lua.DUE)
        self._claim = redis.register_script(webhook_lua.CLAIM)
        self._keep = redis.register_script(webhook_lua.KEEP_MESSAGE)
        self._settle = redis.register_script(webhook_lua.SETTLE)
        self._release = redis.register_script(webhook_lua.RELEASE)

    @translate_redis_errors
    async def due(self, limit: int) -> tuple[list[str], float | None]:
        """Job ids whose delivery is due now, soonest first, and the seconds until the next one not
        yet due (None: no other), in one command."""
        found: list[str] = await self._due(keys=[names.WEBHOOKS_DUE], args=[limit])
        next_in_ms = int(found[-1])
        return [str(job_id) for job_id in found[:-1]], None if next_in_ms < 0 else next_in_ms / 1000

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
