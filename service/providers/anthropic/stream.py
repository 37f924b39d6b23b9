"""Reading a streamed Messages API answer event by event, lean enough for a thousand streams at once.

The SDK's own stream helper builds a typed snapshot of the whole message on every event (about 60 µs
of CPU each, measured here); a worker holding a thousand concurrent answers would spend more than a
core on that alone. This reader keeps only what a report needs: the text, the model, the usage and
the stop reason, parsed with orjson from the raw Server-Sent Events the SDK hands over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from service.core.ratelimit import ProviderLimits
from service.providers.base import CHARS_PER_TOKEN, CallUsage

# The API's usage fields, and where each is kept.
_COUNTS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_input_tokens": "cache_read_tokens",
    "cache_creation_input_tokens": "cache_write_tokens",
}


@dataclass
class StreamedAnswer:
    model: str = ""
    input_tokens: int = 0  # the uncached input, as the API counts ``input_tokens``
    output_tokens: int = 0
    cache_read_tokens: int = 0  # ``cache_read_input_tokens``
    cache_write_tokens: int = 0  # ``cache_creation_input_tokens``
    stop_reason: str | None = None
    parts: list[str] = field(default_factory=list)
    characters: int = 0
    request_id: str = ""
    counted_output: bool = False  # the provider's own output count has arrived (message_delta)
    limits: ProviderLimits | None = None  # the response headers' rate-limit readings

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def usage(self) -> CallUsage:
        """What the call has cost so far: the provider's counts where it sent them, else the
        output estimated from the characters streamed (what it billed, as far as we can know)."""
        output = self.output_tokens if self.counted_output else self.characters // CHARS_PER_TOKEN
        return CallUsage(
            self.input_tokens,
            output,
            self.request_id,
            text=self.text,
            cache_read_tokens=self.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens,
            limits=self.limits,
        )

    def feed(self, event: str | None, data: str) -> None:
        """One SSE event of a 200 stream (``error`` events are the caller's to raise)."""
        if event == "content_block_delta":
            delta = orjson.loads(data).get("delta") or {}
            if delta.get("type") == "text_delta":
                text = str(delta.get("text", ""))
                self.parts.append(text)
                self.characters += len(text)
        elif event == "message_start":
            self._start(orjson.loads(data).get("message") or {})
        elif event == "message_delta":
            body = orjson.loads(data)
            self.stop_reason = (body.get("delta") or {}).get("stop_reason") or self.stop_reason
            self._usage(body.get("usage") or {})
            self.counted_output = (
                self.counted_output or (body.get("usage") or {}).get("output_tokens") is not None
            )

    def _start(self, message: dict[str, Any]) -> None:
        self.model = str(message.get("model", ""))
        self._usage(message.get("usage") or {})

    def _usage(self, usage: dict[str, Any]) -> None:
        # Three kinds of input, kept apart: they are priced differently (a cache read at a tenth,
        # a write at 1.25 times) and the input-tokens limit counts writes but not reads.
        # ``message_delta`` may repeat them (cumulative counts): the latest sent wins.
        for name, value in usage.items():
            if value is not None and name in _COUNTS:
                setattr(self, _COUNTS[name], int(value))
