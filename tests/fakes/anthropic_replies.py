"""What the fake Anthropic API answers and checks: a recorded call, the default reports, and the
request validation the real API does first."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tests.fakes.anthropic_errors import HttpFailure, bad_request
from tests.fakes.anthropic_wire import Body, prompt_text

ReplyFn = Callable[[Body], str]

MARKER_PATTERN = re.compile(r"MARKER-[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class RecordedCall:
    """One HTTP request the fake received: its JSON body and its headers (names lower-cased)."""

    body: Body
    headers: dict[str, str]

    @property
    def model(self) -> str | None:
        model = self.body.get("model")
        return model if isinstance(model, str) else None

    @property
    def api_key(self) -> str | None:
        """The key the client sent, whichever header carried it (``x-api-key`` or a Bearer token)."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None


def default_reply(body: Body) -> str:
    """A deterministic Markdown report quoting the first ``MARKER-...`` found in the prompt."""
    found = MARKER_PATTERN.search(prompt_text(body))
    marker = found.group(0) if found else "none"
    return (
        "# Executive report\n\n"
        "## Key findings\n"
        f"- The input carried the marker {marker}.\n"
        f"- The request asked for at most {body.get('max_tokens')} output tokens.\n"
        "- Revenue grew steadily across the period covered by the data.\n\n"
        "## Analysis\n"
        "The figures are consistent from one period to the next and show no gaps. "
        "Growth is concentrated in the largest segment, while the smaller ones stay flat.\n\n"
        "## Recommendations\n"
        "1. Keep investing in the segment that drives growth.\n"
        "2. Review the flat segments next quarter.\n"
    )


def sized_reply(tokens: int) -> ReplyFn:
    """A reply of about ``tokens`` output tokens (4 characters each), to size the output in benchmarks."""
    text = ("# Executive report\n\n" + "Revenue grew steadily. " * (tokens * 4 // 23 + 1))[: tokens * 4]
    return lambda body: text


def validate_request(body: object, headers: Mapping[str, str]) -> HttpFailure | None:
    """The checks the real API makes first: a key, then the required fields."""
    if not RecordedCall({}, dict(headers)).api_key:
        return HttpFailure(401, "authentication_error", "x-api-key header is required")
    if not isinstance(body, dict):
        return bad_request("The request body is not valid JSON.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return bad_request("model: Field required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return bad_request("max_tokens: Field required")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return bad_request("messages: at least one message is required")
    return None
