"""Enqueue benchmark: ``POST /api/reports`` on one uvicorn process against a bare one-SET baseline.

Both servers run the same uvicorn (httptools, uvloop) on loopback against the same embedded Redis,
measured alternately in the same run (A, B, A, B, ...) so the shared machine's noise hits both.

Each round measures both servers in two placements. "Own core": the server under load on a core of
its own, Redis and the load generator on the other(s), as in production, where Redis is another
host and the clients are elsewhere. "Shared": all three float over every core, so each time the
server wakes Redis the scheduler may run Redis on the server's core and stop the server meanwhile
(counted here as the server's involuntary context switches per request); the heavier the work the
service gives Redis, the more of its own core it loses that way, a cost of this 2-core bench machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

import redis

from service.core.settings import Settings
from service.dev.embedded_redis import EmbeddedRedis, free_port
from service.store.connection import open_redis
from service.store.keys import KeyStore

ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps({"inputDataUrl": "https://example.com/data/sales.csv"})


def start_server(factory: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1",
               "--port", str(port), "--no-access-log", "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/", timeout=0.5)  # noqa: S310 (loopback)
            return process, url  # the service serves a page at / now; any answer means it is up
        except OSError as exc:
            if "refused" not in str(exc):
                return process, url
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{factory} did not start")


def placements() -> dict[str, tuple[set[int], set[int]]]:
    """Placement name: (the server's cores, Redis's and the load generator's)."""
    every = set(os.sched_getaffinity(0))
    found = {"shared": (every, every)}
    if len(every) >= 2:
        first = min(every)
        found["own core"] = ({first}, every - {first})
    return found


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of the process onto these cores."""
    for thread in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(thread), cores)


def involuntary_switches(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])


def load(
    url: str, headers: list[str], seconds: float, connections: int, cores: set[int] | None = None
) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.loadgen", url + "/api/reports", "--body", BODY,
               "--seconds", str(seconds), "--connections", str(connections),
               "--unique-header", "Idempotency-Key"]  # fmt: skip
    for header in headers:
        command += ["--header", header]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if cores is not None:
        pin(process.pid, cores)  # before it has opened its connections: it imports uvloop first
    output, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed ({process.returncode})")
    result: dict[str, float] = json.loads(output)
    return result


def measured(
    server: subprocess.Popen[bytes], url: str, headers: list[str], seconds: float, connections: int,
    cores: set[int],
) -> dict[str, float]:  # fmt: skip
    before = involuntary_switches(server.pid)
    result = load(url, headers, seconds, connections, cores)
    result["preempted_per_request"] = (involuntary_switches(server.pid) - before) / max(1, result["requests"])
    return result


def mint_key(redis_url: str) -> str:
    async def mint() -> str:
        client = open_redis(redis_url, fail_fast=True)
        key, _ = await KeyStore(client).create("bench-user", "pro")
        await client.aclose()
        return key

    return asyncio.run(mint())


def cpu_ticks() -> tuple[int, int]:
    """(all CPU time, the part stolen by the hypervisor for other guests), in ticks since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def measure_enqueue(rounds: int = 3, seconds: float = 5.0, connections: int = 32) -> dict[str, Any]:
    total_before, steal_before = cpu_ticks()
    by_placement = _measure_enqueue(rounds, seconds, connections)
    total_after, steal_after = cpu_ticks()
    # A shared host takes CPU from this machine now and then: how much it took during the run.
    steal_share = (steal_after - steal_before) / max(1, total_after - total_before)
    return {"placements": by_placement, "steal_share": steal_share}


def _measure_enqueue(rounds: int, seconds: float, connections: int) -> dict[str, dict[str, Any]]:
    with (
        tempfile.TemporaryDirectory() as data,
        EmbeddedRedis(Path(data) / "redis", appendonly=False) as server,
    ):
        # The service logs at its production default (info, JSON): one access line per request.
        env = {**os.environ, "REDIS_URL": server.url, "DATA_DIR": data, "LOG_FORMAT": "json"}
        # Limits high enough never to refuse, but still checked on every request (as in production).
        env.update({"SUBMISSIONS_PER_MINUTE_PRO": "1000000000", "BUDGET_TOKENS_PRO": str(10**15)})
        Settings(redis_url=server.url)  # fail early on a bad environment
        key = mint_key(server.url)
        ours, ours_url = start_server("service.app:create_app", env)
        base, base_url = start_server("bench.baseline_app:create_baseline_app", env)
        flush = redis.Redis.from_url(server.url)
        redis_pid = int(cast(dict[str, Any], flush.info("server"))["process_id"])
        runs: dict[str, dict[str, list[dict[str, float]]]] = {}
        try:
            load(ours_url, [f"Authorization: Bearer {key}"], 1.0, connections)  # warm-up
            load(base_url, [], 1.0, connections)
            for _ in range(rounds):
                for placement, (server_cores, other_cores) in placements().items():
                    pin(redis_pid, other_cores)
                    pin(base.pid, server_cores)
                    pin(ours.pid, server_cores)
                    by_server = runs.setdefault(placement, {"service": [], "baseline": []})
                    by_server["baseline"].append(
                        measured(base, base_url, [], seconds, connections, other_cores)
                    )
                    authorized = [f"Authorization: Bearer {key}"]
                    by_server["service"].append(
                        measured(ours, ours_url, authorized, seconds, connections, other_cores)
                    )
                    flush.flushdb()
                    key = mint_key(server.url)
        finally:
            ours.terminate()
            base.terminate()
            ours.wait()
            base.wait()
            flush.close()
    return {placement: summarize(found, seconds, connections) for placement, found in runs.items()}


def summarize(runs: dict[str, list[dict[str, float]]], seconds: float, connections: int) -> dict[str, Any]:
    def median(name: str, field: str) -> float:
        return statistics.median(run[field] for run in runs[name])

    ratios = [s["rps"] / b["rps"] for s, b in zip(runs["service"], runs["baseline"], strict=True)]
    return {
        "connections": connections,
        "seconds_per_run": seconds,
        "rounds": len(ratios),
        "service_rps": median("service", "rps"),
        "service_p50_ms": median("service", "p50_ms"),
        "service_p99_ms": median("service", "p99_ms"),
        "service_errors": sum(run["errors"] for run in runs["service"]),
        "baseline_rps": median("baseline", "rps"),
        "baseline_p50_ms": median("baseline", "p50_ms"),
        "baseline_p99_ms": median("baseline", "p99_ms"),
        "baseline_errors": sum(run["errors"] for run in runs["baseline"]),
        "service_preempted_per_request": median("service", "preempted_per_request"),
        "baseline_preempted_per_request": median("baseline", "preempted_per_request"),
        "ratio_per_round": [round(r, 3) for r in ratios],
        "ratio_median": statistics.median(ratios),
    }


if __name__ == "__main__":
    print(json.dumps(measure_enqueue(), indent=2))
