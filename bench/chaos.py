"""Chaos: jobs from several users while faults are injected at random, then the books are checked.

Real processes: an embedded redis-server with AOF, the API, two workers and the fake Anthropic API
(each its own process). While jobs run, every few seconds one fault, drawn at random: Redis frozen
(SIGSTOP, 3 s) or restarted (its AOF kept), a worker killed (SIGKILL) or stopped (SIGTERM) and
restarted, the provider answering 529s or 429s, or failing answers mid-stream (an error event, a
dropped connection); and some users cancel some of their jobs. Then, once every job has ended:
jobs lost, jobs stuck, paid calls repeated after an answer was saved, and usage against the bill.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from service.dev.embedded_redis import EmbeddedRedis, free_port
from service.store import names
from service.store.jobs import call_entries

ROOT = Path(__file__).resolve().parent.parent
USERS, JOBS, CANCEL_SHARE = 5, 120, 0.1
FAULT_EVERY_S = (3.0, 6.0)
INJECT_FOR_S = 75.0
JOB_TIMEOUT_S = 15
CSV = "region,revenue\n" + "".join(f"r{n},{n * 37 % 1000}\n" for n in range(200))
FAULTS = ("redis_freeze", "redis_restart", "worker_kill", "worker_term", "provider_529",
          "provider_429", "provider_stream_error", "provider_disconnect")  # fmt: skip


class Fleet:
    """The processes under test, and the faults that can be done to them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis = EmbeddedRedis(tmp / "redis", appendonly=True)
        self.fake_port, self.api_port = free_port(), free_port()
        self.fake_url, self.api_url = (
            f"http://127.0.0.1:{self.fake_port}",
            f"http://127.0.0.1:{self.api_port}",
        )
        self.workers: list[subprocess.Popen[bytes]] = []
        self.others: list[subprocess.Popen[bytes]] = []

    def env(self) -> dict[str, str]:
        return {**os.environ, "REDIS_URL": self.redis.url, "DATA_DIR": str(self.tmp / "data"),
                "ANTHROPIC_API_KEY": "sk-ant-chaos", "ANTHROPIC_BASE_URL": self.fake_url,
                "JOB_TIMEOUT_SECONDS": str(JOB_TIMEOUT_S), "WORKER_GRACE_SECONDS": "3",
                "WORKER_CONCURRENCY": "5", "MAX_OUTPUT_TOKENS": "1000", "LOG_LEVEL": "warning",
                "RETRY_BASE_SECONDS": "1", "SUBMISSIONS_PER_MINUTE_PRO": "0", "PORT": str(self.api_port),
                "LLM_REQUESTS_PER_MINUTE": "100000", "LLM_INPUT_TOKENS_PER_MINUTE": "100000000",
                "LLM_OUTPUT_TOKENS_PER_MINUTE": "100000000"}  # fmt: skip

    def start(self) -> None:
        self.redis.start()
        fake = [sys.executable, "-m", "tests.fakes.anthropic_cli", "--port", str(self.fake_port),
                "--first-byte-delay", "0.3", "--chunk-delay", "0.03", "--chunk-chars", "40",
                "--reply-tokens", "400"]  # fmt: skip
        api = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app", "--host", "127.0.0.1",
               "--port", str(self.api_port), "--log-level", "warning"]  # fmt: skip
        self.others = [self._spawn(fake), self._spawn(api)]
        self.workers = [self._worker() for _ in range(2)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.api_url}/readyz", timeout=1)  # noqa: S310 (loopback)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the API did not come up")

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        quiet = subprocess.DEVNULL
        return subprocess.Popen(command, cwd=ROOT, env=self.env(), stdout=quiet, stderr=quiet)

    def _worker(self) -> subprocess.Popen[bytes]:
        return self._spawn([sys.executable, "-m", "arq", "worker_settings.WorkerSettings"])

    def stop(self) -> None:
        for process in [*self.workers, *self.others]:
            process.terminate()
        for process in [*self.workers, *self.others]:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.redis.stop()

    async def inject(self, fault: str) -> None:
        if fault == "redis_freeze":
            process = self.redis._process
            assert process is not None
            process.send_signal(signal.SIGSTOP)
            await asyncio.sleep(3)
            process.send_signal(signal.SIGCONT)
        elif fault == "redis_restart":
            await asyncio.to_thread(self.redis.stop)
            await asyncio.sleep(1)
            await asyncio.to_thread(self.redis.start)
        elif fault in ("worker_kill", "worker_term"):
            index = random.randrange(len(self.workers))
            victim = self.workers[index]
            victim.send_signal(signal.SIGKILL if fault == "worker_kill" else signal.SIGTERM)
            await asyncio.to_thread(victim.wait, 30)
            self.workers[index] = self._worker()
        elif fault.startswith("provider_"):
            path, spec = self._provider_fault(fault)
            async with httpx.AsyncClient(base_url=self.fake_url) as http:
                await http.post(path, json=spec)

    @staticmethod
    def _provider_fault(fault: str) -> tuple[str, dict[str, Any]]:
        if fault == "provider_529":
            return "/_fake/storm", {"count": 5, "status": 529, "retry_after": "1"}
        if fault == "provider_429":
            return "/_fake/storm", {"count": 5, "status": 429, "retry_after": "2"}
        kind = "disconnect" if fault == "provider_disconnect" else "stream_error"
        return "/_fake/fail", {"kind": kind, "count": 3}


