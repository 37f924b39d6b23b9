"""What goes in and out of the job store: plain frozen records, no Redis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class NewJob:
    job_id: str
    user_id: str
    plan: str
    input_url: str
    model: str
    fingerprint: str
    request_id: str = ""  # the submitting request's X-Request-ID, for the job's log lines
    traceparent: str = ""  # W3C trace context of the submitting request's span ('' when tracing is off)
    callback_url: str | None = None  # POSTed a signed webhook when the job ends (service.store.webhooks)
    lane: str = "realtime"  # "batch": the provider's batch API (service.worker.batch_lane)


@dataclass(frozen=True)
class SubmitPolicy:
    """What a submission must fit: the user's rate bucket and the budget of the current period."""

    per_minute: int  # 0: no limit
    burst: int
    budget: int  # tokens per period; 0: no budget
    reserve: int  # tokens held back per queued report until its real usage is known
    period: str  # "2026-11" (monthly) or "2026-11-28" (daily)


@dataclass(frozen=True)
class SubmitOutcome:
    kind: Literal["created", "existing", "rate_limited", "over_budget"]
    report_id: str = ""
    state: str = ""
    same_payload: bool = True
    wait_seconds: float = 0.0
    tokens_left: int = 0


@dataclass(frozen=True)
class Retention:
    """How long, and how many per user, finished jobs of a kind are kept (past the count, the soonest
    to expire are cut down to tombstones that still answer replays)."""

    seconds: int
    count: int


@dataclass(frozen=True)
class StartPolicy:
    max_crashes: int
    cap_free: int  # active jobs a user may have at once, per plan; 0: no cap
    cap_pro: int
    lease_ms: int  # how long a claimed job (and its user's slot) stays taken if its worker dies
    park_ms: int = 120_000  # a parked job's safety-net recheck (it is unparked when a slot frees)
    # For a job given up at its start (it kept killing its workers).
    failed_retention: Retention = Retention(7 * 24 * 3600, 1_000)


@dataclass(frozen=True)
class StartOutcome:
    # 'active': go on; 'parked': the user is at their cap; 'deferred': not on this worker now;
    # 'crashed': too many crash restarts;
    # anything else ('completed', 'cancelled', 'missing', ...): nothing to do.
    state: str
    attempts: int
    crashes: int
    record: dict[str, str] = field(default_factory=dict)  # the job's fields, when it goes on
    first: bool = False  # the job's very first start (its queue wait ends here)
    alone: bool = False  # a suspect of killing its worker, run with no other job beside it
    restarted: bool = False  # its previous worker died under it
    lost_calls: tuple[str, ...] = ()  # calls a dead worker left open: to be closed as lost
    member: str = ""  # the job's queue member

    @property
    def proceed(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True)
class Checkpoint:
    """The model's answer, saved before rendering so no later attempt ever pays for it again."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    offline: bool
    source: str  # "sales.csv (8.5 kB)", printed under the title
    input_name: str = "input"
    request_id: str = ""  # the provider's id of the call that wrote it
    # Of ``input_tokens`` (every input token billed), those read from and written to the prompt cache:
    # priced apart (absent from answers saved before they were counted: 0).
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_limit_reached: bool = False  # the answer stops at its max_tokens (the PDF says so)
