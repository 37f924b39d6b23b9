"""The fake Anthropic API's Message Batches API: create, retrieve, list, cancel, results (JSONL).

Scripted from tests: ``create_delay`` (the create call answers that late, its batch created
before), ``duration`` (seconds from creation until the last request is done; requests
finish evenly spread over it, so a cancel midway leaves the early ones answered and the rest
``canceled``), ``cancel_delay`` (how long a batch stays ``canceling``), ``expires_after`` (the
API's 24 hours: requests not done by then are ``expired``), ``fail(custom_id, error_type)``
(that request ends ``errored``). Answers are the realtime reply, billed in the ``batch`` lane.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.anthropic_billing import Bill, PromptCache
from tests.fakes.anthropic_errors import HttpFailure, bad_request
from tests.fakes.anthropic_replies import validate_request
from tests.fakes.anthropic_wire import Body, error_response, estimate_tokens, message_body

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_ids = itertools.count(1)
EXPIRY_DEFAULT = 24 * 3600.0  # the API's: a batch not done in a day ends, its rest ``expired``
AnswerFn = Callable[[Body], tuple[str, str]]  # (text, stop reason) for a request's params


@dataclass
class Entry:
    custom_id: str
    params: Body
    done_at: float  # monotonic time this request's processing ends
    result: Body | None = None


@dataclass
class FakeBatch:
    id: str
    created_at: datetime
    entries: list[Entry]
    expires_mono: float
    cancel_mono: float | None = None
    cancel_initiated_at: datetime | None = None
    ended_at: datetime | None = None
    ends_mono: float | None = None  # set by a cancel: when ``canceling`` becomes ``ended``
    failures: dict[str, HttpFailure] = field(default_factory=dict)
    expires_after: float = EXPIRY_DEFAULT


class FakeBatches:
    """Every batch the fake account holds, newest last; thread-safe."""

    def __init__(self, answer: AnswerFn, cache: PromptCache, bill: Bill) -> None:
        self._answer, self._cache, self._bill = answer, cache, bill
        self._lock = threading.Lock()
        self._batches: dict[str, FakeBatch] = {}
        self.served_model: Callable[[], str | None] = lambda: None
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._batches.clear()
            self._failures: dict[str, HttpFailure] = {}
        self.duration, self.cancel_delay, self.expires_after = 0.0, 0.0, EXPIRY_DEFAULT
        self.create_delay = 0.0  # the create call answers this late, its batch already created

    def fail(self, custom_id: str, error_type: str = "invalid_request_error", message: str = "") -> None:
        """The request with this ``custom_id``, in any batch created from now on, ends ``errored``."""
        status = {"invalid_request_error": 400, "overloaded_error": 529, "api_error": 500}.get(
            error_type, 400
        )
        failure = HttpFailure(status, error_type, message or f"{error_type} (scripted)")
        with self._lock:
            self._failures[custom_id] = failure

    @property
    def created(self) -> list[str]:
        """Ids of every batch created, oldest first."""
        with self._lock:
            return list(self._batches)

    def requests(self, batch_id: str) -> list[tuple[str, Body]]:
        """What a batch was created with: each request's custom id and params."""
        with self._lock:
            return [(entry.custom_id, entry.params) for entry in self._batches[batch_id].entries]

    # --- the endpoints ------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/v1/messages/batches", self._create, methods=["POST"]),
            Route("/v1/messages/batches", self._list, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", self._retrieve, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}/cancel", self._cancel, methods=["POST"]),
            Route("/v1/messages/batches/{batch_id}/results", self._results, methods=["GET"]),
        ]

    async def _create(self, request: Request) -> Response:
        try:
            body: object = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        problem = _check_batch(body, request)
        if problem is not None:
            return error_response(problem, "req_batch")
        assert isinstance(body, dict)
        batch = self._new_batch(body["requests"])
        with self._lock:
            self._batches[batch.id] = batch
        if self.create_delay:  # a caller that dies meanwhile never learns the batch's id
            await asyncio.sleep(self.create_delay)
        return JSONResponse(self._wire(batch, request))

    def _new_batch(self, requests: list[Body]) -> FakeBatch:
        now, count = time.monotonic(), len(requests)
        entries = [
            Entry(str(item["custom_id"]), item["params"], now + self.duration * (n + 1) / count)
            for n, item in enumerate(requests)
        ]
        with self._lock:
            failures = {entry.custom_id: self._failures[entry.custom_id]
                        for entry in entries if entry.custom_id in self._failures}  # fmt: skip
        batch_id = f"msgbatch_fake{next(_ids):08d}"
        expiry = self.expires_after
        return FakeBatch(
            batch_id, datetime.now(UTC), entries, now + expiry, failures=failures, expires_after=expiry
        )

    async def _retrieve(self, request: Request) -> Response:
        batch = self._find(request)
        if batch is None:
            return _not_found(request)
        return JSONResponse(self._wire(batch, request))

    async def _list(self, request: Request) -> Response:
        limit = min(1000, max(1, int(request.query_params.get("limit", "20"))))
        with self._lock:
            newest_first = list(reversed(self._batches.values()))
        after = request.query_params.get("after_id")
        if after is not None:
            ids = [batch.id for batch in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        page = newest_first[:limit]
        data = [self._wire(batch, request) for batch in page]
        return JSONResponse({
            "data": data,
            "has_more": len(newest_first) > limit,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        })  # fmt: skip

    async def _cancel(self, request: Request) -> Response:
        batch = self._find(request)
        if batch is None:
            return _not_found(request)
        self._advance(batch)
        with self._lock:
            if batch.ended_at is None and batch.cancel_mono is None:
                batch.cancel_mono = time.monotonic()
                batch.cancel_initiated_at = datetime.now(UTC)
                batch.ends_mono = batch.cancel_mono + self.cancel_delay
        return JSONResponse(self._wire(batch, request))

    async def _results(self, request: Request) -> Response:
        batch = self._find(request)
        if batch is None:
            return _not_found(request)
        self._advance(batch)
        if batch.ended_at is None:
            return error_response(bad_request("The batch has not ended yet."), "req_batch")
        lines = [orjson.dumps({"custom_id": e.custom_id, "result": e.result}) for e in batch.entries]
        return Response(b"\n".join(lines) + b"\n", media_type="application/binary")

    # --- processing ---------------------------------------------------------------------------------

    def _find(self, request: Request) -> FakeBatch | None:
        with self._lock:
            return self._batches.get(request.path_params["batch_id"])

    def _advance(self, batch: FakeBatch) -> None:
        """Brings the batch up to now: requests done are answered (and billed), a finished cancel or
        an expiry ends it."""
        now = time.monotonic()
        with self._lock:
            if batch.ended_at is not None:
                return
            stop = min(x for x in (batch.cancel_mono, batch.expires_mono, now) if x is not None)
            for entry in batch.entries:
                if entry.result is None and entry.done_at <= stop:
                    entry.result = self._process(batch, entry)
            cancelled_end = batch.ends_mono is not None and now >= batch.ends_mono
            if cancelled_end or now >= batch.expires_mono or all(e.result for e in batch.entries):
                leftover = {"type": "canceled"} if cancelled_end else {"type": "expired"}
                for entry in batch.entries:
                    entry.result = entry.result or leftover
                batch.ended_at = datetime.now(UTC)

    def _process(self, batch: FakeBatch, entry: Entry) -> Body:
        failure = batch.failures.get(entry.custom_id) or validate_request(entry.params, {"x-api-key": "-"})
        if failure is None and entry.params.get("stream"):
            failure = bad_request("stream: batch requests cannot stream")
        if failure is not None:
            error = {"type": failure.error_type, "message": failure.message}
            return {"type": "errored", "error": {"type": "error", "error": error, "request_id": None}}
        prompt = self._cache.usage(entry.params)
        text, stop_reason = self._answer(entry.params)
        model = self.served_model() or str(entry.params["model"])
        message = message_body(entry.params, text, stop_reason, f"msg_fakebatch{next(_ids):08d}", model)
        message["usage"] = {**message["usage"], **prompt.as_usage(), "service_tier": "batch"}
        self._bill.add("batch", model, prompt, estimate_tokens(text))
        return {"type": "succeeded", "message": message}

    def _wire(self, batch: FakeBatch, request: Request) -> Body:
        self._advance(batch)
        with self._lock:
            counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
            if batch.ended_at is None:
                counts["processing"] = len(batch.entries)  # the API tallies outcomes only at the end
            else:
                for entry in batch.entries:
                    counts[str((entry.result or {}).get("type"))] += 1
            status = "ended" if batch.ended_at else "canceling" if batch.cancel_mono else "in_progress"
            results = f"{str(request.base_url).rstrip('/')}/v1/messages/batches/{batch.id}/results"
            return {
                "id": batch.id,
                "type": "message_batch",
                "processing_status": status,
                "request_counts": counts,
                "created_at": _rfc3339(batch.created_at),
                "expires_at": _rfc3339(batch.created_at + timedelta(seconds=batch.expires_after)),
                "ended_at": _rfc3339(batch.ended_at),
                "cancel_initiated_at": _rfc3339(batch.cancel_initiated_at),
                "archived_at": None,
                "results_url": results if batch.ended_at else None,
            }


def _check_batch(body: object, request: Request) -> HttpFailure | None:
    """What the API refuses at once: no key, no requests, a bad or repeated ``custom_id``."""
    problem = validate_request({"model": "m", "max_tokens": 1, "messages": [1]}, dict(request.headers))
    if problem is not None:
        return problem
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        return bad_request("requests: at least one request is required")
    ids = [item.get("custom_id") if isinstance(item, dict) else None for item in requests]
    if not all(isinstance(i, str) and CUSTOM_ID.fullmatch(i) for i in ids):
        return bad_request("requests: custom_id must match ^[a-zA-Z0-9_-]{1,64}$")
    if len(set(ids)) != len(ids):
        return bad_request("requests: custom_id must be unique within a batch")
    if not all(isinstance(item.get("params"), dict) for item in requests):
        return bad_request("requests: params is required")
    return None


def _not_found(request: Request) -> Response:
    batch_id = request.path_params["batch_id"]
    return error_response(HttpFailure(404, "not_found_error", f"batch {batch_id} not found"), "req_batch")


def _rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")
