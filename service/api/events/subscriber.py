"""One SSE client of the fan-out: the events it has yet to send, and the stream position they reach."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from service.api.events.wire import stream_id

BACKLOG_LIMIT = 1_000  # events queued for one slow client before it is told to reconnect and catch up


class Subscriber:
    """Filled by the fan-out's reader task, drained by the response's generator (same event loop)."""

    __slots__ = ("_backlog", "_done", "_ready", "_release", "job_id", "last", "user_id")

    def __init__(
        self, job_id: str, user_id: str | None, chunks: list[bytes], last_id: str,
        release: Callable[[Subscriber], None],
    ) -> None:  # fmt: skip
        self.job_id = job_id
        self.user_id = user_id  # the owner, for the handler's check (not the whole record: memory)
        self.last = stream_id(last_id)
        self._backlog: deque[bytes] = deque(chunks)
        self._ready = asyncio.Event()
        self._done = False
        self._release = release

    @property
    def exhausted(self) -> bool:
        """Nothing to send and nothing more to come."""
        return self._done and not self._backlog

    def deliver(self, chunk: bytes, entry_id: tuple[int, int], terminal: bool) -> bool:
        """Queues one entry; False when this subscriber leaves the fan-out (finished or too slow)."""
        if entry_id <= self.last:
            return True  # already sent as part of its snapshot or replay
        if len(self._backlog) >= BACKLOG_LIMIT:
            # Dropping events would break the contract; ending the stream makes the client reconnect
            # with Last-Event-ID and read what it missed from Redis.
            self.finish()
            return False
        self._backlog.append(chunk)
        self.last = entry_id
        if terminal:
            self._done = True
        self._ready.set()
        return not terminal

    def finish(self) -> None:
        """Sends what is queued, then ends the stream."""
        self._done = True
        self._ready.set()

    async def next(self) -> bytes | None:
        while not self._backlog:
            if self._done:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._backlog.popleft()

    def close(self) -> None:
        """Idempotent: the client is gone or the stream is over; forget it at once."""
        self.finish()
        self._release(self)
