"""``python -m service submit``: send a file or URL for a report, follow its progress, save the PDF."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from service.client.sse import TERMINAL_EVENTS, SseEvent, StreamRefused, follow

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
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"error: talking to {api}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def submit_report(api: str, key: str, source: Source, *, follow_it: bool, out: Path | None) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as client:
        job = await create_job(client, await input_data_url(client, source))
        print(f"job {job['jobId']} {job['state']}", file=sys.stderr)
        if not follow_it and out is None:
            print(job["jobId"])
            return 0
        ending = await watch(client, job["jobId"], show_progress=follow_it)
        data = ending.json()
        if ending.event != "completed":
            reason = data.get("reason", "no reason given") if ending.event == "failed" else "cancelled"
            print(f"error: job {job['jobId']} {ending.event}: {reason}", file=sys.stderr)
            return 1
        if out is not None:
            await download(client, str(data["pdfUrl"]), out)
        saved = f", saved to {out}" if out is not None else ""
        print(f"completed: {data['model']}, {data['tokensUsed']} tokens{saved}")
        return 0


def expect(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """The JSON body of an expected answer; the contract's error message otherwise."""
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {}
    if response.status_code not in statuses:
        message = body.get("message") or response.reason_phrase
        request = f"{response.request.method} {response.request.url.path}"
        raise ClientError(f"{request}: {response.status_code} {message}")
    return body


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


async def input_data_url(client: httpx.AsyncClient, source: Source) -> str:
    """A URL as it is; a local file is uploaded first (``POST /api/inputs``)."""
    if source.url is not None:
        return source.url
    response = await client.post(
        "/api/inputs", params={"name": source.name}, content=source.body,
        headers={"Content-Type": source.content_type},
    )  # fmt: skip
    return str(expect(response, 201)["inputDataUrl"])


async def create_job(client: httpx.AsyncClient, input_url: str) -> dict[str, Any]:
    idempotency_key = f"cli-{uuid.uuid4().hex}"
    response = await client.post(
        "/api/reports", json={"inputDataUrl": input_url}, headers={"Idempotency-Key": idempotency_key}
    )
    return expect(response, 200, 202)


async def watch(client: httpx.AsyncClient, job_id: str, *, show_progress: bool) -> SseEvent:
    """Follows the job's events (resuming with Last-Event-ID if the connection drops) to its end."""
    columns = (TextColumn("{task.description:<12}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    console = Console(stderr=True)
    with Progress(*columns, console=console, disable=not show_progress, transient=False) as progress:
        bar = progress.add_task("queued", total=100)
        try:
            async for event in follow(client, f"/api/reports/{job_id}/events", {}):
                if event.event == "progress":
                    data = event.json()
                    progress.update(bar, completed=data["progress"], description=str(data["stage"]))
                elif event.event in TERMINAL_EVENTS:
                    if event.event == "completed":
                        progress.update(bar, completed=100, description="done")
                    return event
        except StreamRefused as exc:
            raise ClientError(f"following job {job_id}: {exc.message}") from exc
    raise ClientError(f"the event stream of job {job_id} ended before the job did")


async def download(client: httpx.AsyncClient, pdf_url: str, out: Path) -> None:
    url = client.base_url.join(pdf_url)
    if url.host != client.base_url.host:
        # A pre-signed object-store link: it needs no key, and must never be sent one.
        async with httpx.AsyncClient(timeout=60) as plain:
            response = await plain.get(url)
    else:
        response = await client.get(url)
    if response.status_code != 200:
        expect(response, 200)
    await asyncio.to_thread(save, out, response.content)


def save(out: Path, content: bytes) -> None:
    partial = out.with_name(out.name + ".part")
    partial.write_bytes(content)
    partial.replace(out)  # never a half-written PDF under the requested name
