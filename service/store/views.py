"""How a job record looks on the wire: the contract's status and result objects."""

from __future__ import annotations

import json
from typing import Any

from service.core.clock import iso_from_ms


def _ms(record: dict[str, str], field: str) -> int | None:
    value = record.get(field)
    return int(value) if value else None


def report_paths(job_id: str) -> dict[str, str]:
    base = f"/api/reports/{job_id}"
    return {"statusUrl": base, "eventsUrl": f"{base}/events", "pdfUrl": f"{base}/pdf"}


# How a finished record keeps its result: short names, and no sum, so the value stays small enough
# for Redis to keep the whole record as a compact listpack (see ``lua.rewrite_finished``).
_SHORT_RESULT = {"model": "m", "inputTokens": "i", "outputTokens": "o"}


def stored_result(result: dict[str, Any]) -> str:
    short = {_SHORT_RESULT.get(name, name): value for name, value in result.items() if name != "tokensUsed"}
    return json.dumps(short, separators=(",", ":"))


def _stored_result_view(raw: str) -> dict[str, Any]:
    stored: dict[str, Any] = json.loads(raw)
    long = {full: stored.pop(short) for full, short in _SHORT_RESULT.items() if short in stored}
    if "inputTokens" in long and "outputTokens" in long and "tokensUsed" not in stored:
        long["tokensUsed"] = long["inputTokens"] + long["outputTokens"]
    return {**long, **stored}


def result_view(job_id: str, record: dict[str, str], pdf_url: str | None = None) -> dict[str, Any] | None:
    """``pdf_url``: a pre-signed link to the object, when the API made one; else the API's own path."""
    if record.get("state") != "completed" or not record.get("result"):
        return None
    return {"pdfUrl": pdf_url or report_paths(job_id)["pdfUrl"], **_stored_result_view(record["result"])}


def error_view(record: dict[str, str]) -> dict[str, Any] | None:
    if record.get("state") != "failed" or not record.get("error"):
        return None
    stored: dict[str, Any] = json.loads(record["error"])
    # Records written before codes existed say only why: their code is the generic one.
    return {"reason": stored.get("reason", "the job failed"), "code": stored.get("code", "internal")}


def callback_view(record: dict[str, str]) -> dict[str, Any] | None:
    """The job's webhook delivery: ``pending`` until it is delivered or given up (``failed``)."""
    url = record.get("callback_url")
    if not url:
        return None
    state = record.get("callback_state", "pending")
    return {"url": url, "state": state, "attempts": int(record.get("callback_attempts", 0))}


def status_view(job_id: str, record: dict[str, str], pdf_url: str | None = None) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "reportId": record["report_id"],
        "state": record["state"],
        "progress": int(record.get("progress", 0)),
        "stage": record.get("stage", "queued"),
        "attempts": int(record.get("attempts", 0)),
        # Every time a worker died under the job, whether or not the job was to blame.
        "crashRestarts": int(record.get("crashes", 0)) + int(record.get("co_crashes", 0)),
        "createdAt": iso_from_ms(_ms(record, "created_ms")),
        "startedAt": iso_from_ms(_ms(record, "started_ms")),
        "finishedAt": iso_from_ms(_ms(record, "finished_ms")),
        "result": result_view(job_id, record, pdf_url),
        "error": error_view(record),
        "callback": callback_view(record),
    }


def webhook_event(job_id: str, record: dict[str, str]) -> dict[str, Any]:
    """The body of an ended job's webhook (Standard Webhooks' payload structure): its type, when the
    job ended, and its status object as it was then (its ``callback`` still pending, 0 attempts, so
    that every attempt sends the same bytes)."""
    data = status_view(job_id, record)
    data["callback"] = {"url": record.get("callback_url", ""), "state": "pending", "attempts": 0}
    return {"type": f"report.{record['state']}", "timestamp": data["finishedAt"], "data": data}


def webhook_message_id(record: dict[str, str]) -> str:
    """The ``webhook-id`` of a job's webhook, the same on every retry: from its report id, which is
    new with every job (a job id comes back when an expired job's idempotency key is used again)."""
    return "msg_" + record["report_id"].removeprefix("rep_")
