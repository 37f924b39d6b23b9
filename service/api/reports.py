"""The report endpoints: submit, poll, download, cancel."""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service.api.auth import events_token, require_caller
from service.api.bodies import ReportCreate, parse, read_json
from service.api.headers import optional_header
from service.api.middleware import request_id_of
from service.api.resources import ApiServices, services
from service.api.responses import JSONResponse
from service.core.clock import now_ms
from service.core.errors import (
    BadRequest,
    BudgetExceeded,
    Conflict,
    IdempotencyKeyMismatch,
    NotFound,
    RateLimited,
)
from service.inputs.urls import check_input_url
from service.providers.prompt import minimal_call_tokens
from service.storage.base import DirectDownloads
from service.store.job_types import NewJob, SubmitOutcome
from service.store.jobs import derive_job_id, fingerprint
from service.store.keys import Caller
from service.store.policies import budget_period, failed_retention, queue_score, submit_policy
from service.store.uploads import UPLOAD_SCHEME, upload_id_from_url
from service.store.views import report_paths, status_view
from service.telemetry.tracing import current_traceparent

_JOB_ID = re.compile(r"^[0-9a-f]{32}\Z")


def idempotency_key(body: ReportCreate, header: str | None) -> str | None:
    if header is not None and not 8 <= len(header) <= 128:
        raise BadRequest("the Idempotency-Key header must be 8 to 128 characters")
    if body.idempotency_key and header and body.idempotency_key != header:
        raise BadRequest("idempotencyKey in the body and the Idempotency-Key header differ; send one")
    return body.idempotency_key or header


def _invalid_url(problem: str) -> BadRequest:
    return BadRequest(f"inputDataUrl: {problem}", [f"inputDataUrl: {problem}"])


async def checked_input_url(url: str, svc: ApiServices, caller: Caller) -> str:
    """An http(s) URL the worker may fetch, or one of the caller's own uploads."""
    if url.startswith(UPLOAD_SCHEME):
        input_id = upload_id_from_url(url)
        if input_id is None or await svc.uploads.owned(input_id, caller.user_id) is None:
            raise _invalid_url("no such uploaded input (uploads expire; upload it again)")
        return url
    try:
        return check_input_url(url, allow_private=svc.settings.allow_private_input_urls)
    except ValueError as exc:
        raise _invalid_url(str(exc)) from exc


def checked_callback_url(url: str | None, svc: ApiServices) -> str | None:
    """An http(s) URL the fleet may POST the job's webhook to, checked as input URLs are (the
    workers' guard refuses names that resolve privately when they connect)."""
    if url is None:
        return None
    try:
        return check_input_url(url, allow_private=svc.settings.allow_private_input_urls)
    except ValueError as exc:
        problem = str(exc).replace("input URL", "callback URL")
        raise BadRequest(f"callbackUrl: {problem}", [f"callbackUrl: {problem}"]) from exc


def payload_fingerprint(url: str, callback_url: str | None, lane: str = "realtime") -> str:
    """What "the same payload" is: the input, the callback and the lane when they are not the
    defaults (a job submitted without them keeps the fingerprint it always had)."""
    fields = [url]
    if callback_url is not None:
        fields.append(f"callbackUrl={callback_url}")
    if lane != "realtime":
        fields.append(f"lane={lane}")
    return fingerprint(*fields)


async def accepted_body(
    svc: ApiServices, caller: Caller, job_id: str, report_id: str, state: str
) -> dict[str, Any]:
    paths = report_paths(job_id)
    token = await events_token(svc, caller, job_id)
    return {
        "jobId": job_id,
        "reportId": report_id,
        "state": state,
        "statusUrl": paths["statusUrl"],
        "eventsUrl": f"{paths['eventsUrl']}?token={token}",
    }


