"""What a worker process opens once and every job uses: stores, the input fetcher, the provider,
the render pool, storage, the shared limiter and the metrics buffer (``WorkerDeps``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from service.core.settings import Settings
from service.inputs.fetch import InputFetcher, build_input_client
from service.inputs.source import InputSource
from service.providers.anthropic.batches import AnthropicBatches
from service.providers.anthropic.provider import AnthropicProvider, build_anthropic_client
from service.providers.base import Provider
from service.providers.batch import BatchApi
from service.providers.offline.provider import OfflineProvider
from service.providers.prompt import PromptCachePolicy
from service.report.renderer import PdfRenderer
from service.storage.base import Storage
from service.storage.factory import storage_from
from service.store.batches import BatchStore
from service.store.calls import CallLedger
from service.store.connection import open_redis
from service.store.jobs import JobStore
from service.store.limiter import LlmLimiter, limits_from
from service.store.metrics import MetricsStore
from service.store.uploads import UploadStore
from service.telemetry.metrics import MetricsBuffer
from service.telemetry.tracing import Tracing, closing, open_tracing
from service.worker.running import RunningJobs
from service.worker.webhooks import Webhooks, open_webhooks


@dataclass
class WorkerDeps:
    settings: Settings
    jobs: JobStore
    inputs: InputSource
    provider: Provider
    renderer: PdfRenderer
    storage: Storage
    calls: CallLedger
    limiter: LlmLimiter | None = None  # None: the offline provider, which costs nothing
    metrics: MetricsBuffer = field(default_factory=MetricsBuffer)
    running: RunningJobs = field(default_factory=RunningJobs)  # this process's jobs
    tracing: Tracing | None = None  # None: tracing is off
    webhooks: Webhooks | None = None  # None: no completion webhooks from this process (some tests)
    # The batch lane: the provider's batch API (None: the offline provider, which answers batch jobs
    # in the realtime path) and its state in Redis.
    batches: BatchApi | None = None
    batch_store: BatchStore | None = None


def provider_name(settings: Settings) -> str:
    """Who writes the reports, as the model call's span names it (``gen_ai.provider.name``)."""
    return "offline" if settings.offline else "anthropic"


@asynccontextmanager
async def provider_for(settings: Settings) -> AsyncIterator[Provider]:
    if settings.offline:
        yield OfflineProvider(summary_timeout=settings.summary_timeout_seconds)
        return
    client = build_anthropic_client(settings)
    try:
        yield AnthropicProvider(client, prompt_cache=PromptCachePolicy.from_settings(settings))
    finally:
        await client.close()


@asynccontextmanager
async def batches_for(settings: Settings) -> AsyncIterator[BatchApi | None]:
    """The provider's batch API, or None for the offline provider."""
    if settings.offline:
        yield None
        return
    client = build_anthropic_client(settings)
    try:
        yield AnthropicBatches(client, prompt_cache=PromptCachePolicy.from_settings(settings))
    finally:
        await client.close()


@asynccontextmanager
async def open_worker_deps(settings: Settings) -> AsyncIterator[WorkerDeps]:
    """Every client a job needs, opened once per worker process and closed on shutdown."""
    async with AsyncExitStack() as stack:
        redis = open_redis(settings.redis_url, fail_fast=False)
        stack.push_async_callback(redis.aclose)
        input_client = build_input_client(settings)
        stack.push_async_callback(input_client.aclose)
        renderer = PdfRenderer(processes=1, timeout=settings.render_timeout_seconds)
        storage = storage_from(settings)
        stack.push_async_callback(storage.aclose)
        stack.callback(renderer.close)
        metrics = MetricsBuffer()
        metrics_store = MetricsStore(redis)
        metrics.start(metrics_store, every=settings.metrics_flush_seconds)
        stack.push_async_callback(metrics.stop, metrics_store)
        tracing = open_tracing(settings, process="worker")
        await stack.enter_async_context(closing(tracing))
        yield WorkerDeps(
            settings=settings,
            jobs=JobStore(redis),
            inputs=InputSource(InputFetcher(input_client, settings), UploadStore(redis), storage),
            provider=await stack.enter_async_context(provider_for(settings)),
            renderer=renderer,
            storage=storage,
            calls=CallLedger(redis),
            limiter=None if settings.offline else LlmLimiter(redis, limits_from(settings)),
            metrics=metrics,
            tracing=tracing,
            webhooks=await stack.enter_async_context(open_webhooks(settings, redis)),
            batches=await stack.enter_async_context(batches_for(settings)),
            batch_store=BatchStore(redis),
        )
