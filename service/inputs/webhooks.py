"""Sending one webhook attempt: signed per Standard Webhooks (the one module that imports
``standardwebhooks``), over the SSRF-guarded client of ``service.inputs.fetch``.

A user chooses the URL, exactly as for an input, so the same guard applies to the address each
connection really goes to (ALLOW_PRIVATE_INPUT_URLS included); redirects are never followed (the
specification counts a 3xx as a failure). The answer's body is never read: only its status counts.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from service.core.retry import parse_retry_after
from service.core.settings import Settings
from service.inputs.addresses import AddressPolicy
from service.inputs.fetch import build_guarded_client
from service.inputs.guard import AddressRefused, HostNotFound, ResolutionFailed, Resolver

USER_AGENT = "report-service/0.1 (webhooks)"
_GONE = 410  # the specification: the receiver wants no more of these; stop sending


@dataclass(frozen=True)
class Attempt:
    """How one attempt went. ``problem`` is for logs: a status or a kind of failure, never the URL."""

    delivered: bool
    status: int | None = None  # the receiver's HTTP status, when it answered
    retry_after: float | None = None  # its Retry-After, in seconds, capped
    gone: bool = False  # 410 Gone: give up now
    problem: str = ""


def signed_headers(secret: str, message_id: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for ``body``: the id, this attempt's time, its signature."""
    sent_at = int(time.time() if now is None else now)
    signature = Webhook(secret).sign(message_id, datetime.fromtimestamp(sent_at, tz=UTC), body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(sent_at),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def build_webhook_client(
    settings: Settings,
    *,
    policy: AddressPolicy | None = None,
    resolver: Resolver | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """The guarded client for webhooks; the caller owns it and closes it."""
    limit = settings.webhook_timeout_seconds
    timeout = httpx.Timeout(limit, connect=min(limit, settings.input_connect_timeout_seconds))
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    return build_guarded_client(
        settings, timeout=timeout, headers=headers, policy=policy, resolver=resolver, verify=verify
    )


class WebhookSender:
    """Sends attempts within ``timeout_seconds`` each, whatever the receiver does (a trickle too)."""

    def __init__(self, client: httpx.AsyncClient, *, timeout_seconds: float, max_retry_after: float) -> None:
        self._client = client
        self._timeout = timeout_seconds
        self._max_retry_after = max_retry_after

    async def send(self, url: str, secret: str, message_id: str, body: bytes) -> Attempt:
        headers = signed_headers(secret, message_id, body)
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._client.stream("POST", url, content=body, headers=headers) as response,
            ):
                return self._judge(response)
        except TimeoutError:
            return Attempt(False, problem=f"no answer within {self._timeout:g} s")
        except (AddressRefused, HostNotFound, ResolutionFailed, httpx.ConnectError):
            # One answer for all of them, as for inputs: no map of the private network's names.
            return Attempt(False, problem="could not reach the host")
        except httpx.TimeoutException:
            return Attempt(False, problem="timed out")
        except httpx.TransportError:
            return Attempt(False, problem="the connection failed or was cut")
        except (httpx.HTTPError, httpx.InvalidURL, ValueError):
            return Attempt(False, problem="the URL could not be used")

    def _judge(self, response: httpx.Response) -> Attempt:
        code = response.status_code
        if 200 <= code < 300:
            return Attempt(True, status=code)
        retry_after = parse_retry_after(response.headers.get("retry-after"), cap=self._max_retry_after)
        return Attempt(
            False, status=code, retry_after=retry_after, gone=code == _GONE, problem=f"answered {code}"
        )
