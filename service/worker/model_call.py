"""The model call as a span of the job's trace: the GenAI conventions' attributes, what the call was
billed, and the span's ``traceparent`` on the request to the provider."""

from __future__ import annotations

from dataclasses import replace

from service.providers.base import ReportAnswer, ReportRequest
from service.store.limiter import Grant
from service.telemetry.tracing import model_answered, model_call_span, model_call_usage
from service.worker.billing import CallAccount
from service.worker.capacity import call_model
from service.worker.resources import WorkerDeps, provider_name


async def call_model_traced(
    deps: WorkerDeps, grant: Grant | None, request: ReportRequest, account: CallAccount
) -> ReportAnswer:
    """``call_model`` inside its span; with tracing off, exactly ``call_model``."""
    with model_call_span(provider_name(deps.settings), request.model, request.max_tokens) as span:
        headers = span.headers()
        sent = replace(request, trace_headers=headers) if headers else request
        try:
            follow = deps.settings.llm_follow_provider_limits
            answer = await call_model(
                deps.limiter, grant, deps.provider, sent, account, deps.metrics, follow_provider=follow
            )
        finally:  # the ledger's count, however the call ended
            model_call_usage(span, account.last.input_tokens, account.last.output_tokens)
        model_answered(span, answer.model)
    return answer
