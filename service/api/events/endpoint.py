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
from service.api.events.leases import Lease, StreamLeases
from service.api.events.subscriber import Subscriber
from service.api.events.wire import valid_event_id
from service.api.resources import ApiServices, services
from service.core.errors import NotFound, Unauthorized
from service.store.keys import Caller

_JOB_ID = re.compile(r"^[0-9a-f]{32}\Z")
# After the server's shutdown is noticed, how long a stream may take to send what it has queued;
# well inside uvicorn's --timeout-graceful-shutdown (10 s in the Procfile).
SHUTDOWN_GRACE_SECONDS = 2.0


def fanout(request: Request) -> EventFanout:
    found: EventFanout = request.state.fanout
    return found


def stream_leases(request: Request) -> StreamLeases:
    found: StreamLeases = request.state.leases
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


async def stream(subscriber: Subscriber, lease: Lease) -> AsyncIterator[bytes]:
    try:
        while (chunk := await subscriber.next()) is not None:
            yield chunk
    finally:
        close(subscriber, lease)


def close(subscriber: Subscriber, lease: Lease) -> None:
    """Idempotent: the stream is over or was never sent; it no longer counts for its user."""
    subscriber.close()
    lease.release()


async def job_events(request: Request) -> Response:
    svc = services(request)
    job_id = request.path_params["job_id"]
    caller = await events_caller(request, svc, job_id)
    if not _JOB_ID.match(job_id):
        raise NotFound("no such report job")
    # Before anything starts: over the cap, 429 (whether the key or a token opened it, it counts
    # for the key's user, who owns the job: checked below).
    lease = await stream_leases(request).acquire(caller.user_id)
    try:
        subscriber = await open_subscriber(request, caller, job_id)
    except BaseException:
        lease.release()
        raise
    if subscriber.exhausted:
        # Resumed after the job's terminal event: 204 is how SSE says "stop reconnecting".
        close(subscriber, lease)
        return Response(status_code=204)
    return EventSourceResponse(
        stream(subscriber, lease),
        ping=svc.settings.events_ping_seconds,
        shutdown_event=fanout(request).shutdown_event,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        # Also runs for HEAD, and when the stream is torn down before the generator started.
        background=BackgroundTask(close, subscriber, lease),
    )


async def open_subscriber(request: Request, caller: Caller, job_id: str) -> Subscriber:
    """The caller's job as a subscriber of this process's fan-out; 404 for any other job."""
    subscriber = await fanout(request).subscribe(job_id, valid_event_id(request.headers.get("last-event-id")))
    if subscriber is None:
        raise NotFound("no such report job")
    if subscriber.user_id != caller.user_id:
        subscriber.close()
        raise NotFound("no such report job")
    return subscriber
