"""Admitting new subscribers in batches, so that one admission's failure stays its own.

The fan-out's reader admits every subscriber that arrived since its last read with one MULTI/EXEC
(``EventStreams.opening``). A command Redis refuses for one job comes back as that job's error; a
transaction that fails as a whole for any reason but Redis being down is retried one admission at a
time. Either way one client's bad request (or one corrupt key) fails that client alone: the others
of the batch are admitted, and the reader neither stops nor pauses.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from service.api.events.subscriber import Subscriber
from service.api.events.wire import Opening
from service.core.errors import Unavailable
from service.store.event_streams import EventStreams, Opened, OpeningRefused


@dataclass(eq=False)
class Admission:
    job_id: str
    after: str | None
    future: asyncio.Future[Subscriber | None]


async def open_batch(streams: EventStreams, batch: list[Admission]) -> list[Opening | Exception]:
    """Each job's record and stream as they are at the same instant, or that job's own error.
    Raises only ``Unavailable`` (Redis down: every admission fails alike) or a cancellation."""
    try:
        return await _open(streams, batch)
    except Unavailable:
        raise
    except Exception:
        return [await _open_alone(streams, admission) for admission in batch]


async def _open(streams: EventStreams, batch: list[Admission]) -> list[Opening | Exception]:
    opened = await streams.opening((admission.job_id, admission.after) for admission in batch)
    return [_opening(admission, result) for admission, result in zip(batch, opened, strict=True)]


def _opening(admission: Admission, result: Opened | OpeningRefused) -> Opening | Exception:
    if isinstance(result, OpeningRefused):
        return result
    record, tail, replay = result
    return Opening(admission.job_id, record, tail, admission.after, replay)


async def _open_alone(streams: EventStreams, admission: Admission) -> Opening | Exception:
    try:
        return (await _open(streams, [admission]))[0]
    except Exception as exc:  # Unavailable included: this admission answers 503, the next may not
        return exc


def fail_all(batch: list[Admission], exc: BaseException) -> None:
    """Whatever happened, no handler may wait for ever."""
    for admission in batch:
        if admission.future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            admission.future.cancel()
        else:
            admission.future.set_exception(exc)


def abandon(future: asyncio.Future[Subscriber | None]) -> None:
    """The caller was cancelled: what was (or is being) admitted for it must not stay watched."""
    if not future.done():
        future.cancel()  # the reader skips admissions nobody waits for
    elif not future.cancelled() and future.exception() is None and (subscriber := future.result()):
        subscriber.close()