def create_keys(fleet: Fleet) -> list[str]:
    keys = []
    for n in range(USERS):
        command = [sys.executable, "-m", "service", "keys", "create", "--user", f"chaos-{n}", "--plan", "pro"]
        done = subprocess.run(command, cwd=ROOT, env=fleet.env(), capture_output=True, text=True, check=True)
        keys.append(done.stdout.strip().splitlines()[-1])
    return keys


async def patiently(http: httpx.AsyncClient, method: str, path: str, **kw: Any) -> httpx.Response:
    """A client that retries 503s and dropped connections (Redis is being restarted under it)."""
    for _ in range(120):
        try:
            response = await http.request(method, path, **kw)
            if response.status_code != 503:
                return response
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{method} {path} kept failing")


async def run_users(fleet: Fleet, keys: list[str]) -> list[tuple[str, str]]:
    """Submits every job (with a replayable idempotency key), cancelling about CANCEL_SHARE of them."""
    jobs: list[tuple[str, str]] = []
    async with httpx.AsyncClient(base_url=fleet.api_url, timeout=10) as http:
        for number in range(JOBS):
            key = keys[number % USERS]
            headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": f"chaos-job-{number:04d}"}
            body = {"inputDataUrl": await upload(http, key)}
            answer = await patiently(http, "POST", "/api/reports", json=body, headers=headers)
            assert answer.status_code in (200, 202), answer.text
            jobs.append((key, answer.json()["jobId"]))
            if random.random() < CANCEL_SHARE:
                await asyncio.sleep(random.uniform(0, 2))
                cancel = f"/api/reports/{jobs[-1][1]}"
                await patiently(http, "DELETE", cancel, headers={"Authorization": f"Bearer {key}"})
            await asyncio.sleep(random.uniform(0.05, 0.4))
    return jobs


async def upload(http: httpx.AsyncClient, key: str) -> str:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "text/csv"}
    answer = await patiently(http, "POST", "/api/inputs?name=sales.csv", content=CSV, headers=headers)
    return str(answer.json()["inputDataUrl"])


async def inject_faults(fleet: Fleet, until: float) -> Counter[str]:
    """Every kind of fault in turn, in a shuffled order, then again: each kind is injected."""
    injected: Counter[str] = Counter()
    order: list[str] = []
    while time.monotonic() < until:
        await asyncio.sleep(random.uniform(*FAULT_EVERY_S))
        if not order:
            order = random.sample(FAULTS, len(FAULTS))
        fault = order.pop()
        await fleet.inject(fault)
        injected[fault] += 1
    return injected


