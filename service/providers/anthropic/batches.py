"""Claude's Message Batches API through the official SDK: half-price answers for work that can wait.

A batch holds requests under our ``custom_id``s (a job's id: 1 to 64 of ``[A-Za-z0-9_-]``), each with
the same parameters as the realtime call (``message_params``). Vendor errors are translated as the
realtime call's are; everything this raises on purpose is a ``JobError`` (or ``ValueError`` for
requests no batch may hold).

Finding a batch again (``find``): the API keeps no metadata on a batch and says which requests a
batch holds only once it has ended (in its results). So a batch is matched to an intent by its
results when it has ended, and otherwise by its size and its creation time within the intent's
window; ``service.providers.batch`` says what each answer means for the caller.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import anthropic
import httpx2  # the SDK's transport: a results download cut midway surfaces as its error, unwrapped
from anthropic import AsyncAnthropic
from anthropic.types import Message
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse
from anthropic.types.messages.batch_create_params import Request

from service.core.errors import JobError, ProviderRejected, ProviderUnavailable
from service.providers.anthropic.errors import translate_batch_error, translate_error
from service.providers.anthropic.provider import finished_answer, message_params
from service.providers.anthropic.stream import StreamedAnswer
from service.providers.base import ReportRequest
from service.providers.batch import (
    Answered,
    BatchIntent,
    BatchLookup,
    BatchOutcome,
    BatchStatus,
    Canceled,
    CancelResult,
    Expired,
    Failed,
    Found,
    NotCreated,
    Undecided,
)
from service.providers.prompt import PromptCachePolicy

CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The provider's clock and the intent writer's may differ by this much; a wider window only ever
# adds candidates (an undecided answer), never hides the batch.
CLOCK_SKEW = timedelta(seconds=30)
LIST_PAGE = 100
T = TypeVar("T")


class AnthropicBatches:
    """Creates, follows, cancels and reads Message Batches; one SDK call (or page) per operation."""

    def __init__(self, client: AsyncAnthropic, *, prompt_cache: PromptCachePolicy | None = None) -> None:
        self._client = client
        self._cache = prompt_cache or PromptCachePolicy()
        timeout = client.timeout
        seconds = timeout.read if isinstance(timeout, anthropic.Timeout) else timeout
        # How long after its intent a batch can still be created: the create call's own deadline.
        self.create_window = timedelta(seconds=float(seconds or 600))

    async def create(self, requests: Sequence[tuple[str, ReportRequest]]) -> BatchStatus:
        """One batch holding ``requests`` (custom id, request), the same prompts as realtime calls."""
        _check_ids([custom_id for custom_id, _ in requests])
        items: list[Request] = [
            {"custom_id": custom_id, "params": message_params(request, self._cache)}
            for custom_id, request in requests
        ]
        return _status(await self._call(self._client.messages.batches.create(requests=items)))

    async def status(self, batch_id: str) -> BatchStatus:
        return _status(await self._call(self._client.messages.batches.retrieve(batch_id), batch_id))

    async def cancel(self, batch_id: str) -> CancelResult:
        """Asks the provider to cancel; ``in_time`` says whether the batch was still processing (its
        requests not yet processed end ``Canceled``) or had already ended."""
        try:
            batch = await self._client.messages.batches.cancel(batch_id)
        except anthropic.APIStatusError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                raise translate_error(exc, "", self._client.api_key) from exc
            # Refused (say, an ended batch): what the batch is now tells whether the cancel was late.
            batch = await self._call(self._client.messages.batches.retrieve(batch_id), batch_id)
        except (anthropic.APIError, httpx2.TransportError) as exc:
            raise translate_error(exc, "", self._client.api_key) from exc
        status = _status(batch)
        return CancelResult(status, in_time=status.cancel_requested)

    async def results(self, batch_id: str, model: str = "") -> AsyncIterator[tuple[str, BatchOutcome]]:
        """Each request's outcome, by custom id, in the provider's order (not the requests'), once the
        batch has ended; ``model`` names the requested model in rejection reasons."""
        status = await self.status(batch_id)
        if not status.ended:
            raise ProviderUnavailable(f"batch {batch_id} has not ended yet ({status.state})")
        decoder = await self._call(self._client.messages.batches.results(batch_id), batch_id)
        try:
            async for item in decoder:
                yield item.custom_id, self._outcome(item, model)
        except (anthropic.APIError, httpx2.TransportError) as exc:
            raise translate_error(exc, model, self._client.api_key) from exc
        finally:
            await decoder.close()  # a caller that stops early must not leave the download open

    async def find(
        self, intent: BatchIntent, *, claimed: Collection[str] = (), now: datetime | None = None
    ) -> BatchLookup:
        """The batch created for ``intent``, if any; ``claimed``: batches other intents are known to
        hold, never candidates. Lists batches newest first, back to the intent's window."""
        now = now or datetime.now(UTC)
        start, end = intent.written_at - CLOCK_SKEW, intent.written_at + self.create_window + CLOCK_SKEW
        candidates = [batch async for batch in self._created_between(start, end)]
        candidates = [b for b in candidates if b.id not in claimed and _size(b) == len(intent.custom_ids)]
        unverified: list[str] = []
        for batch in candidates:
            if batch.processing_status != "ended":
                unverified.append(batch.id)
            elif await self._holds(batch.id, set(intent.custom_ids)):
                return Found(batch.id, verified=True)
        if len(unverified) == 1:
            return Found(unverified[0], verified=False)
        if unverified or now < end:
            return Undecided(tuple(unverified))
        return NotCreated()

    async def _created_between(self, start: datetime, end: datetime) -> AsyncIterator[MessageBatch]:
        try:
            async for batch in self._client.messages.batches.list(limit=LIST_PAGE):
                if batch.created_at < start:
                    return  # newest first: every later one is older still
                if batch.created_at <= end:
                    yield batch
        except (anthropic.APIError, httpx2.TransportError) as exc:
            raise translate_error(exc, "", self._client.api_key) from exc

    async def _holds(self, batch_id: str, custom_ids: set[str]) -> bool:
        seen = {custom_id async for custom_id, _ in self.results(batch_id)}
        return seen == custom_ids

    def _outcome(self, item: MessageBatchIndividualResponse, model: str) -> BatchOutcome:
        result = item.result
        if result.type == "succeeded":
            return _answered(result.message)
        if result.type == "errored":
            error = result.error.error
            code = getattr(getattr(error, "details", None), "error_code", None)
            secret = self._client.api_key
            return Failed(
                translate_batch_error(error.type, error.message, model, error_code=code, secret=secret)
            )
        return Canceled() if result.type == "canceled" else Expired()

    async def _call(self, call: Awaitable[T], batch_id: str = "") -> T:
        """Awaits an SDK call, its failures in our terms (an unknown batch is ``ProviderRejected``)."""
        try:
            return await call
        except anthropic.NotFoundError as exc:
            raise ProviderRejected(f"the model provider does not know batch {batch_id!r}") from exc
        except (anthropic.APIError, httpx2.TransportError) as exc:
            raise translate_error(exc, "", self._client.api_key) from exc


def _answered(message: Message) -> BatchOutcome:
    """A succeeded request's message, judged as a realtime answer is (a refusal, an empty answer)."""
    usage = message.usage
    streamed = StreamedAnswer(
        model=message.model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_input_tokens or 0,
        cache_write_tokens=usage.cache_creation_input_tokens or 0,
        stop_reason=message.stop_reason,
        parts=[block.text for block in message.content if block.type == "text"],
        request_id=message.id,
        counted_output=True,
    )
    try:
        return Answered(finished_answer(streamed))
    except JobError as error:
        return Failed(error)


def _status(batch: MessageBatch) -> BatchStatus:
    counts = batch.request_counts
    return BatchStatus(
        batch_id=batch.id,
        state=batch.processing_status,
        created_at=batch.created_at,
        expires_at=batch.expires_at,
        ended_at=batch.ended_at,
        cancel_requested=batch.cancel_initiated_at is not None,
        counts={
            "processing": counts.processing,
            "succeeded": counts.succeeded,
            "errored": counts.errored,
            "canceled": counts.canceled,
            "expired": counts.expired,
        },
    )


def _size(batch: MessageBatch) -> int:
    counts = batch.request_counts
    return counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired


def _check_ids(custom_ids: list[str]) -> None:
    if not custom_ids:
        raise ValueError("a batch needs at least one request")
    if not all(CUSTOM_ID.fullmatch(custom_id) for custom_id in custom_ids):
        raise ValueError("custom ids are 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")
    if len(set(custom_ids)) != len(custom_ids):
        raise ValueError("custom ids must be unique within a batch")
