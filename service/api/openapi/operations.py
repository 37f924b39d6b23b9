"""What every route of ``service.app.ROUTES`` takes and answers, keyed by its path and method.

Schemas come from the code: bodies and answers from their pydantic models, the listing's query
from ``ListQuery``, the idempotency key's bounds from ``ReportCreate``, error codes from the error
tree. ``tests/api/test_openapi.py`` holds this table to the routes, and schemathesis holds it to what
the live API answers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service.api.bodies import ReportCreate
from service.api.listing import ListQuery
from service.api.openapi.spec import Answer, Body, Operation, Param, Schema, errors
from service.api.uploads import UPLOAD_TYPES
from service.core import schemas

FOLLOW = ("getReport", "cancelReport", "getReportPdf", "getReportEvents")


def _property(model: type[BaseModel], name: str) -> Schema:
    """One field's schema, without the ``null`` an optional field allows (a parameter is absent
    instead) or the title pydantic adds."""
    schema: Schema = dict(model.model_json_schema(by_alias=True)["properties"][name])
    branches = [branch for branch in schema.pop("anyOf", []) if branch.get("type") != "null"]
    if len(branches) == 1:
        schema.update(branches[0])
    schema.pop("title", None)
    if schema.get("default", 0) is None:
        del schema["default"]
    return schema


def _query(model: type[BaseModel]) -> tuple[Param, ...]:
    return tuple(
        Param(name, "query", _property(model, name), str(field.description or ""))
        for name, field in model.model_fields.items()
    )


JOB_ID = Param(
    "jobId",
    "path",
    {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    "The job's id: `jobId` of the accepted answer.",
    required=True,
)
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    _property(ReportCreate, "idempotencyKey"),
    "Instead of `idempotencyKey` in the body (sending both, they must be equal).",
)
EVENTS_TOKEN = Param(
    "token",
    "query",
    {"type": "string"},
    "The signed, expiring token of `eventsUrl`, bound to this job, for clients that cannot send "
    "headers (a browser's EventSource); without it, the bearer key.",
)
LAST_EVENT_ID = Param(
    "Last-Event-ID",
    "header",
    {"type": "string"},
    "The `id` of the last event received: the stream replays every event after it, then goes on "
    "live. An id that is not one of this stream's starts again with a snapshot.",
)
UPLOAD_NAME = Param("name", "query", {"type": "string"}, "The file's name, shown in the report.")

_REPORTS: dict[tuple[str, str], Operation] = {
    ("/api/reports", "POST"): Operation(
        "createReport",
        "Submit a report job",
        "reports",
        description="Accepted at once; a worker fetches the input, asks the model and renders the "
        "PDF. The same idempotency key and payload again: the same job, `200` and "
        "`Idempotent-Replayed: true`, no second run.",
        params=(IDEMPOTENCY_KEY,),
        body=Body("The input to report on.", model=ReportCreate),
        answers={
            202: Answer("A new job.", schemas.Accepted, headers=("Location",), links=FOLLOW),
            200: Answer(
                "A replay: the job this key already made.",
                schemas.Accepted,
                headers=("Idempotent-Replayed",),
                links=FOLLOW,
            ),
        },
        errors=errors(400, 401, 402, 413, 415, 422, 429, 503, e413="The body is over `REQUEST_MAX_BYTES`."),
    ),
    ("/api/reports", "GET"): Operation(
        "listReports",
        "The caller's jobs, newest first",
        "reports",
        description="A page at a time: pass `nextCursor` as `cursor` until it is null. Unknown "
        "parameters, a forged cursor or a bad value are `400`.",
        params=_query(ListQuery),
        answers={200: Answer("A page of status objects.", schemas.ReportPage)},
        errors=errors(400, 401, 503),
    ),
    ("/api/reports/{job_id}", "GET"): Operation(
        "getReport",
        "A job's status",
        "reports",
        params=(JOB_ID,),
        answers={200: Answer("The status object.", schemas.JobStatus)},
        errors=errors(401, 404, 503),
    ),
    ("/api/reports/{job_id}", "DELETE"): Operation(
        "cancelReport",
        "Cancel a job",
        "reports",
        description="A queued job leaves the queue, an active one is aborted: both become `cancelled`.",
        params=(JOB_ID,),
        answers={200: Answer("The job, cancelled.", schemas.JobStatus)},
        errors=errors(401, 404, 503, e409="The job is already finished."),
    ),
    ("/api/reports/{job_id}/pdf", "GET"): Operation(
        "getReportPdf",
        "The finished PDF",
        "reports",
        params=(JOB_ID,),
        answers={
            200: Answer(
                "The PDF.",
                media="application/pdf",
                schema={"type": "string", "contentMediaType": "application/pdf"},
                headers=("Content-Disposition",),
            ),
        },
        errors=errors(401, 404, 503, e409="The report is not finished."),
    ),
    ("/api/reports/{job_id}/events", "GET"): Operation(
        "getReportEvents",
        "Follow a job (Server-Sent Events)",
        "reports",
        description="First a `progress` snapshot, then `progress` and `text` events as the worker "
        "goes on, then one of `completed`, `failed` or `cancelled`, and the stream ends. A `restart` "
        "event says the answer's text shown so far is dropped: the call writing it was cut and a new "
        "one starts over (its `text` events begin at offset 0). A comment line comes at least every "
        "15 s.",
        params=(JOB_ID, EVENTS_TOKEN, LAST_EVENT_ID),
        security="key_or_token",
        answers={
            200: Answer(
                "The stream: each event as described here.",
                schemas.ServerSentEvent,
                media="text/event-stream",
            ),
            204: Answer("Resumed after the terminal event: nothing more will come; stop reconnecting."),
        },
        errors=errors(
            404,
            503,
            e401="No key and no token, a bad or expired token, or a revoked key.",
            e429="Over `EVENTS_MAX_STREAMS_PER_USER` open streams.",
        ),
    ),
}


def _upload_media() -> dict[str, Schema]:
    text: Schema = {"type": "string"}
    return {media: ({} if media == "application/json" else text) for media in UPLOAD_TYPES}


_OTHERS: dict[tuple[str, str], Operation] = {
    ("/api/inputs", "POST"): Operation(
        "uploadInput",
        "Upload an input",
        "inputs",
        description="The raw file as the body; usable as `inputDataUrl` by the same user until `expiresAt`.",
        params=(UPLOAD_NAME,),
        body=Body("The file, as it is.", media=_upload_media()),
        answers={201: Answer("Stored.", schemas.InputUploaded)},
        errors=errors(
            400,
            401,
            413,
            415,
            429,
            503,
            e413="The body is over `INPUT_MAX_BYTES`.",
            e429="Uploading too fast, or past the user's quota of stored uploads.",
        ),
    ),
    ("/api/usage", "GET"): Operation(
        "getUsage",
        "The caller's usage and budget",
        "account",
        answers={200: Answer("This period's figures.", schemas.Usage)},
        errors=errors(401, 503),
    ),
    ("/api/webhooks/secret", "GET"): Operation(
        "getWebhookSecret",
        "The secret the caller's webhooks are signed with",
        "account",
        answers={200: Answer("The same secret every time (created on first use).", schemas.WebhookSecret)},
        errors=errors(401, 503),
    ),
    ("/healthz", "GET"): Operation(
        "healthz",
        "The process is alive",
        "operations",
        security="public",
        answers={200: Answer("Alive.", schemas.Health)},
    ),
    ("/readyz", "GET"): Operation(
        "readyz",
        "Redis answers",
        "operations",
        security="public",
        answers={200: Answer("Ready.", schemas.Ready)},
        errors=errors(503),
    ),
    ("/metrics", "GET"): Operation(
        "metrics",
        "The fleet's metrics (Prometheus text format)",
        "operations",
        security="metrics",
        answers={
            200: Answer("Every metric of every process.", media="text/plain", schema={"type": "string"})
        },
        errors=errors(e401="Not the metrics token.", e404="Metrics are off: `METRICS_TOKEN` is not set."),
    ),
    ("/", "GET"): Operation(
        "page",
        "The web page",
        "documentation",
        security="public",
        answers={200: Answer("The page.", media="text/html", schema={"type": "string"})},
    ),
    ("/openapi.json", "GET"): Operation(
        "openapi",
        "This document",
        "documentation",
        security="public",
        answers={200: Answer("OpenAPI 3.1.", schema={"type": "object"})},
    ),
    ("/docs", "GET"): Operation(
        "docs",
        "This document, rendered",
        "documentation",
        security="public",
        answers={
            200: Answer(
                "Swagger UI, served by the service itself.", media="text/html", schema={"type": "string"}
            )
        },
    ),
}

OPERATIONS: dict[tuple[str, str], Operation] = {**_REPORTS, **_OTHERS}


def models() -> list[tuple[type[BaseModel], Any]]:
    """Every model the document names, with the mode its schema is read in."""
    answers = [(model, "serialization") for model in schemas.ANSWER_MODELS]
    return [*answers, (ReportCreate, "validation")]
