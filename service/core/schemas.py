"""The contract's wire objects as pydantic models: what the API answers (its OpenAPI document is built
from them) and what the Python client reads.

Objects are open (no ``additionalProperties: false``) on purpose: the contract grows by adding
fields, and a client built today must still read tomorrow's answers. Attributes are snake_case in
Python and camelCase on the wire, as the contract spells them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

State = Literal["queued", "active", "completed", "failed", "cancelled"]
STATES: tuple[State, ...] = ("queued", "active", "completed", "failed", "cancelled")
Plan = Literal["free", "pro"]
# The status object's ``error.code`` (pinned to ``core.errors.JOB_ERROR_CODES`` by a test).
JobErrorCode = Literal[
    "input_unavailable",
    "input_rejected",
    "provider_unavailable",
    "provider_rejected",
    "budget_exceeded",
    "timed_out",
    "worker_crashed",
    "internal",
]
EventName = Literal["progress", "text", "restart", "completed", "failed", "cancelled"]

_STAGES = (
    "`queued`, `fetching`, `summarizing`, `in_batch` (a `batch` job waiting in a provider batch), "
    "`rendering`, `storing`, `done`"
)
Lane = Literal["realtime", "batch"]


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class ErrorBody(Wire):
    """Every error the API answers."""

    error: str = Field(description="a stable code from the contract's error table")
    message: str = Field(description="what went wrong, for a person")


class BadRequestBody(ErrorBody):
    """``400 bad_request``: the request's problems, one line each."""

    issues: list[str]


class Accepted(Wire):
    """The answer to ``POST /api/reports``: the job, and where to follow it."""

    job_id: str = Field(description="derived from (user id, idempotency key); safe in a URL path")
    report_id: str
    state: State
    status_url: str = Field(description="a path relative to the API's own address")
    events_url: str = Field(description="a path with a signed, expiring ``token`` bound to this job")


class JobResult(Wire):
    """A completed job's result."""

    pdf_url: str = Field(description="the API's `/pdf` path, or a pre-signed object-store link")
    model: str
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    tokens_used: int = Field(ge=0)
    # Absent from results stored before they were counted (0 then).
    cache_read_tokens: int = Field(default=0, ge=0, description="of inputTokens, read from the prompt cache")
    cache_write_tokens: int = Field(
        default=0, ge=0, description="of inputTokens, written to the prompt cache"
    )
    cost_usd: float = Field(
        default=0.0, ge=0, description="at the provider's list prices for the lane (0 for offline reports)"
    )
    # Absent from results stored before the batch lane existed: those were all realtime.
    lane: Lane = Field(default="realtime", description="the lane whose call wrote the answer")
    # Absent from results stored before it was recorded (false then).
    output_limit_reached: bool = Field(
        default=False,
        description="the model stopped at its output limit (MAX_OUTPUT_TOKENS, or less near the end of "
        "a budget): the report ends before the model had finished it, and the PDF says so",
    )


class JobFailure(Wire):
    """Why a job failed: ``reason`` for a person, ``code`` for a program."""

    reason: str
    code: JobErrorCode = "internal"


class Callback(Wire):
    """The job's completion webhook (jobs submitted with a ``callbackUrl`` only)."""

    url: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int = Field(ge=0)


class JobStatus(Wire):
    """The status object: one job as it is now."""

    job_id: str
    report_id: str
    state: State
    progress: int = Field(ge=0, le=100, description="never decreasing within one attempt")
    stage: str = Field(description=f"one of {_STAGES}")
    attempts: int = Field(ge=0)
    crash_restarts: int = Field(ge=0, description="times a worker died under the job")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: JobResult | None = Field(description="completed jobs only")
    error: JobFailure | None = Field(description="failed jobs only")
    callback: Callback | None = Field(default=None, description="jobs submitted with a callbackUrl only")

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "failed", "cancelled")


class ReportPage(Wire):
    """One page of the caller's jobs, newest first."""

    items: list[JobStatus]
    next_cursor: str | None = Field(description="pass it as `cursor` for the next page; null at the end")


class Usage(Wire):
    """The caller's spending in the current budget period."""

    user_id: str
    plan: Plan
    period: str = Field(description="`YYYY-MM` (BUDGET_PERIOD=month) or `YYYY-MM-DD` (day), UTC")
    reports: int = Field(ge=0, description="completed reports")
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    tokens_used: int = Field(ge=0, description="every token the provider billed, each call once")
    cache_read_tokens: int = Field(ge=0, description="of inputTokens, read from the prompt cache")
    cache_write_tokens: int = Field(ge=0, description="of inputTokens, written to the prompt cache")
    cost_usd: float = Field(
        ge=0, description="estimated from the public price list, each kind of token at its own price"
    )
    budget: int | None = Field(description="tokens per period; null: no budget")
    reserved_tokens: int = Field(ge=0, description="held back by queued and running reports")
    budget_remaining: int | None = Field(description="what is left for new reports; null: no budget")


class WebhookSecret(Wire):
    """The secret every webhook of the caller's jobs is signed with (Standard Webhooks)."""

    secret: str = Field(description="`whsec_` and base64: give it to your receiver's verifier")


class InputUploaded(Wire):
    """An uploaded input, usable as ``inputDataUrl`` by the same user until it expires."""

    input_data_url: str
    input_id: str
    name: str
    content_type: str
    size: int = Field(ge=1)
    expires_at: datetime


class ProgressData(Wire):
    """``data`` of a ``progress`` event."""

    progress: int = Field(ge=0, le=100)
    state: State
    stage: str


class TextData(Wire):
    """``data`` of a ``text`` event: the model's answer as it streams. ``offset`` 0 while text is
    already shown means the answer starts over (a retried call)."""

    offset: int = Field(ge=0, description="characters of the answer before this delta")
    delta: str


class RestartData(Wire):
    """``data`` of a ``restart`` event: the answer shown so far is dropped, because the call that
    wrote it was cut (an ``overloaded_error`` after the 200, a dropped connection, a timeout, a lost
    worker) and a new call writes it again from the start; its ``text`` events begin at 0."""

    offset: Literal[0] = Field(description="where the new answer's text starts: always 0")
    reason: str = Field(description="why the earlier answer was dropped, as the job's owner may read it")


class ServerSentEvent(Wire):
    """One event of ``text/event-stream``, as its lines carry it."""

    id: str = Field(description="its position in the job's stream: send it back as `Last-Event-ID`")
    event: EventName
    data: str = Field(
        description="JSON: ProgressData (progress), TextData (text), RestartData (restart), "
        "JobResult (completed), JobFailure (failed), {} (cancelled)"
    )


class Health(Wire):
    status: Literal["ok"]


class Ready(Wire):
    status: Literal["ready"]


# Every model the OpenAPI document names, answers first, then what arrives inside events.
ANSWER_MODELS: tuple[type[Wire], ...] = (
    ErrorBody,
    BadRequestBody,
    Accepted,
    JobStatus,
    ReportPage,
    Usage,
    InputUploaded,
    Health,
    Ready,
    ServerSentEvent,
    ProgressData,
    TextData,
    RestartData,
)
