"""Log lines: the access line's shortcut renders what the JSON chain renders; timestamps as ISO UTC."""

from __future__ import annotations

import io
import logging
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from service.telemetry.logs import _json_access_writer, _shared_processors, _UtcStamper


def fixed_time(_: Any, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    event["timestamp"] = "2026-12-01T16:13:32.099640Z"
    return event


def test_the_access_line_is_byte_for_byte_what_the_json_chain_renders() -> None:
    """Bound context (the request id, and a secret a caller bound by mistake) included and redacted."""
    fast_out, chain_out = io.BytesIO(), io.BytesIO()
    write = _json_access_writer("api", fixed_time, structlog.BytesLogger(fast_out))
    chain = structlog.wrap_logger(
        structlog.BytesLogger(chain_out),
        processors=[
            *_shared_processors("api", fixed_time),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    with structlog.contextvars.bound_contextvars(request_id="9cc30b7178ab06d9", token="abc.def"):
        write("POST", "/api/reports", 202, 1.23)
        chain.info("http_request", method="POST", path="/api/reports", status=202, duration_ms=1.23)
    assert fast_out.getvalue() == chain_out.getvalue()
    line = orjson.loads(fast_out.getvalue())
    assert line["token"] == "[redacted]" and line["request_id"] == "9cc30b7178ab06d9"
    assert list(line)[:6] == ["method", "path", "status", "duration_ms", "event", "process"]


def test_timestamps_are_structlogs_iso_utc_format_and_the_current_time() -> None:
    stamp = _UtcStamper()
    for _ in range(3):  # the second's prefix is cached: later calls reuse it
        ours = stamp(None, "info", {})["timestamp"]
        theirs = structlog.processors.TimeStamper(fmt="iso", utc=True)(None, "info", {})["timestamp"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ours)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", theirs)
        gap = datetime.fromisoformat(theirs) - datetime.fromisoformat(ours)
        assert 0 <= gap.total_seconds() < 0.5
        assert datetime.fromisoformat(ours).tzinfo == UTC
