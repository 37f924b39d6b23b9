"""Shared fixtures: a real Redis server, settings for tests, the API on a real uvicorn, a worker."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio
import uvicorn

from service.app import create_app
from service.core.settings import Settings
from service.dev.embedded_redis import EmbeddedRedis, free_port
from service.inputs.fetch import InputFetcher, build_input_client
from service.inputs.source import InputSource
from service.providers.base import Provider
from service.report.renderer import PdfRenderer
from service.storage.factory import storage_from
from service.store.batches import BatchStore
from service.store.calls import CallLedger
from service.store.connection import open_redis
from service.store.jobs import JobStore
from service.store.keys import KeyStore
from service.store.limiter import LlmLimiter, limits_from
from service.store.uploads import UploadStore
from service.telemetry.tracing import closing, open_tracing
from service.worker.resources import WorkerDeps, batches_for, provider_for
from service.worker.runtime import WorkerRuntime
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.processes import ServiceProcess

# The fake OTLP receiver's fixtures live with it; named, not imported, so a process importing this
# module (tests/telemetry/tracing_probe.py) loads no protobuf.
pytest_plugins = ["tests.fakes.otlp"]

# Variables a developer's shell may carry that would leak into Settings() inside tests.
_SETTINGS_ENV = [name.upper() for name in Settings.model_fields]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test`) the end-to-end tests (marked ``slow``) run one after another
    on one process, beside the rest on the other: each starts an API, workers and their render pools,
    and two of them at once on two cores starve each other's start-up past the deadlines they keep.
    They are the longest run of the suite, so they go first: the other process fills in beside them."""
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.xdist_group("end-to-end"))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: slow ones first


@pytest.fixture(scope="session", autouse=True)
def isolated_environment() -> Iterator[None]:
    """Tests build their settings explicitly; nothing comes from the developer's shell."""
    saved = {name: os.environ.pop(name) for name in _SETTINGS_ENV if name in os.environ}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the whole session (TEST_REDIS_URL points at another; it gets flushed)."""
    external = os.environ.get("TEST_REDIS_URL")
    if external:
        yield external
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False)
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied before each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


def make_settings(redis_url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "redis_url": redis_url,
        "data_dir": data_dir,
        "allow_private_input_urls": True,
        "retry_base_seconds": 0.1,
        "retry_max_seconds": 1.0,
        "worker_idle_poll_seconds": 0.05,
        # Generous model limits: tests that are about the limiter set their own.
        "llm_requests_per_minute": 100_000,
        "llm_input_tokens_per_minute": 100_000_000,
        "llm_output_tokens_per_minute": 100_000_000,
        "log_format": "json",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(redis_url, tmp_path / "data")


class LiveServer:
    """An ASGI app on a real uvicorn on loopback, inside the test's event loop."""

    def __init__(self, app: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on")  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveServer:
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task


@asynccontextmanager
async def api_with(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client for a fresh API app with these settings, served by uvicorn on loopback."""
    app = create_app(settings, configure_logs=False)
    async with LiveServer(app) as live, httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        yield client


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client for a fresh API app served by uvicorn on loopback."""
    async with api_with(settings) as client:
        yield client


async def create_key(settings: Settings, user_id: str, plan: str) -> str:
    """A real API key, minted through the same store the CLI uses."""
    client = open_redis(settings.redis_url, fail_fast=True)
    try:
        key, _ = await KeyStore(client).create(user_id, plan)
        return key
    finally:
        await client.aclose()


async def command_calls(redis_url: str, command: str) -> int:
    """How often Redis has run ``command`` since it started (INFO commandstats): what a request cost."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get(f"cmdstat_{command.lower()}", {}).get("calls", 0))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def submit(
    client: httpx.AsyncClient,
    key: dict[str, str],
    input_url: str,
    *,
    idempotency_key: str | None = None,
    expect: tuple[int, ...] = (202,),
) -> dict[str, str]:
    """``POST /api/reports`` as a client sends it; the answer's body (``jobId``, ``eventsUrl``...)."""
    body = {"inputDataUrl": input_url}
    if idempotency_key is not None:
        body["idempotencyKey"] = idempotency_key
    response = await client.post("/api/reports", json=body, headers=key)
    assert response.status_code in expect, response.text
    answer: dict[str, str] = response.json()
    return answer


class InputFiles:
    """Inputs served over real HTTP on loopback, as a user's file host would serve them."""

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        self.files: dict[str, tuple[bytes, str]] = {}
        self.hits: dict[str, int] = {}

        async def serve(request: Request) -> Response:
            name = request.path_params["name"]
            self.hits[name] = self.hits.get(name, 0) + 1
            if name not in self.files:
                return Response("not here", status_code=404)
            body, content_type = self.files[name]
            return Response(body, media_type=content_type)

        self.app = Starlette(routes=[Route("/files/{name}", serve)])
        self.base_url = ""

    def add(self, name: str, body: str | bytes, content_type: str = "text/csv") -> str:
        self.files[name] = (body.encode() if isinstance(body, str) else body, content_type)
        return f"{self.base_url}/files/{name}"


@pytest.fixture
async def inputs() -> AsyncIterator[InputFiles]:
    files = InputFiles()
    async with LiveServer(files.app) as live:
        files.base_url = live.url
        yield files


@pytest.fixture(scope="session")
def renderer() -> Iterator[PdfRenderer]:
    """One process pool for the session: starting one costs a few hundred milliseconds."""
    pool = PdfRenderer(processes=1, timeout=Settings(_env_file=None).render_timeout_seconds)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def fake_anthropic_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake_anthropic(fake_anthropic_server: FakeAnthropic) -> FakeAnthropic:
    """The session's fake Anthropic API, with its calls forgotten and its behaviour reset."""
    fake_anthropic_server.reset()
    return fake_anthropic_server


@asynccontextmanager
async def worker_deps(
    settings: Settings, renderer: PdfRenderer, provider: Provider | None = None
) -> AsyncIterator[WorkerDeps]:
    """The worker's real dependencies, with the provider and renderer handed in by the test."""
    async with AsyncExitStack() as stack:
        redis_client = open_redis(settings.redis_url, fail_fast=False)
        stack.push_async_callback(redis_client.aclose)
        http = build_input_client(settings)
        storage = storage_from(settings)
        stack.push_async_callback(storage.aclose)
        stack.push_async_callback(http.aclose)
        if provider is None:
            provider = await stack.enter_async_context(provider_for(settings))
        tracing = open_tracing(settings, process="worker")  # as the worker's own start-up does
        await stack.enter_async_context(closing(tracing))
        yield WorkerDeps(
            settings=settings,
            jobs=JobStore(redis_client),
            inputs=InputSource(InputFetcher(http, settings), UploadStore(redis_client), storage),
            provider=provider,
            renderer=renderer,
            storage=storage,
            calls=CallLedger(redis_client),
            limiter=None if settings.offline else LlmLimiter(redis_client, limits_from(settings)),
            tracing=tracing,
            batches=await stack.enter_async_context(batches_for(settings)),
            batch_store=BatchStore(redis_client),
        )


async def run_burst_worker(settings: Settings, deps: WorkerDeps) -> WorkerRuntime:
    """The worker's real runtime in burst mode: runs every queued job (and its retries), then returns."""
    runtime = WorkerRuntime(deps)
    try:
        await runtime.run(burst=True)
    finally:
        await runtime.close()
    return runtime


@pytest.fixture
def processes() -> Iterator[list[ServiceProcess]]:
    """Service subprocesses a test starts; whatever is still running at its end is killed."""
    started: list[ServiceProcess] = []
    yield started
    for process in started:
        process.stop()
