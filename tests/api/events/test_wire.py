"""The events wire format is sse-starlette's, byte for byte, without importing it outside the endpoint."""

from __future__ import annotations

import pytest
from sse_starlette import ServerSentEvent

from service.api.events.wire import encode


@pytest.mark.parametrize(
    ("event_id", "name", "data"),
    [
        ("1700000000000-0", "progress", '{"progress":30,"state":"active","stage":"summarizing"}'),
        ("1-2", "completed", '{"pdfUrl":"/api/reports/x/pdf"}'),
        ("3-0", "cancelled", "{}"),
        ("4-0", "failed", "two\nlines\r\nand\rmore"),
        ("5-0\n", "bad\rname", ""),
    ],
)
def test_encode_writes_what_sse_starlette_writes(event_id: str, name: str, data: str) -> None:
    assert encode(event_id, name, data) == ServerSentEvent(data=data, event=name, id=event_id).encode()
