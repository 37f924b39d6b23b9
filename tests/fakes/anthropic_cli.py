"""``python -m tests.fakes.anthropic_cli --port N``: the fake Anthropic API as a process of its own,
served until interrupted (benchmarks start it like this)."""

from __future__ import annotations

import argparse
import time

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.anthropic_limits import FakeLimits
from tests.fakes.anthropic_replies import default_reply, sized_reply


def _limits_from_args(args: argparse.Namespace) -> FakeLimits | None:
    values = {"requests_per_minute": args.rpm, "input_tokens_per_minute": args.itpm,
              "output_tokens_per_minute": args.otpm}  # fmt: skip
    given = {name: value for name, value in values.items() if value is not None}
    return FakeLimits(**given) if given else None


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-byte-delay", type=float, default=0.0, help="seconds before an answer starts")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--chunk-chars", type=int, default=16, help="characters per streamed chunk")
    parser.add_argument("--reply-tokens", type=int, default=None, help="answer about this many tokens")
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute, per model")
    parser.add_argument("--itpm", type=int, default=None, help="input tokens per minute, per model")
    parser.add_argument("--otpm", type=int, default=None, help="output tokens per minute, per model")
    parser.add_argument("--max-recorded", type=int, default=1000, help="calls whose bodies are kept")
    args = parser.parse_args(argv)
    fake = FakeAnthropic(
        reply=default_reply if args.reply_tokens is None else sized_reply(args.reply_tokens),
        first_byte_delay=args.first_byte_delay,
        chunk_delay=args.chunk_delay,
        chunk_chars=args.chunk_chars,
        limits=_limits_from_args(args),
        max_recorded=args.max_recorded,
        host=args.host,
        port=args.port,
    )
    with fake:
        print(f"fake Anthropic API at {fake.base_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
