"""A user's own jobs, newest first, a page at a time: from the per-user index the submit script keeps
(``rs:user:<id>:jobs``), read with the records in one round trip per page."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from redis.asyncio import Redis

from service.store import names
from service.store.connection import RedisStore, translate_redis_errors

Entries = list[tuple[str, float]]  # (job id, creation ms)

# How many index entries one page may look at when a state filter skips most of them: a page can
# come back short (with a cursor to go on), but never costs an unbounded scan.
SCAN_FACTOR = 5


@dataclass(frozen=True)
class Page:
    records: list[dict[str, str]]
    next_cursor: str | None


def encode_cursor(created_ms: int, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_ms}:{job_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """``ValueError`` for anything that is not a cursor this service handed out."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("not a cursor from this listing") from exc
    created, _, job_id = text.partition(":")
    if not created.isascii() or not created.isdigit() or len(job_id) != 32 or not job_id.isalnum():
        raise ValueError("not a cursor from this listing")
    return int(created), job_id


class JobListing(RedisStore):
    async def _entries(self, index: str, cursor: str | None, wanted: int) -> tuple[Entries, bool]:
        """Index entries after the cursor, newest first, and whether the index may go on past them.
        Jobs created in the same millisecond are ordered by id (as Redis orders equal scores): the
        rest of the cursor's millisecond is read whole, then the older ones."""
        if cursor is None:
            entries = await self._redis.zrevrangebyscore(
                index, "+inf", "-inf", start=0, num=wanted, withscores=True
            )
            return entries, len(entries) == wanted
        created_ms, job_id = decode_cursor(cursor)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrevrangebyscore(index, created_ms, created_ms, withscores=True)
            pipe.zrevrangebyscore(index, f"({created_ms}", "-inf", start=0, num=wanted, withscores=True)
            same, older = await pipe.execute()
        return [(j, s) for j, s in same if j < job_id] + older, len(older) == wanted

    def __init__(self, redis: Redis, *, deadline: float | None = None) -> None:
        super().__init__(redis, deadline=deadline)

    @translate_redis_errors
    async def page(self, user_id: str, *, limit: int, cursor: str | None, state: str | None) -> Page:
        """Up to ``limit`` of the user's retained jobs (of ``state``, if given), newest first, after
        ``cursor``; ``next_cursor`` is None once there is nothing older."""
        index = names.user_finished(user_id, "jobs")
        wanted = limit * (SCAN_FACTOR if state else 1) + 1
        entries, truncated = await self._entries(index, cursor, wanted)
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id, _ in entries:
                pipe.hgetall(names.job(job_id))
            records: list[dict[str, str]] = await pipe.execute()
        kept: list[dict[str, str]] = []
        examined = 0
        for record in records:
            if len(kept) == limit:
                break
            examined += 1
            if record and not record.get("evicted") and (state is None or record.get("state") == state):
                kept.append(record)
        more = examined < len(entries) or truncated
        if not more or examined == 0:
            return Page(kept, None)
        job_id, score = entries[examined - 1]
        return Page(kept, encode_cursor(int(score), job_id))