async def create_report(request: Request) -> Response:
    svc = services(request)
    caller = await require_caller(request, svc)
    body = parse(ReportCreate, await read_json(request, svc.settings.request_max_bytes))
    key = idempotency_key(body, optional_header(request, b"idempotency-key"))
    url = await checked_input_url(body.input_data_url, svc, caller)
    callback_url = checked_callback_url(body.callback_url, svc)
    job = NewJob(
        job_id=derive_job_id(caller.user_id, key or uuid.uuid4().hex),
        user_id=caller.user_id,
        plan=caller.plan,
        input_url=url,
        model=svc.settings.model_for(caller.plan),
        fingerprint=payload_fingerprint(url, callback_url, body.lane),
        callback_url=callback_url,
        lane=body.lane,
        request_id=request_id_of(request),
        traceparent=current_traceparent(),
    )
    outcome = await svc.jobs.submit(
        job,
        submit_policy(svc.settings, caller.plan, minimal_call_tokens(svc.settings.max_output_tokens)),
        keep_ms=max(svc.settings.failed_retention_seconds, svc.settings.report_retention_seconds) * 1000,
        score_ms=queue_score(svc.settings, caller.plan, now_ms()),
    )
    svc.metrics.inc("reports_submitted_total", plan=caller.plan, outcome=outcome_name(outcome))
    refuse_over_limits(outcome, svc)
    if not outcome.same_payload:
        raise IdempotencyKeyMismatch("this idempotency key was already used with a different payload")
    content = await accepted_body(svc, caller, job.job_id, outcome.report_id, outcome.state)
    if outcome.kind == "created":
        return JSONResponse(content, status_code=202, headers={"Location": content["statusUrl"]})
    return JSONResponse(content, status_code=200, headers={"Idempotent-Replayed": "true"})


def outcome_name(outcome: SubmitOutcome) -> str:
    if outcome.kind == "existing":
        return "replayed" if outcome.same_payload else "mismatch"
    return outcome.kind


def refuse_over_limits(outcome: SubmitOutcome, svc: ApiServices) -> None:
    if outcome.kind == "rate_limited":
        wait = max(1, int(outcome.wait_seconds))
        raise RateLimited(f"too many submissions; retry in {wait} s", retry_after=wait)
    if outcome.kind == "over_budget":
        period = svc.settings.budget_period
        raise BudgetExceeded(
            f"the token budget of this {period} is spent: {outcome.tokens_left:,} tokens left, not enough "
            "for even the smallest report (its prompt and the most output a report may have)"
        )


async def owned_job(svc: ApiServices, caller: Caller, job_id: str) -> dict[str, str]:
    """The caller's job, or 404 exactly as for a job that does not exist."""
    record = await svc.jobs.get(job_id) if _JOB_ID.match(job_id) else None
    if record is None or record.get("user_id") != caller.user_id:
        raise NotFound("no such report job")
    if record.get("evicted"):
        # Past the user's retention count: only what answers a replayed POST as a replay is kept.
        raise NotFound("this report job is no longer retained (the newest ones are kept)")
    return record


async def get_report(request: Request) -> Response:
    svc = services(request)
    caller = await require_caller(request, svc)
    job_id = request.path_params["job_id"]
    record = await owned_job(svc, caller, job_id)
    return JSONResponse(status_view(job_id, record, await direct_pdf_url(svc, record)))


async def direct_pdf_url(svc: ApiServices, record: dict[str, str]) -> str | None:
    """A fresh pre-signed link to the PDF when the store offers them (S3), so the bytes skip the API;
    None keeps the API's own ``/pdf`` path. Live events keep that path: their bytes are shared and
    replayed, and a link in them would expire."""
    ttl = svc.settings.pdf_url_ttl_seconds
    if record.get("state") != "completed" or not record.get("pdf_key") or ttl == 0:
        return None
    if not isinstance(svc.storage, DirectDownloads):
        return None
    return await svc.storage.download_url(record["pdf_key"], ttl)


async def get_report_pdf(request: Request) -> Response:
    svc = services(request)
    caller = await require_caller(request, svc)
    job_id = request.path_params["job_id"]
    record = await owned_job(svc, caller, job_id)
    if record["state"] != "completed":
        raise Conflict(f"the report is not ready (state: {record['state']})")
    # The bytes themselves on every backend, not a redirect to the bucket: the page fetches this path
    # with the key (a redirect would need CORS on the bucket), and plain `curl -o` keeps working.
    pdf = await svc.storage.get(record["pdf_key"])
    if pdf is None:
        raise NotFound("the PDF is no longer stored")
    disposition = f'inline; filename="{record["report_id"]}.pdf"'
    return Response(pdf, media_type="application/pdf", headers={"Content-Disposition": disposition})


async def cancel_report(request: Request) -> Response:
    svc = services(request)
    caller = await require_caller(request, svc)
    job_id = request.path_params["job_id"]
    record = await owned_job(svc, caller, job_id)
    settings = svc.settings
    queued_seconds = settings.cancelled_queued_retention_seconds
    before = await svc.jobs.cancel(
        record,
        retention=failed_retention(settings),
        queued_seconds=queued_seconds,
        period=budget_period(settings),
    )
    if before not in ("queued", "active"):
        raise Conflict(f"the job is already {before} and cannot be cancelled")
    svc.metrics.inc("jobs_finished_total", plan=record.get("plan", ""), state="cancelled")
    return JSONResponse(status_view(job_id, await owned_job(svc, caller, job_id)))
