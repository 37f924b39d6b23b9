"""The offline provider: a deterministic statistical summary of the input, written without a language model.

Used when no API key is configured. It never touches the network and says so at the top of every
report. It streams its text in chunks like the real provider, so the job's progress events behave alike.
The summary is CPU-bound and the input is anyone's: it runs in a process of its own, killed at
``SUMMARY_TIMEOUT_SECONDS`` (a thread could not be stopped).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from service.core.process_pool import DeadlinePool
from service.providers.base import (
    CHARS_PER_TOKEN,
    CallUsage,
    ProgressThrottle,
    ReportAnswer,
    ReportRequest,
    UsageListener,
)
from service.providers.offline.common import NotParsed, Summary, inline
from service.providers.offline.csv_summary import summarize_csv
from service.providers.offline.json_summary import summarize_json
from service.providers.offline.text_summary import summarize_text

OFFLINE_MODEL = "offline"
CHUNK_CHARS = 160  # ~40 tokens a chunk: a few KB of report streams in one or two seconds
OFFLINE_NOTICE = (
    "> **Written offline, without a language model.** No AI model read this input: the service has "
    "no model provider configured, so this summary was computed directly from the file with counts "
    "and simple statistics. It describes the data; it does not interpret it."
)
_FORMAT_NAMES = {"csv": "CSV", "json": "JSON"}


def detect_format(content_type: str, name: str) -> str:
    """``csv``, ``json`` or ``text``, from the content type first, then the file name's extension."""
    kind, lowered = content_type.split(";")[0].strip().lower(), name.lower()
    if "csv" in kind or lowered.endswith((".csv", ".tsv")):
        return "csv"
    if "json" in kind or lowered.endswith((".json", ".jsonl", ".ndjson")):
        return "json"
    return "text"


def summarize(text: str, fmt: str) -> Summary:
    """The summary for ``fmt``; a file that does not parse is summarised as text, and the report says so."""
    try:
        if fmt == "csv":
            return summarize_csv(text)
        if fmt == "json":
            return summarize_json(text)
    except NotParsed as exc:
        summary = summarize_text(text)
        label = _FORMAT_NAMES[fmt]
        summary.findings.insert(
            0, f"The file did not parse as {label} ({inline(exc.reason, 160)}), so it is summarised as text."
        )
        return summary
    return summarize_text(text)


def render_offline_report(request: ReportRequest) -> str:
    """The whole report as Markdown: title, offline notice, key findings, sections, notes, next steps."""
    summary = summarize(request.input_text, detect_format(request.content_type, request.input_name))
    parts = [f"# Offline summary of {inline(request.input_name, 80)}", "", OFFLINE_NOTICE, ""]
    parts += ["## Key findings", "", *(f"- {finding}" for finding in summary.findings), ""]
    for section in summary.sections:
        parts += [f"## {section.heading}", "", section.body, ""]
    if summary.notes:
        parts += ["## Data quality notes", "", *(f"- {note}" for note in summary.notes), ""]
    parts += ["## Next steps", "", *_next_steps(summary), ""]
    return "\n".join(parts)


def _next_steps(summary: Summary) -> list[str]:
    steps = []
    if summary.notes:
        steps.append("1. Check the data quality notes above at the source before relying on the figures.")
    steps.append(
        f"{len(steps) + 1}. For an executive report with analysis and recommendations, run this job again "
        "once a model provider is configured."
    )
    return steps


def chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)]


class OfflineProvider:
    """Implements ``Provider`` with ``render_offline_report``; ``chunk_delay`` paces the fake streaming.

    ``summary_timeout`` is the deadline of the summary (``SUMMARY_TIMEOUT_SECONDS``, 60 by default);
    ``summarize`` is what runs in the summary's process, a module-level function (tests make one hang).
    """

    def __init__(
        self,
        chunk_delay: float = 0.05,
        *,
        summary_timeout: float = 60,
        summarize: Callable[[ReportRequest], str] = render_offline_report,
    ) -> None:
        self._chunk_delay = chunk_delay
        self._summary_timeout = summary_timeout
        self._summarize = summarize

    async def count_input_tokens(self, request: ReportRequest) -> int:
        return len(request.input_text) // CHARS_PER_TOKEN

    async def write_report(
        self, request: ReportRequest, on_usage: UsageListener | None = None
    ) -> ReportAnswer:
        input_tokens = await self.count_input_tokens(request)
        progress = ProgressThrottle(on_usage)
        await progress.update(CallUsage(input_tokens, 0))
        text = await self._summary(request)
        sent = 0
        for chunk in chunks(text):
            await asyncio.sleep(self._chunk_delay)
            sent += len(chunk)
            if progress.due():
                await progress.update(CallUsage(input_tokens, sent // CHARS_PER_TOKEN, text=text[:sent]))
        output_tokens = len(text) // CHARS_PER_TOKEN
        await progress.finish(CallUsage(input_tokens, output_tokens, text=text))
        return ReportAnswer(text, OFFLINE_MODEL, input_tokens, output_tokens, offline=True)

    async def _summary(self, request: ReportRequest) -> str:
        """The summary in a process of its own, one per job: a hostile input stalls nobody else's."""
        limit = f"SUMMARY_TIMEOUT_SECONDS ({self._summary_timeout:g}s)"
        pool = DeadlinePool(
            timeout=self._summary_timeout,
            timed_out=f"the offline summary took longer than {limit}",
            died="the offline summary's process died",
            preload=[__name__],
        )
        try:
            return await pool.run(self._summarize, request)
        finally:
            pool.close(wait=False)  # nothing is left running: the call returned, or was killed
