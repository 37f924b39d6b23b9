"""The baseline for the enqueue benchmark: a bare Starlette endpoint doing one Redis SET."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def create_baseline_app() -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        redis = Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
        yield {"redis": redis}
        await redis.aclose()

    async def accept(request: Request) -> Response:
        body = await request.json()
        job_id = uuid.uuid4().hex
        await request.state.redis.set(f"baseline:{job_id}", json.dumps(body), ex=300)
        return JSONResponse({"jobId": job_id, "state": "queued"}, status_code=202)

    return Starlette(routes=[Route("/api/reports", accept, methods=["POST"])], lifespan=lifespan)
