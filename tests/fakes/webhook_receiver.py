"""A webhook receiver on loopback, as a user's service would run one: it records every request it
gets and answers from a script (a status per request, or a stall), then 200."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import LiveServer

STALL = "stall"  # an answer that never comes (until the receiver stops)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    def verified(self, secret: str) -> Any:
        """The payload, if ``secret`` verifies the signature (raises WebhookVerificationError if not)."""
        return Webhook(secret).verify(self.body, self.headers)


class WebhookReceiver:
    def __init__(self) -> None:
        self.answers: list[int | str] = []
        self.requests: list[Received] = []
        self.url = ""
        self._arrived = asyncio.Condition()
        self._release = asyncio.Event()
        self.app = Starlette(routes=[Route("/hooks/{name}", self._receive, methods=["POST"])])

    def hook(self, name: str = "reports") -> str:
        return f"{self.url}/hooks/{name}"

    async def _receive(self, request: Request) -> Response:
        received = Received(request.url.path, dict(request.headers), await request.body(), time.monotonic())
        self.requests.append(received)
        async with self._arrived:
            self._arrived.notify_all()
        answer = self.answers.pop(0) if self.answers else 200
        if answer == STALL:
            # Bounded: the test's teardown releases it; the sender has long given up by then.
            await asyncio.wait_for(self._release.wait(), timeout=60)
            return Response(status_code=200)
        return Response(b"thanks", status_code=int(answer))

    async def wait_for(self, count: int, timeout: float = 20) -> list[Received]:
        """Waits until ``count`` requests have arrived; all of them."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    def stop_stalling(self) -> None:
        self._release.set()


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    async with LiveServer(receiver.app) as live:
        receiver.url = live.url
        try:
            yield receiver
        finally:
            receiver.stop_stalling()
