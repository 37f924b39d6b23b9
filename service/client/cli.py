"""``python -m service submit``: send a file or URL for a report, follow its progress, save the PDF,
through the typed client (``service.client.aio``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from service.client.aio import AsyncReportClient
from service.client.calls import ApiUnreachable, ReportApiError, ReportClientError
from service.client.sse import TERMINAL_EVENTS, SseEvent
from service.core.schemas import JobResult

DEFAULT_API = "http://127.0.0.1:8000"
REMOTE_SCHEMES = ("http://", "https://", "input://")
MEDIA_TYPES = {".csv": "text/csv", ".json": "application/json"}  # anything else goes as text/plain


class ClientError(Exception):
    """Something the user can act on, printed as one line."""


def add_submit_parser(commands: Any) -> None:
    submit = commands.add_parser(
        "submit", help="submit a report job (uploading a local file first), follow it, save the PDF"
    )
    submit.add_argument("source", metavar="FILE_OR_URL", help="a local file, or an http(s):// URL")
    submit.add_argument("--follow", action="store_true", help="show a progress bar until the job ends")
    submit.add_argument("--out", type=Path, help="save the PDF here (waits for the job to finish)")
    submit.add_argument("--api", help=f"the API's address (env REPORT_API_URL; default {DEFAULT_API})")
    submit.add_argument("--key", help="your API key (env REPORT_API_KEY)")


def run_submit(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get("REPORT_API_KEY")
    if not key:
        print("error: give an API key with --key or REPORT_API_KEY", file=sys.stderr)
        return 2
    api = args.api or os.environ.get("REPORT_API_URL") or DEFAULT_API
    try:
        source = read_source(args.source)
        return asyncio.run(submit_report(api, key, source, follow_it=args.follow, out=args.out))
    except ApiUnreachable as exc:
        print(f"error: talking to {api}: {exc}", file=sys.stderr)
        return 1
    except (ClientError, ReportClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def submit_report(api: str, key: str, source: Source, *, follow_it: bool, out: Path | None) -> int:
    async with AsyncReportClient(api, key) as client:
        job = await client.submit(
            await input_data_url(client, source), idempotency_key=f"cli-{uuid.uuid4().hex}"
        )
        print(f"job {job.job_id} {job.state}", file=sys.stderr)
        if not follow_it and out is None:
            print(job.job_id)
            return 0
        ending = await watch(client, job.job_id, show_progress=follow_it)
        data = ending.json()
        if ending.event != "completed":
            reason = data.get("reason", "no reason given") if ending.event == "failed" else "cancelled"
            print(f"error: job {job.job_id} {ending.event}: {reason}", file=sys.stderr)
            return 1
        result = JobResult.model_validate(data)
        if out is not None:
            await asyncio.to_thread(save, out, await client.download_pdf(result.pdf_url))
        saved = f", saved to {out}" if out is not None else ""
        print(f"completed: {result.model}, {result.tokens_used} tokens{saved}")
        return 0


@dataclass(frozen=True)
class Source:
    """What to report on: a URL the worker fetches, or a local file's bytes to upload first."""

    url: str | None = None
    name: str = ""
    body: bytes = b""
    content_type: str = "text/plain"


def read_source(source: str) -> Source:
    if source.startswith(REMOTE_SCHEMES):
        return Source(url=source)
    path = Path(source)
    try:
        body = path.read_bytes()
    except OSError as exc:
        problem = exc.strerror or str(exc)
        raise ClientError(f"{source}: {problem} (give a local file or an http(s):// URL)") from exc
    return Source(name=path.name, body=body, content_type=MEDIA_TYPES.get(path.suffix.lower(), "text/plain"))


async def input_data_url(client: AsyncReportClient, source: Source) -> str:
    """A URL as it is; a local file is uploaded first (``POST /api/inputs``)."""
    if source.url is not None:
        return source.url
    uploaded = await client.upload_input(source.body, content_type=source.content_type, name=source.name)
    return uploaded.input_data_url


async def watch(client: AsyncReportClient, job_id: str, *, show_progress: bool) -> SseEvent:
    """Follows the job's events (resuming with Last-Event-ID if the connection drops) to its end."""
    columns = (TextColumn("{task.description:<12}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    console = Console(stderr=True)
    with Progress(*columns, console=console, disable=not show_progress, transient=False) as progress:
        bar = progress.add_task("queued", total=100)
        try:
            async for event in client.events(job_id):
                if event.event == "progress":
                    data = event.json()
                    progress.update(bar, completed=data["progress"], description=str(data["stage"]))
                elif event.event in TERMINAL_EVENTS:
                    if event.event == "completed":
                        progress.update(bar, completed=100, description="done")
                    return event
        except ReportApiError as exc:
            raise ClientError(f"following job {job_id}: {exc.message}") from exc
    raise ClientError(f"the event stream of job {job_id} ended before the job did")


def save(out: Path, content: bytes) -> None:
    partial = out.with_name(out.name + ".part")
    partial.write_bytes(content)
    partial.replace(out)  # never a half-written PDF under the requested name
