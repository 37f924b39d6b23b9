"""The lean stream reader: text, model, usage and stop reason from raw Messages API events."""

from __future__ import annotations

import orjson

from service.providers.anthropic.stream import StreamedAnswer


def feed(answer: StreamedAnswer, event: str, body: object) -> None:
    answer.feed(event, orjson.dumps(body).decode())


def test_a_stream_yields_its_text_model_usage_and_stop_reason() -> None:
    answer = StreamedAnswer()
    message = {"model": "claude-x", "usage": {"input_tokens": 120, "output_tokens": 1}}
    feed(answer, "message_start", {"type": "message_start", "message": message})
    feed(answer, "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    for piece in ("# Title\n", "Body ", "text."):
        feed(answer, "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
    feed(answer, "ping", {"type": "ping"})
    feed(answer, "message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}})
    assert (answer.text, answer.model, answer.stop_reason) == ("# Title\nBody text.", "claude-x", "end_turn")
    assert (answer.input_tokens, answer.output_tokens, answer.characters) == (120, 9, 18)


def test_cached_input_counts_as_input_and_other_deltas_are_ignored() -> None:
    answer = StreamedAnswer()
    usage = {"input_tokens": 10, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 7}
    feed(answer, "message_start", {"message": {"model": "m", "usage": usage}})
    feed(answer, "content_block_delta", {"delta": {"type": "input_json_delta", "partial_json": "{"}})
    assert (answer.input_tokens, answer.text, answer.stop_reason) == (22, "", None)
