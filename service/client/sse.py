"""Reading Server-Sent Events with httpx: a line parser, and a follower that resumes with Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled"})
# Longer than the server's ping interval (at most 15 s): a silent connection is a dead one.
READ_TIMEOUT_SECONDS = 45.0


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class SseParser:
    """Feed it lines (without their line endings); it returns an event at each blank line."""

    def __init__(self) -> None:
        self.comments = 0
        self._id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SseEvent(self._id, self._event or "message", "\n".join(self._data))
        self._event, self._data = "", []
        return event


class StreamRefused(Exception):
    """The server answered the events request with an error that retrying will not fix."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.code = code  # the contract's error code, when the answer had one


class _StreamOver(Exception):
    """204 on resume: the client already has the terminal event; nothing more will come."""


def _error(response: httpx.Response) -> tuple[str, str]:
    """The contract's (message, code) of an error answer; the reason phrase for any other body."""
    try:
        body = response.json()
        return str(body["message"]), str(body.get("error", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return response.reason_phrase, ""


async def _read_once(
    client: httpx.AsyncClient, path: str, headers: Mapping[str, str], last_id: str | None
) -> AsyncGenerator[SseEvent, None]:
    request_headers = {**headers, "Accept": "text/event-stream"}
    if last_id is not None:
        request_headers["Last-Event-ID"] = last_id
    timeout = httpx.Timeout(10.0, read=READ_TIMEOUT_SECONDS)
    async with client.stream("GET", path, headers=request_headers, timeout=timeout) as response:
        if response.status_code == 204:
            raise _StreamOver
        if response.status_code != 200:
            await response.aread()
            if response.status_code >= 500:
                raise httpx.RemoteProtocolError(f"server answered {response.status_code}")
            raise StreamRefused(response.status_code, *_error(response))
        parser = SseParser()
        async for line in response.aiter_lines():
            event = parser.feed(line)
            if event is not None:
                yield event


async def follow(
    client: httpx.AsyncClient, path: str, headers: Mapping[str, str], *, max_retries: int = 8
) -> AsyncIterator[SseEvent]:
    """Every event of the stream until its terminal event, reconnecting with ``Last-Event-ID``
    whenever the connection drops or the server ends it early (a restart, a deploy)."""
    last_id: str | None = None
    failures = 0
    while True:
        try:
            async with contextlib.aclosing(_read_once(client, path, headers, last_id)) as events:
                async for event in events:
                    failures = 0
                    last_id = event.id if event.id is not None else last_id
                    yield event
                    if event.event in TERMINAL_EVENTS:
                        return
        except _StreamOver:
            return
        except httpx.TransportError:
            pass  # dropped: resume below
        failures += 1
        if failures > max_retries:
            raise StreamRefused(0, f"lost the event stream {max_retries} times in a row")
        await asyncio.sleep(min(0.25 * 2**failures, 5.0))
