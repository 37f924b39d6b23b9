"""Operational endpoints and the caller's usage."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from service.api.auth import bearer_key, require_caller
from service.api.resources import services
from service.api.responses import JSONResponse
from service.core.errors import NotFound, Unauthorized
from service.store.policies import budget_of, budget_period
from service.telemetry.export import render


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    await services(request).health.ping()
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    """The fleet's metrics, for a Prometheus that presents ``METRICS_TOKEN`` (costs and volumes are
    business data: not for the public internet)."""
    svc = services(request)
    token = svc.settings.metrics_token
    if token is None:
        raise NotFound("metrics are off: set METRICS_TOKEN and scrape with that bearer token")
    presented = bearer_key(request) or ""
    if not hmac.compare_digest(presented.encode(), token.get_secret_value().encode()):
        raise Unauthorized("send the metrics token as 'Authorization: Bearer <METRICS_TOKEN>'")
    body, content_type = await render(svc.metrics_store)
    return Response(body, media_type=content_type)


async def usage(request: Request) -> Response:
    svc = services(request)
    caller = await require_caller(request, svc)
    period = budget_period(svc.settings)
    totals = await svc.jobs.usage(caller.user_id, period)
    input_tokens, output_tokens = totals.get("input_tokens", 0), totals.get("output_tokens", 0)
    budget = budget_of(svc.settings, caller.plan)
    # Held back from the budget: the worst case of calls in flight, and what queued reports hold.
    reserved = totals.get("reserved", 0) + totals.get("queued_hold", 0)
    return JSONResponse(
        {
            "userId": caller.user_id,
            "plan": caller.plan,
            "period": period,
            "reports": totals.get("reports", 0),
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "tokensUsed": input_tokens + output_tokens,
            # Of inputTokens: served from the provider's prompt cache, and written to it.
            "cacheReadTokens": totals.get("cache_read_tokens", 0),
            "cacheWriteTokens": totals.get("cache_write_tokens", 0),
            # Every call the provider billed for the caller's jobs (completed or not), as priced.
            "costUsd": round(totals.get("cost_nusd", 0) / 1e9, 6),
            # What is left for new reports: queued and running ones hold back their reservation.
            "budget": budget or None,
            "reservedTokens": reserved,
            "budgetRemaining": max(0, budget - input_tokens - output_tokens - reserved) if budget else None,
        }
    )
