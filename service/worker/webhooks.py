"""Completion webhooks in the worker: what delivering needs (``Webhooks``, opened once per process).
A job's delivery is scheduled by its end itself (``service.store.webhooks``)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from service.core.settings import Settings
from service.inputs.addresses import AddressPolicy
from service.inputs.guard import Resolver
from service.inputs.webhooks import WebhookSender, build_webhook_client
from service.store.connection import RedisClient
from service.store.webhook_secrets import WebhookSecrets
from service.store.webhooks import WebhookDeliveries


@dataclass
class Webhooks:
    settings: Settings
    deliveries: WebhookDeliveries
    secrets: WebhookSecrets
    sender: WebhookSender
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # this worker's loop: look now


@asynccontextmanager
async def open_webhooks(
    settings: Settings,
    redis: RedisClient,
    *,
    policy: AddressPolicy | None = None,
    resolver: Resolver | None = None,
    verify: ssl.SSLContext | bool = True,
) -> AsyncIterator[Webhooks]:
    """The stores and the guarded sender; ``policy``/``resolver``/``verify`` are for tests."""
    client = build_webhook_client(settings, policy=policy, resolver=resolver, verify=verify)
    sender = WebhookSender(
        client,
        timeout_seconds=settings.webhook_timeout_seconds,
        max_retry_after=settings.webhook_retry_max_seconds,
    )
    try:
        yield Webhooks(settings, WebhookDeliveries(redis), WebhookSecrets(redis), sender)
    finally:
        await client.aclose()
