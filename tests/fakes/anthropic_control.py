"""The fake Anthropic API's own control endpoints, for benchmarks that run it as a process of its
own: queue a storm of 529s or 429s, and read what it served and billed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.anthropic_errors import Disconnect, StreamFailure

if TYPE_CHECKING:
    from tests.fakes.anthropic import FakeAnthropic


def control_routes(fake: FakeAnthropic) -> list[Route]:
    async def storm(request: Request) -> Response:
        """``POST /_fake/storm {"count": N, "status": 529|429, "retry_after": "2"}``."""
        spec = await request.json()
        retry_after = spec.get("retry_after", "1")
        count = int(spec.get("count", 1))
        fake.storm(
            count,
            status=int(spec.get("status", 529)),
            retry_after=None if retry_after is None else str(retry_after),
        )
        return JSONResponse({"queued": count})

    async def stats(request: Request) -> Response:
        """``GET /_fake/stats``: calls answered, calls refused by the limits, message batches created
        and the requests in them, tokens billed (in all, and line by line: per lane and model, each
        kind of token)."""
        billed_input, billed_output = fake.billed_tokens
        served = {"calls": fake.call_count, "rate_limited": fake.rate_limited_count}
        batches = fake.batches.created
        served |= {
            "batches": len(batches),
            "batch_requests": sum(len(fake.batches.requests(b)) for b in batches),
        }
        billed = {"billed_input": billed_input, "billed_output": billed_output, "bill": fake.bill.lines()}
        return JSONResponse({**served, **billed})

    async def fail(request: Request) -> Response:
        """``POST /_fake/fail {"kind": "stream_error"|"disconnect", "count": N}``: the next N answers
        start, stream a little, then fail with an ``overloaded_error`` event or a dropped connection."""
        spec = await request.json()
        count = int(spec.get("count", 1))
        failure = (
            Disconnect(after_chunks=3) if spec.get("kind") == "disconnect" else StreamFailure(after_chunks=3)
        )
        fake.fail_next(*[failure] * count)
        return JSONResponse({"queued": count})

    return [
        Route("/_fake/storm", storm, methods=["POST"]),
        Route("/_fake/fail", fail, methods=["POST"]),
        Route("/_fake/stats", stats, methods=["GET"]),
    ]
