"""The batch lane as a job's attempt sees it.

A ``batch`` job is claimed like any other and prepared the same way (input fetched, tokens counted,
its worst case reserved against the budget, at batch prices, in the same ledger); then, instead of
calling the model, it is handed to the lane (``hand_off``): its request waits in Redis for the next
provider batch and the worker's slot frees. The fleet's one driver (``service.worker.batch_driver``)
sends it, follows the batch and, when it ends, saves the answer as the job's checkpoint and puts
the job back in the report queue with its outcome. The attempt that claims it then renders the
saved answer like any checkpoint, or acts on the outcome here (``lane_of``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import zlib
from dataclasses import asdict, dataclass
from typing import Literal

import orjson

from service.core.errors import PermanentJobError, ProviderRejected, ProviderUnavailable
from service.core.settings import Settings
from service.inputs.text import human_size
from service.providers.base import ReportRequest
from service.worker.billing import CallAccount
from service.worker.prepare import fetch_request
from service.worker.resources import WorkerDeps
from service.worker.stages import JobStopped, timed

Lane = Literal["realtime", "batch"]
# The provider ends a batch 24 h after its creation; the lane holds a job at most this much longer
# (the window before the batch is sent, the looks after it ended) before the report queue brings
# it back by itself: nothing is stuck if the lane's state is lost.
LANE_MARGIN_SECONDS = 2 * 3600
PROVIDER_EXPIRY_SECONDS = 24 * 3600


class BatchRejected(PermanentJobError):
    """The provider answered the job's batch request with an error retrying cannot fix."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.error_code = code


class BatchLaneFailed(PermanentJobError):
    """The batch lane could not answer the job (its batch expired with ``BATCH_EXPIRED=fail``, or the
    lane lost track of a request it had sent: sending it again could bill it twice)."""

    error_code = "provider_unavailable"


@dataclass(frozen=True)
class Prepared:
    """What the driver needs to send a job's request and save its answer."""

    request: ReportRequest
    source: str  # "sales.csv (8.5 kB)", printed under the report's title
    input_name: str


def lane_lease_ms(settings: Settings) -> int:
    seconds = PROVIDER_EXPIRY_SECONDS + LANE_MARGIN_SECONDS + settings.batch_window_seconds
    return int(seconds * 1000)


def encode(prepared: Prepared) -> str:
    """Compressed (inputs are up to ``INPUT_MAX_BYTES``; data compresses well), as Redis text."""
    fields = asdict(prepared)
    fields["request"].pop("trace_headers", None)  # a batch request is sent with no trace context
    return base64.b64encode(zlib.compress(orjson.dumps(fields))).decode()


def decode(raw: str) -> Prepared:
    fields = orjson.loads(zlib.decompress(base64.b64decode(raw)))
    return Prepared(ReportRequest(**fields["request"]), fields["source"], fields["input_name"])


async def lane_of(deps: WorkerDeps, record: dict[str, str]) -> Lane:
    """The lane this attempt calls the model in; raises what a batch that ended badly came to."""
    if record.get("lane") != "batch" or deps.batches is None or deps.batch_store is None:
        return "realtime"  # the offline provider answers batch jobs here: it costs nothing anyway
    state = record.get("batch_state", "")
    if state in ("", "pending"):  # fresh, or handed off before a lane that lost it (sent nothing)
        return "batch"
    if state == "expired":
        if deps.settings.batch_expired == "realtime":
            return "realtime"
        raise BatchLaneFailed("the job's batch expired before the provider answered it (BATCH_EXPIRED=fail)")
    error = json.loads(record.get("batch_error") or "{}")
    reason = str(error.get("reason") or "the model provider could not answer the batch request")
    if state == "failed":
        raise BatchRejected(reason, str(error.get("code") or ProviderRejected.error_code))
    if state in ("retry", "canceled"):
        await deps.batch_store.clear_outcome(record["job_id"])  # the next attempt is a new batch job
        raise ProviderUnavailable(reason)
    # 'sending', 'sent', or 'answered' without its answer: the lane lost track of a sent request.
    raise BatchLaneFailed("the batch lane lost track of the job's request; it is not sent again")


def answered_lane(record: dict[str, str]) -> Lane:
    """The lane the job's answer came from (a batch job may have fallen back to realtime)."""
    return "batch" if record.get("batch_state") == "answered" else "realtime"


async def hand_off(deps: WorkerDeps, record: dict[str, str]) -> None:
    """Prepares the job's request, reserves its worst case at batch prices, and hands it to the lane;
    the job stays 'active' (stage ``in_batch``) without a worker."""
    assert deps.batch_store is not None
    fetched, request = await fetch_request(deps, record)
    async with timed("summarizing", input_bytes=fetched.size, lane="batch"):
        input_tokens = await deps.provider.count_input_tokens(request)
        account = await CallAccount.open(deps, record, request, input_tokens, lane="batch")
        prepared = Prepared(request, f"{fetched.name} ({human_size(fetched.size)})", fetched.name)
        try:
            handed = await deps.batch_store.hand_off(
                record,
                encode(prepared),
                lease_ms=lane_lease_ms(deps.settings),
                call_id=account.call.call_id,
                source=prepared.source,
                input_name=prepared.input_name,
            )
        except BaseException:
            # Nothing was sent: the reservation goes back (the job's own ending would close it too).
            await asyncio.shield(account.close("not_sent", maybe_billed=False))
            raise
    if not handed:
        await account.close("not_sent", maybe_billed=False)
        raise JobStopped("the job was cancelled before it joined a batch")