async def wait_for_the_end(fleet: Fleet, jobs: list[tuple[str, str]], limit_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient(base_url=fleet.api_url, timeout=10) as http:
        while True:
            statuses = []
            for key, job_id in jobs:
                headers = {"Authorization": f"Bearer {key}"}
                answer = await patiently(http, "GET", f"/api/reports/{job_id}", headers=headers)
                statuses.append(
                    answer.json() if answer.status_code == 200 else {"jobId": job_id, "state": "lost"}
                )
            if all(s["state"] in ("completed", "failed", "cancelled", "lost") for s in statuses):
                return statuses
            if time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(2)


async def books(fleet: Fleet, jobs: list[tuple[str, str]], keys: list[str]) -> dict[str, Any]:
    """Usage against the provider's bill, and paid calls made after an answer was already saved."""
    redis = Redis.from_url(fleet.redis.url, decode_responses=True)
    repeated = 0
    calls = Counter[str]()
    for _, job_id in jobs:
        record: dict[str, str] = await redis.hgetall(names.job(job_id))
        entries = list(call_entries(record).values())  # the job's call ledger, long or short form
        calls.update(e["outcome"] for e in entries)
        # A paid answer is saved before anything else: a second answered call would be a repeat.
        repeated += max(0, sum(1 for e in entries if e["outcome"] == "answered") - 1)
    await redis.aclose()
    used = {"input": 0, "output": 0, "cost": 0.0}
    async with httpx.AsyncClient(base_url=fleet.api_url, timeout=10) as http:
        for key in keys:
            headers = {"Authorization": f"Bearer {key}"}
            usage = (await patiently(http, "GET", "/api/usage", headers=headers)).json()
            used["input"] += usage["inputTokens"]
            used["output"] += usage["outputTokens"]
        stats = (await http.get(f"{fleet.fake_url}/_fake/stats")).json()
    return {"calls": dict(calls), "repeated": repeated, "used": used, "billed": stats}


async def chaos() -> dict[str, Any]:
    random.seed(20261201)
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(Path(tmp))
        fleet.start()
        try:
            keys = await asyncio.to_thread(create_keys, fleet)
            started = time.monotonic()
            injecting = asyncio.create_task(inject_faults(fleet, started + INJECT_FOR_S))
            jobs = await run_users(fleet, keys)
            injected = await injecting
            faults_end = time.monotonic()
            statuses = await wait_for_the_end(fleet, jobs, limit_s=JOB_TIMEOUT_S + 120)
            ended = time.monotonic()
            ledger = await books(fleet, jobs, keys)
        finally:
            fleet.stop()
    states = Counter(s["state"] for s in statuses)
    codes = Counter(s["error"]["code"] for s in statuses if s["state"] == "failed" and s.get("error"))
    return {"jobs": len(jobs), "states": dict(states), "codes": dict(codes), "faults": dict(injected),
            "settled_after_faults_s": round(ended - faults_end, 1), **ledger}  # fmt: skip


def chaos_section(machine: str) -> str:
    r = asyncio.run(chaos())
    states, billed, used = r["states"], r["billed"], r["used"]
    lost, stuck = states.get("lost", 0), sum(v for k, v in states.items() if k in ("queued", "active"))
    faults = ", ".join(f"{name} {count}" for name, count in sorted(r["faults"].items()))
    codes = ", ".join(f"{code} {count}" for code, count in sorted(r["codes"].items())) or "none"
    calls = ", ".join(f"{outcome} {count}" for outcome, count in sorted(r["calls"].items()))
    diff_in, diff_out = used["input"] - billed["billed_input"], used["output"] - billed["billed_output"]
    return f"""## Chaos: {r["jobs"]} jobs from {USERS} users under random faults

Measured {machine}.
An embedded redis-server with AOF, the API, two workers (5 jobs each) and the fake Anthropic, each its
own process. For {INJECT_FOR_S:g} s, one fault every {FAULT_EVERY_S[0]:g}-{FAULT_EVERY_S[1]:g} s, drawn at
random; users upload an input and submit a job every 0.05-0.4 s, cancelling about {CANCEL_SHARE:.0%} of
them. `JOB_TIMEOUT_SECONDS` {JOB_TIMEOUT_S}. Command: `python -m bench chaos`.

Faults injected: {faults}.

| measure | value | goal |
|---|---|---|
| jobs | {r["jobs"]} | |
| completed / failed / cancelled | {states.get("completed", 0)} / {states.get("failed", 0)} / {states.get("cancelled", 0)} | |
| failure codes | {codes} | every failure has one |
| jobs lost (no record) | {lost} | 0 |
| jobs stuck (queued or active at the end) | {stuck} | 0 |
| every job ended within, after the last fault | {r["settled_after_faults_s"]} s | <= {JOB_TIMEOUT_S + 60} s |
| answered calls beyond the first per job (a paid answer billed again) | {r["repeated"]} | 0 |
| provider calls, by how they ended (ledger) | {calls} | |
| usage minus billed, input tokens | {diff_in:+,} (of {billed["billed_input"]:,} billed) | 0 |
| usage minus billed, output tokens | {diff_out:+,} (of {billed["billed_output"]:,} billed) | 0 |

Input is counted from the first event of every answer, so it matches the bill exactly unless a
worker died between the answer's start and its first record. Output is counted as far as it was
seen: a worker killed mid-answer cannot count what streamed after its last record (at most a
quarter of a second of streaming), and a cut stream can lose the chunk in flight.
"""


if __name__ == "__main__":
    print(json.dumps(asyncio.run(chaos()), indent=2))
