"""The events contract: how a job's record and its Redis stream entries become Server-Sent Events.

Pure functions, no I/O: the shared reader (``service.api.events.fanout``) feeds them what it read from Redis.
Stream entry ids are the SSE ids, so ``Last-Event-ID`` is a position in the job's stream.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from service.store.event_streams import Entry
from service.store.jobs import TERMINAL_STATES
from service.store.views import error_view, report_paths, result_view

TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled"})
# The id of "nothing yet": a queued job's stream may not exist (the submit script writes no event).
NO_ID = "0-0"
# ASCII digits only: ``\d`` would take "٣" or "²", which Redis refuses. Each part is an unsigned 64-bit
# number in Redis, so 20 digits can still be too many: ``valid_event_id`` checks the value too.
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_STREAM_ID_PART_MAX = 2**64 - 1


def stream_id(text: str) -> tuple[int, int]:
    milliseconds, _, sequence = text.partition("-")
    return int(milliseconds), int(sequence or 0)


def valid_event_id(text: str | None) -> str | None:
    """A ``Last-Event-ID`` worth resuming from; anything else means "start with a snapshot".

    Only ids Redis accepts get through: one it refuses would fail the shared opening read."""
    if text is None or not _STREAM_ID.fullmatch(text):
        return None
    return text if max(stream_id(text)) <= _STREAM_ID_PART_MAX else None


_SEP = "\r\n"  # the line ending sse-starlette writes its keep-alive comments with
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


def encode(event_id: str, name: str, data: str) -> bytes:
    """One event in the SSE wire format, byte for byte what ``sse_starlette.ServerSentEvent`` writes
    (``tests/api/events/test_wire.py`` compares them); done here so only the endpoint loads it."""
    data_lines = "".join(f"data: {line}{_SEP}" for line in _LINE_BREAKS.split(data))
    clean = _LINE_BREAKS.sub
    return f"id: {clean('', event_id)}{_SEP}event: {clean('', name)}{_SEP}{data_lines}{_SEP}".encode()


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def entry_data(job_id: str, name: str, raw: str) -> str:
    """The stored result lacks its URL (the worker does not know the API's paths): add it here."""
    if name != "completed":
        return raw
    stored: dict[str, Any] = json.loads(raw)
    return _json({"pdfUrl": report_paths(job_id)["pdfUrl"], **stored})


def encode_entry(job_id: str, entry: Entry) -> tuple[bytes, bool]:
    """The entry as SSE bytes (encoded once, shared by every subscriber), and whether it is terminal."""
    entry_id, fields = entry
    name = fields.get("event", "progress")
    return encode(entry_id, name, entry_data(job_id, name, fields.get("data", "{}"))), name in TERMINAL_EVENTS


def snapshot(record: dict[str, str], event_id: str) -> bytes:
    data = {
        "progress": int(record.get("progress") or 0),
        "state": record.get("state", "queued"),
        "stage": record.get("stage", "queued"),
    }
    return encode(event_id, "progress", _json(data))


def terminal_from_record(job_id: str, record: dict[str, str], event_id: str) -> bytes:
    """A finished job's ending from its record: its stream is kept a minute only (``REPLAY_MS``),
    the record for the job's whole retention. The event keeps its stream id ('end_id')."""
    state = record["state"]
    data: dict[str, Any] | None = {}
    if state == "completed":
        data = result_view(job_id, record)
    elif state == "failed":
        data = error_view(record) or {"reason": "the job failed"}
    return encode(record.get("end_id") or event_id, state, _json(data or {}))


@dataclass(frozen=True)
class Opening:
    """What one MULTI/EXEC read for a new subscriber: the record and the stream, at one instant."""

    job_id: str
    record: dict[str, str] | None
    tail: list[Entry]  # the last two entries, newest first
    after: str | None = None  # the client's Last-Event-ID
    replay: list[Entry] | None = None  # entries from ``after`` (inclusive) to the end


@dataclass(frozen=True)
class Start:
    """What a new subscriber is sent first, the stream position that reflects, and whether to go live."""

    chunks: list[bytes]
    last_id: str
    live: bool


def _finished(record: dict[str, str]) -> bool:
    return record.get("state") in TERMINAL_STATES


def plan_fresh(job_id: str, record: dict[str, str], tail: list[Entry]) -> Start:
    last_id = tail[0][0] if tail else NO_ID
    if not _finished(record):
        return Start([snapshot(record, last_id)], last_id, live=True)
    if tail and tail[0][1].get("event") in TERMINAL_EVENTS:
        # The snapshot takes the id before the terminal entry, so resuming from it replays the end.
        before = tail[1][0] if len(tail) > 1 else NO_ID
        terminal, _ = encode_entry(job_id, tail[0])
        return Start([snapshot(record, before), terminal], last_id, live=False)
    return Start([snapshot(record, last_id), terminal_from_record(job_id, record, last_id)], last_id, False)


def plan_resume(job_id: str, record: dict[str, str], after: str, replay: list[Entry]) -> Start | None:
    """Every entry after ``after``; None when that cannot be exact (trimmed away, or not this stream's)."""
    if after != NO_ID and (not replay or replay[0][0] != after):
        return None
    if after == NO_ID and _finished(record):
        return None  # a finished job's stream goes a minute after its end: "everything" may not be there
    if _finished(record) and not any(fields.get("event") in TERMINAL_EVENTS for _, fields in replay):
        return None
    chunks: list[bytes] = []
    last_id = after
    for entry in replay:
        if entry[0] == after:
            continue
        chunk, terminal = encode_entry(job_id, entry)
        chunks.append(chunk)
        last_id = entry[0]
        if terminal:
            return Start(chunks, last_id, live=False)
    # A finished job whose terminal event the client already has: nothing more will ever come.
    return Start(chunks, last_id, live=not _finished(record))


def plan_start(opening: Opening) -> Start | None:
    """None for a job that does not exist."""
    record = opening.record
    if record is None or record.get("evicted"):
        return None  # no such job, or no longer retained
    if opening.after is not None and opening.replay is not None:
        resumed = plan_resume(opening.job_id, record, opening.after, opening.replay)
        if resumed is not None:
            return resumed
    return plan_fresh(opening.job_id, record, opening.tail)
