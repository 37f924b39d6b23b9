"""The batch lane's interface, free of any vendor: a provider batch's status, what each request in it
came to, and how a batch is found again after a crash (``service.providers.anthropic.batches``
implements it for Claude's Message Batches API)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from service.core.errors import JobError
from service.providers.base import ReportAnswer, ReportRequest

BatchState = Literal["in_progress", "canceling", "ended"]


@dataclass(frozen=True)
class BatchStatus:
    batch_id: str
    state: BatchState
    created_at: datetime
    expires_at: datetime  # the provider ends it then, whatever is left ``expired`` (24 h after creation)
    ended_at: datetime | None
    cancel_requested: bool  # a cancel reached the provider before the batch ended
    # processing, succeeded, errored, canceled, expired: the provider tallies outcomes only at the end
    counts: Mapping[str, int]

    @property
    def ended(self) -> bool:
        """Its results can be read: every request has an outcome."""
        return self.state == "ended"

    @property
    def size(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Answered:
    """The request was answered: the report, its model, its tokens (cache ones apart), its id."""

    answer: ReportAnswer


@dataclass(frozen=True)
class Failed:
    """The provider answered the request with an error: ``ProviderRejected`` when retrying cannot
    help, ``ProviderUnavailable`` when another attempt (realtime or in a later batch) may succeed."""

    error: JobError


@dataclass(frozen=True)
class Canceled:
    """A cancel reached the request before it was processed: nothing was billed."""


@dataclass(frozen=True)
class Expired:
    """The batch ended (24 h) before this request was processed: nothing was billed."""


BatchOutcome = Answered | Failed | Canceled | Expired


@dataclass(frozen=True)
class CancelResult:
    status: BatchStatus
    # The cancel reached the batch while it was processing: requests not yet processed end
    # ``Canceled``. False: the batch had already ended, every request has its outcome (and was billed).
    in_time: bool


@dataclass(frozen=True)
class BatchIntent:
    """What is written before a batch is created, to find it again if the creator dies mid-call:
    the requests' custom ids and when (the writer's clock) the intent was written."""

    custom_ids: tuple[str, ...]
    written_at: datetime


@dataclass(frozen=True)
class Found:
    batch_id: str
    # True: its results hold exactly the intent's custom ids. False: it is the only batch of that size
    # created in the intent's window, but it is still processing and the provider cannot yet say
    # which requests it holds (check its results when it ends).
    verified: bool


@dataclass(frozen=True)
class NotCreated:
    """No batch holding these requests exists, and none can still appear: safe to create one."""


@dataclass(frozen=True)
class Undecided:
    """A batch may still hold the requests: several unverifiable candidates (look again when they
    end), or none yet but the creating call may still be in flight. Never create another meanwhile."""

    candidates: tuple[str, ...]


BatchLookup = Found | NotCreated | Undecided


class BatchApi(Protocol):
    """A provider's batch API, as the batch lane's driver uses it."""

    # How long after its intent a batch can still be created (the create call's own deadline).
    create_window: timedelta

    async def create(self, requests: Sequence[tuple[str, ReportRequest]]) -> BatchStatus: ...

    async def status(self, batch_id: str) -> BatchStatus: ...

    async def cancel(self, batch_id: str) -> CancelResult: ...

    def results(self, batch_id: str, model: str = "") -> AsyncIterator[tuple[str, BatchOutcome]]: ...

    async def find(
        self, intent: BatchIntent, *, claimed: Collection[str] = (), now: datetime | None = None
    ) -> BatchLookup: ...
