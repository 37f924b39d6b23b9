"""The lean stream reader: text, model, usage and stop reason from raw Messages API events."""

from __future__ import annotations

import orjson

from service.providers.anthropic.stream import StreamedAnswer
from service.providers.base import billed_input_tokens, rate_limited_input_tokens


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


def test_cache_reads_and_writes_are_kept_apart_from_input_and_other_deltas_are_ignored() -> None:
    answer = StreamedAnswer()
    usage = {"input_tokens": 10, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 7}
    feed(answer, "message_start", {"message": {"model": "m", "usage": usage}})
    feed(answer, "content_block_delta", {"delta": {"type": "input_json_delta", "partial_json": "{"}})
    assert (answer.input_tokens, answer.cache_write_tokens, answer.cache_read_tokens) == (10, 5, 7)
    assert (answer.text, answer.stop_reason) == ("", None)
    usage_so_far = answer.usage()
    assert (usage_so_far.cache_read_tokens, usage_so_far.cache_write_tokens) == (7, 5)
    assert (billed_input_tokens(usage_so_far), rate_limited_input_tokens(usage_so_far)) == (22, 15)


def test_the_final_delta_s_cumulative_cache_counts_replace_the_first_ones() -> None:
    answer = StreamedAnswer()
    usage = {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    feed(answer, "message_start", {"message": {"model": "m", "usage": usage}})
    final = {"output_tokens": 4, "input_tokens": 12, "cache_read_input_tokens": 3000}
    feed(answer, "message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": final})
    assert (answer.input_tokens, answer.cache_read_tokens, answer.cache_write_tokens) == (12, 3000, 0)
    assert answer.output_tokens == 4
