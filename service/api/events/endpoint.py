"""``GET /api/reports/{jobId}/events``: a job's progress as Server-Sent Events."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from service.api.auth import require_caller, token_allows
from service.api.events.fanout import EventFanout
from service.api.events.subscriber import Subscriber
from service.api.events.wire import valid_event_id
from service.api.resources import ApiServices, services
from service.core.errors import NotFound, Unauthorized

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
# After the server's shutdown is noticed, how long a stream may take to send what it has queued;
# well inside uvicorn's --timeout-graceful-shutdown (10 s in the Procfile).
SHUTDOWN_GRACE_SECONDS = 2.0


def fanout(request: Request) -> EventFanout:
    found: EventFanout = request.state.fanout
    return found


async def events_owner(request: Request, svc: ApiServices, job_id: str) -> str | None:
    """The user the job must belong to (API key), or None when a signed token for this job vouches."""
    if request.headers.get("authorization"):
        return (await require_caller(request, svc)).user_id
    token = request.query_params.get("token")
    if not token:
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>', or use the eventsUrl token")
    if not await token_allows(svc, token, job_id):
        raise Unauthorized("the events token is invalid, expired, or for another job")
    return None


async def stream(subscriber: Subscriber) -> AsyncIterator[bytes]:
    try:
        while (chunk := await subscriber.next()) is not None:
            yield chunk
    finally:
        subscriber.close()


async def job_events(request: Request) -> Response:
    svc = services(request)
    job_id = request.path_params["job_id"]
    owner = await events_owner(request, svc, job_id)
    if not _JOB_ID.match(job_id):
        raise NotFound("no such report job")
    hub = fanout(request)
    subscriber = await hub.subscribe(job_id, valid_event_id(request.headers.get("last-event-id")))
    if subscriber is None:
        raise NotFound("no such report job")
    if owner is not None and subscriber.user_id != owner:
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
