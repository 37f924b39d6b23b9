"""The API's shared resources, opened once in the lifespan and handed to every handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.requests import Request

from service.api.signing import SigningSecrets
from service.core.settings import Settings
from service.storage.base import Storage
from service.storage.factory import storage_from
from service.store.connection import API_OPERATION_DEADLINE, Health, RedisClient, open_redis
from service.store.jobs import JobStore
from service.store.keys import KeyStore
from service.store.listing import JobListing
from service.store.metrics import MetricsStore
from service.store.upload_quota import UploadQuotaStore
from service.store.uploads import UploadStore
from service.store.webhook_secrets import WebhookSecrets
from service.store.webhooks import WebhookDeliveries
from service.telemetry.metrics import MetricsBuffer


@dataclass
class ApiServices:
    settings: Settings
    redis: RedisClient  # the pool the stores share; handed to the events fan-out
    health: Health
    keys: KeyStore
    jobs: JobStore
    listing: JobListing  # the caller's own jobs, newest first
    uploads: UploadStore
    upload_quota: UploadQuotaStore
    storage: Storage
    metrics_store: MetricsStore
    signing: SigningSecrets  # the events tokens' secret
    webhooks: WebhookDeliveries  # schedules a cancelled job's webhook (the fleet sends it)
    webhook_secrets: WebhookSecrets  # each user's webhook signing secret
    metrics: MetricsBuffer = field(default_factory=MetricsBuffer)


@asynccontextmanager
async def open_api_services(settings: Settings) -> AsyncIterator[ApiServices]:
    redis = open_redis(settings.redis_url, fail_fast=True, batching=True)
    # A scrape reads the whole fleet's figures: twice the deadline of one request's operations.
    metrics_store = MetricsStore(redis, deadline=API_OPERATION_DEADLINE * 2)
    metrics = MetricsBuffer()
    metrics.start(metrics_store, every=settings.metrics_flush_seconds)
    storage = storage_from(settings)
    try:
        yield ApiServices(
            settings=settings,
            redis=redis,
            health=Health(redis, deadline=API_OPERATION_DEADLINE),
            keys=KeyStore(
                redis,
                cache_seconds=settings.auth_cache_seconds,
                unknown_seconds=settings.auth_unknown_cache_seconds,
                deadline=API_OPERATION_DEADLINE,
            ),
            jobs=JobStore(redis, deadline=API_OPERATION_DEADLINE),
            listing=JobListing(redis, deadline=API_OPERATION_DEADLINE),
            uploads=UploadStore(redis, deadline=API_OPERATION_DEADLINE),
            upload_quota=UploadQuotaStore(redis, deadline=API_OPERATION_DEADLINE),
            storage=storage,
            metrics_store=metrics_store,
            signing=SigningSecrets(settings, redis),
            webhooks=WebhookDeliveries(redis, deadline=API_OPERATION_DEADLINE),
            webhook_secrets=WebhookSecrets(redis, deadline=API_OPERATION_DEADLINE),
            metrics=metrics,
        )
    finally:
        await storage.aclose()
        await metrics.stop(metrics_store)
        await redis.aclose()


def services(request: Request) -> ApiServices:
    # The lifespan's state as the request's scope carries it (``request.state`` wraps the same dict
    # in a new object on every request).
    found: ApiServices = request.scope["state"]["services"]
    return found
