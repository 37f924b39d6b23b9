"""A job's request to the model, prepared the same way for both lanes: its input fetched (the
``fetching`` stage, announced by START) and the report request built from it."""

from __future__ import annotations

from service.inputs.fetch import FetchedInput
from service.providers.base import ReportRequest
from service.worker.resources import WorkerDeps
from service.worker.stages import timed


async def fetch_request(deps: WorkerDeps, record: dict[str, str]) -> tuple[FetchedInput, ReportRequest]:
    async with timed("fetching"):  # announced by START
        fetched = await deps.inputs.load(record["input_url"], record["user_id"])
    request = ReportRequest(
        input_text=fetched.text,
        input_name=fetched.name,
        content_type=fetched.content_type,
        model=record["model"],
        max_tokens=deps.settings.max_output_tokens,
    )
    return fetched, request
