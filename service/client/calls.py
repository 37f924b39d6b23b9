"""Each API call as data: what it sends and how its answer is read, shared by the async and the sync
client (which differ only in how they send). The client's errors:

    ReportClientError              anything the client cannot do
    ├── ReportApiError             the API answered an error (status, the contract's code, message)
    └── ApiUnreachable             no answer: the connection failed or timed out (httpx's error, translated)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from service.core.schemas import Accepted, InputUploaded, JobStatus, Lane, ReportPage, State, Usage

T = TypeVar("T")


class ReportClientError(Exception):
    """Something the client could not do; ``str()`` says what, in one line."""


class ReportApiError(ReportClientError):
    """An error answer: ``status``, ``code`` (``not_found``, ``rate_limited``, ...), ``message``;
    ``issues`` for ``bad_request``, ``retry_after`` (seconds) when the API said when to come back."""

    def __init__(self, request: str, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(f"{request}: {status} {message}")
        self.status, self.code, self.message = status, code, message
        self.issues: list[str] = list(extra.get("issues") or [])
        self.retry_after: int | None = extra.get("retry_after")


class ApiUnreachable(ReportClientError):
    """The API could not be reached, or did not answer in time."""


class Submission(Accepted):
    """The accepted job, and whether this answer replays an earlier submission with the same key."""

    replayed: bool = False


def request_name(response: httpx.Response) -> str:
    return f"{response.request.method} {response.request.url.path}"


def api_error(response: httpx.Response) -> ReportApiError:
    """The contract's error body; a body that is not one (a proxy's page) keeps the status."""
    retry = response.headers.get("retry-after", "")
    retry_after = int(retry) if retry.isascii() and retry.isdigit() else None
    try:
        body = response.json()
        code, message, issues = str(body["error"]), str(body["message"]), body.get("issues")
    except (ValueError, KeyError, TypeError):
        code, message, issues = "http_error", response.reason_phrase or "error", None
    return ReportApiError(request_name(response), response.status_code, code, message,
                          issues=issues, retry_after=retry_after)  # fmt: skip


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response], T]
    expect: tuple[int, ...] = (200,)
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        params = {name: value for name, value in self.params.items() if value is not None}
        return client.build_request(self.method, self.path, params=params, json=self.json,
                                    content=self.content, headers=self.headers)  # fmt: skip

    def answer(self, response: httpx.Response) -> T:
        if response.status_code not in self.expect:
            raise api_error(response)
        try:
            return self.read(response)
        except (ValidationError, ValueError) as exc:
            raise ReportClientError(
                f"{request_name(response)}: an answer the contract does not allow: {exc}"
            ) from exc


def _job(job_id: str, tail: str = "") -> str:
    return f"/api/reports/{quote(job_id, safe='')}{tail}"


def upload(content: bytes, content_type: str, name: str | None) -> Call[InputUploaded]:
    return Call("POST", "/api/inputs", lambda r: InputUploaded.model_validate(r.json()), (201,),
                params={"name": name}, content=content, headers={"Content-Type": content_type})  # fmt: skip


def _submission(response: httpx.Response) -> Submission:
    replayed = response.headers.get("idempotent-replayed") == "true"
    return Submission.model_validate({**response.json(), "replayed": replayed})


def submit(input_data_url: str, idempotency_key: str | None, lane: Lane = "realtime") -> Call[Submission]:
    body = {"inputDataUrl": input_data_url}
    if idempotency_key is not None:
        body["idempotencyKey"] = idempotency_key
    if lane != "realtime":  # the default is left out: the same request as before the lane existed
        body["lane"] = lane
    return Call("POST", "/api/reports", _submission, (200, 202), json=body)


def status(job_id: str) -> Call[JobStatus]:
    return Call("GET", _job(job_id), lambda r: JobStatus.model_validate(r.json()))


def cancel(job_id: str) -> Call[JobStatus]:
    return Call("DELETE", _job(job_id), lambda r: JobStatus.model_validate(r.json()))


def listing(limit: int | None, cursor: str | None, state: State | None) -> Call[ReportPage]:
    params = {"limit": limit, "cursor": cursor, "state": state}
    return Call("GET", "/api/reports", lambda r: ReportPage.model_validate(r.json()), params=params)


def usage() -> Call[Usage]:
    return Call("GET", "/api/usage", lambda r: Usage.model_validate(r.json()))


def pdf(path: str) -> Call[bytes]:
    return Call("GET", path, lambda r: r.content)


def events_path(job_id: str) -> str:
    return _job(job_id, "/events")


def is_ours(client: httpx.Client | httpx.AsyncClient, url: str) -> bool:
    """Whether ``url`` (a path, or a pre-signed object-store link) is on the API's own host: only
    then may the key go with it."""
    joined = client.base_url.join(url)
    return (joined.scheme, joined.host, joined.port) == (
        client.base_url.scheme, client.base_url.host, client.base_url.port,
    )  # fmt: skip
