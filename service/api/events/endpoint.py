"""``GET /api/reports/{jobId}/events``: a job's progress as Server-Sent Events."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from service.api.auth import require_caller, token_caller
from service.api.events.fanout import EventFanout
from service.api.events.subscriber import Subscriber
from service.api.events.wire import valid_event_id
from service.api.resources import ApiServices, services
from service.core.errors import NotFound, Unauthorized
from service.store.keys import Caller

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
# After the server's shutdown is noticed, how long a stream may take to send what it has queued;
# well inside uvicorn's --timeout-graceful-shutdown (10 s in the Procfile).
SHUTDOWN_GRACE_SECONDS = 2.0


def fanout(request: Request) -> EventFanout:
    found: EventFanout = request.state.fanout
    return found


async def events_caller(request: Request, svc: ApiServices, job_id: str) -> Caller:
    """Who watches: the bearer key's caller, or the caller whose key minted the ``?token=``."""
    if request.headers.get("authorization"):
        return await require_caller(request, svc)
    token = request.query_params.get("token")
    if not token:
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>', or use the eventsUrl token")
    caller = await token_caller(svc, token, job_id)
    if caller is None:
        raise Unauthorized("the events token is invalid, expired, for another job, or its key was revoked")
    return caller


async def stream(subscriber: Subscriber) -> AsyncIterator[bytes]:
    try:
        while (chunk := await subscriber.next()) is not None:
            yield chunk
    finally:
        subscriber.close()


async def job_events(request: Request) -> Response:
    svc = services(request)
    job_id = request.path_params["job_id"]
    caller = await events_caller(request, svc, job_id)
    if not _JOB_ID.match(job_id):
        raise NotFound("no such report job")
    hub = fanout(request)
    subscriber = await hub.subscribe(job_id, valid_event_id(request.headers.get("last-event-id")))
    if subscriber is None:
        raise NotFound("no such report job")
    if subscriber.user_id != caller.user_id:
        subscriber.close()
        raise NotFound("no such report job")
    if subscriber.exhausted:
        # Resumed after the job's terminal event: 204 is how SSE says "stop reconnecting".
        subscriber.close()
        return Response(status_code=204)
    return EventSourceResponse(
        stream(subscriber),
        ping=svc.settings.events_ping_seconds,
        shutdown_event=hub.shutdown_event,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        # Also runs for HEAD, and when the stream is torn down before the generator started.
        background=BackgroundTask(subscriber.close),
    )
