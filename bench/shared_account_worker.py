"""``python -m bench.shared_account_worker SECONDS SLOTS``: one fleet process for the shared-account
benchmark that makes its model calls as the worker is to make them once the lead wires it: the real
SDK against ``ANTHROPIC_BASE_URL``, the shared Redis limiter at ``REDIS_URL`` (settings from the
environment, as a worker reads them), the provider's rate-limit headers folded in after every
response (``tests.providers.limited_calls``). Prints its tally as JSON at the end."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from service.core.settings import Settings
from service.providers.anthropic.provider import AnthropicProvider, build_anthropic_client
from service.providers.base import ReportRequest
from service.store.connection import open_redis
from service.store.limiter import LlmLimiter, limits_from
from tests.providers.limited_calls import Tally, limited_call

CSV = "region,revenue\nnorth,1200\nsouth,980\neast,1500\nwest,1100\n"
MODEL = "claude-bench"


async def run(seconds: float, slots: int) -> Tally:
    settings = Settings()
    redis = open_redis(settings.redis_url, fail_fast=False)
    client = build_anthropic_client(settings)
    provider, limiter = AnthropicProvider(client), LlmLimiter(redis, limits_from(settings))
    request = ReportRequest(CSV, "sales.csv", "text/csv", MODEL, settings.max_output_tokens)
    input_tokens = await provider.count_input_tokens(request)
    tally, deadline = Tally(), time.monotonic() + seconds

    async def slot() -> None:
        while time.monotonic() < deadline:
            await limited_call(limiter, provider, request, input_tokens, tally)

    try:
        await asyncio.gather(*[slot() for _ in range(slots)])
    finally:
        await client.close()
        await redis.aclose()
    return tally


def main() -> None:
    tally = asyncio.run(run(float(sys.argv[1]), int(sys.argv[2])))
    print(json.dumps(tally.__dict__), flush=True)


if __name__ == "__main__":
    main()
