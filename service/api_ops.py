"""Operational endpoints and the caller's usage."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from service.auth import require_caller
from service.errors import Unavailable
from service.responses import JSONResponse
from service.services import services
from service.store.connection import API_OPERATION_DEADLINE, REDIS_DOWN, UNAVAILABLE_RETRY_AFTER


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        async with asyncio.timeout(API_OPERATION_DEADLINE):
            await services(request).redis.ping()
    except REDIS_DOWN as exc:  # a timeout is an OSError too
        raise Unavailable("Redis is unreachable", retry_after=UNAVAILABLE_RETRY_AFTER) from exc
    return JSONResponse({"status": "ready"})


async def usage(request: Request) -> Response:
    svc = services(request)
    caller = await require_caller(request, svc)
    totals = await svc.jobs.usage(caller.user_id)
    input_tokens, output_tokens = totals.get("input_tokens", 0), totals.get("output_tokens", 0)
    return JSONResponse(
        {
            "userId": caller.user_id,
            "plan": caller.plan,
            "reports": totals.get("reports", 0),
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "tokensUsed": input_tokens + output_tokens,
            # Per-plan budgets are not configured yet: nothing is withheld.
            "budgetRemaining": None,
        }
    )
