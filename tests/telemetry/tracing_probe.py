"""Run as ``python -m tests.telemetry.tracing_probe`` in a fresh interpreter: one report through the
API and a worker, both in this process as their entry points build them, then what OpenTelemetry
left in the process, printed as JSON. The settings come from the environment, as in production.

What it reports: which OpenTelemetry SDK, exporter and protobuf modules were loaded, how many SDK
tracer providers exist, which provider the OpenTelemetry API has globally, the job's final state and
record, and the headers the model provider received (read back by the test from the fake).
"""

from __future__ import annotations

import asyncio
import gc
import sys

import orjson
import redis.asyncio as aioredis

from service.core.settings import Settings
from service.report.renderer import PdfRenderer
from service.store import names
from tests.conftest import InputFiles, LiveServer, api_with, bearer, create_key, run_burst_worker, worker_deps

WATCHED = ("opentelemetry.sdk", "opentelemetry.exporter", "google.protobuf", "requests")
CALLER_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def opentelemetry_state() -> dict[str, object]:
    loaded = sorted({prefix for prefix in WATCHED for name in sys.modules if name.startswith(prefix)})
    providers = 0
    if "opentelemetry.sdk.trace" in sys.modules:
        sdk_provider = sys.modules["opentelemetry.sdk.trace"].TracerProvider
        gc.unfreeze()  # the worker froze its start-up objects, which hides them from get_objects
        providers = sum(isinstance(thing, sdk_provider) for thing in gc.get_objects())
    global_provider = None
    if "opentelemetry.trace" in sys.modules:  # the Anthropic SDK imports the API, never the SDK
        global_provider = type(sys.modules["opentelemetry.trace"].get_tracer_provider()).__name__
    return {"loaded": loaded, "tracer_providers": providers, "global_provider": global_provider}


async def one_report(settings: Settings) -> dict[str, object]:
    key = bearer(await create_key(settings, "probe", "pro"))
    files = InputFiles()
    renderer = PdfRenderer(processes=1, timeout=settings.render_timeout_seconds)
    try:
        async with LiveServer(files.app) as host, api_with(settings) as api:
            files.base_url = host.url
            body = {"inputDataUrl": files.add("p.csv", "a,b\n1,2\n")}
            accepted = await api.post(
                "/api/reports", json=body, headers={**key, "traceparent": CALLER_TRACEPARENT}
            )
            async with worker_deps(settings, renderer) as deps:
                await run_burst_worker(settings, deps)
                state = opentelemetry_state()  # while both are still up
    finally:
        renderer.close()
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        record = await client.hgetall(names.job(accepted.json()["jobId"]))
    finally:
        await client.aclose()
    return {**state, "state": record.get("state"), "record_fields": sorted(record)}


if __name__ == "__main__":
    print(
        orjson.dumps(asyncio.run(one_report(Settings(_env_file=None))), option=orjson.OPT_SORT_KEYS).decode()
    )
