"""``python -m bench [name ...]`` (``make bench``): run benchmarks and update bench/RESULTS.md.

Each benchmark owns one section of RESULTS.md, between ``<!-- bench:NAME -->`` markers; running a
subset rewrites only those sections, so figures from other runs stay until they are measured again.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path

from bench.chaos import chaos_section
from bench.cost_report import cost_section
from bench.enqueue import measure_enqueue
from bench.fleet import fleet_section
from bench.redis_cost import redis_cost_section
from bench.render import measure_render
from bench.retention import measure_retention
from bench.shared_account import shared_account_section
from bench.sse import sse_section
from bench.streams import streams_section
from bench.tracing import tracing_section
from bench.worker_efficiency import scheduling_section

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = """# Benchmark results

Run with `make bench` (all) or `.venv/bin/python -m bench NAME ...`. Each section below says when
and where it was measured. This machine is shared and noisy: comparisons are ratios against a
baseline measured in the same run, never absolute figures from different runs.
"""


def machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = found.group(1).strip() if found else cpu
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{now}; {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; {platform.system()}"


def enqueue_section() -> str:
    measured = measure_enqueue(rounds=11, seconds=3.0)
    by_placement = measured["placements"]
    r = next(iter(by_placement.values()))  # what the placements share: connections, run length
    rows = []
    for placement, found in by_placement.items():
        rows.append(
            f"| {placement} | baseline: parse JSON, one `SET` | {found['baseline_rps']:,.0f} | "
            f"{found['baseline_p50_ms']:.1f} | {found['baseline_p99_ms']:.1f} | "
            f"{found['baseline_preempted_per_request']:.2f} | {found['baseline_errors']} |"
        )
        rows.append(
            f"| {placement} | service: auth, validate, idempotent enqueue | {found['service_rps']:,.0f} | "
            f"{found['service_p50_ms']:.1f} | {found['service_p99_ms']:.1f} | "
            f"{found['service_preempted_per_request']:.2f} | {found['service_errors']} |"
        )
    table = "\n".join(rows)
    ratios = "\n".join(
        f"- {placement}: **{found['ratio_median']:.2f}** (median; per round: "
        + ", ".join(f"{ratio:.2f}" for ratio in found["ratio_per_round"])
        + f"); target ≥ 0.80: {'meets' if found['ratio_median'] >= 0.8 else 'misses'} it; "
        + f"p99 < 20 ms: {'meets' if found['service_p99_ms'] < 20 else 'misses'} it"
        for placement, found in by_placement.items()
    )
    return f"""## Enqueue: `POST /api/reports` vs a bare one-SET Starlette endpoint

Measured {machine()}.
One uvicorn process each (httptools, uvloop), same embedded Redis, {r["connections"]} keep-alive
connections from `bench/loadgen.py` in its own process, {r["seconds_per_run"]:g} s per run, the two
servers alternating for {r["rounds"]} rounds in each placement. Every request carries a fresh
`Idempotency-Key`. Per request the service authenticates the key (cached), validates the body and
the URL, runs one Lua script (the user's submission rate and token budget, the record, the queue
entry, the lane's count, the marker that wakes a worker), signs the events token, logs one JSON
access line and counts the request in its metrics, as in production; its Redis client writes the
scripts of the requests that arrive together in one write on one shared connection
(`service/store/batching.py`).
Command: `python -m bench enqueue`.

Two placements, both servers alike in each. *Own core*: the server under load on a core of its own,
Redis and the load generator on the other, as in production, where Redis is another host and the
clients are elsewhere. *Shared*: all three float over both cores; each time the server wakes Redis
the scheduler may run Redis on the server's core and stop the server meanwhile ("preempted": the
server's involuntary context switches per request), and the more work a request gives Redis, the
more of its own core the server loses that way. A ratio above 1 is no error: the baseline's plain
redis-py client pays a pooled connection's round trip per request, through redis-py's Python layers;
the service's client writes a turn's commands at once and reads their replies with one reader.

| placement | server | requests/s (median) | p50 ms | p99 ms | preempted | errors |
|---|---|---|---|---|---|---|
{table}

Throughput ratio service/baseline, and the service's p99 at {r["connections"]} connections:
{ratios}

The host took {measured["steal_share"]:.0%} of the machine's CPU time for other guests during the run
(steal time, `/proc/stat`). Per-round ratios swing widely on this shared machine; the medians are what
to compare, and only against a baseline measured in the same run.
"""


def render_section() -> str:
    r = measure_render(samples=30)
    verdict = "meets" if r["median_ms"] < 300 else "misses"
    return f"""## PDF render of a 4,000-token report (borb)

Measured {machine()}.
`render_pdf` on a generated report of {r["characters"]:,.0f} characters (headings, bullets, numbered
lists, a table), {r["pages"]:.0f} pages; 30 renders after a warm-up. Command: `python -m bench render`.

| median ms | p95 ms | max ms |
|---|---|---|
| {r["median_ms"]:.1f} | {r["p95_ms"]:.1f} | {r["max_ms"]:.1f} |

Target < 300 ms: {verdict} it.
"""


def retention_section() -> str:
    r = measure_retention()
    rows = "\n".join(f"| {p['finished']:,} | {p['keys']:,} | {p['bytes'] / 1e6:.1f} |" for p in r["points"])
    return f"""## Redis memory of finished jobs (retention cap {r["cap"]:,} per user, {r["users"]} users)

Measured {machine()}.
{r["total"]:,} jobs driven through the store's real steps (submit, start, the model call's
reservation, 21 streamed records with the answer's text, the saved answer, storing, complete) against
an embedded Redis 6.2, {r["users"]} users with the completed-job cap at {r["cap"]:,} each (the fleet keeps
{r["cap"] * r["users"]:,}); memory is `used_memory` above the
empty server, read once the finished jobs' event streams have expired (a minute after each ending,
brought forward here). Command: `python -m bench retention`.

| jobs finished | keys | memory MB |
|---|---|---|
{rows}

About **{r["bytes_per_job"]:,.0f} bytes per retained job** (its record, rewritten at the end in its
small listpack form, and its entries in the retention and listing indexes). Past the cap, each job evicted
leaves a tombstone of about {r["tombstone_bytes"]:,.0f} bytes, so that a replayed POST stays a replay,
until its retention time ends (a day here); the retained jobs' memory stops growing at the cap.
"""


SECTIONS: dict[str, Callable[[], str]] = {
    "enqueue": enqueue_section,
    "render": render_section,
    "retention": retention_section,
    "sse": lambda: sse_section(machine()),
    "scheduling": lambda: scheduling_section(machine()),
    "streams": lambda: streams_section(machine()),
    "fleet": lambda: fleet_section(machine()),
    "chaos": lambda: chaos_section(machine()),
    "tracing": lambda: tracing_section(machine()),
    "redis_cost": lambda: redis_cost_section(machine()),
    "shared_account": lambda: shared_account_section(machine()),
    "cost": lambda: cost_section(machine()),
}


def update(text: str, name: str, body: str) -> str:
    block = f"<!-- bench:{name} -->\n{body.strip()}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return f"{text.rstrip()}\n\n{block}\n"


def main(names: list[str]) -> int:
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr
        )
        return 2
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    for name in names or list(SECTIONS):
        print(f"running {name} ...", flush=True)
        body = SECTIONS[name]()
        print(body)
        text = update(text, name, body)
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
