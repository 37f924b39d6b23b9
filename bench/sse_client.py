"""SSE load client: thousands of event-stream subscribers on raw asyncio sockets, in their own process.

Raw sockets (with uvloop), not an HTTP client library: 5,000 open streams must cost this process
little CPU on a 2-core machine it shares with the server. Each event's ``stage`` carries the time it
was published (``t<unix ns>``), so the delay from publish to receipt is measured per event.

``python -m bench.sse_client URL PATHS_JSON``: prints one JSON line when every subscriber has its
snapshot, then another with the delivery figures once a line (or EOF) arrives on stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import uvloop

STAGE_TIME = re.compile(rb'"stage":"t(\d+)"')
BATCH = 250  # connections opened at once: well inside the listen backlog


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


class Subscriber:
    def __init__(self, host: str, port: int, path: str, latencies_ms: list[float]) -> None:
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
        self.host, self.port = host, port
        self.latencies_ms = latencies_ms
        self.snapshot = asyncio.get_running_loop().create_future()
        self.writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        started = time.perf_counter()
        reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.request.encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
        pending = b""
        while chunk := await reader.read(65536):
            received_ns = time.time_ns()
            *events, pending = (pending + chunk).split(b"\r\n\r\n")
            for event in events:
                if not self.snapshot.done() and b"event:" in event:
                    self.snapshot.set_result((time.perf_counter() - started) * 1000)
                    continue
                found = STAGE_TIME.search(event)
                if found:
                    self.latencies_ms.append((received_ns - int(found.group(1))) / 1e6)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Crowd:
    subscribers: list[Subscriber] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    snapshot_ms: list[float] = field(default_factory=list)  # connect to snapshot received


async def connect_all(url: str, paths: list[str], latencies_ms: list[float]) -> Crowd:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    crowd = Crowd()
    for start in range(0, len(paths), BATCH):
        batch = [Subscriber(host, port, path, latencies_ms) for path in paths[start : start + BATCH]]
        crowd.tasks += [asyncio.create_task(subscriber.run()) for subscriber in batch]
        crowd.snapshot_ms += await asyncio.gather(*(subscriber.snapshot for subscriber in batch))
        crowd.subscribers += batch
    return crowd


async def main(url: str, paths: list[str]) -> None:
    latencies_ms: list[float] = []
    crowd = await connect_all(url, paths, latencies_ms)
    subscribers, tasks = crowd.subscribers, crowd.tasks
    ready = {
        "subscribers": len(subscribers),
        "snapshot_p50_ms": percentile(crowd.snapshot_ms, 0.5),
        "snapshot_p99_ms": percentile(crowd.snapshot_ms, 0.99),
    }
    print(json.dumps(ready), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the orchestrator says: publishing is over
    failed = sum(1 for task in tasks if task.done() and task.exception() is not None)
    for subscriber in subscribers:
        subscriber.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    figures = {
        "events": len(latencies_ms),
        "p50_ms": percentile(latencies_ms, 0.5),
        "p99_ms": percentile(latencies_ms, 0.99),
        "max_ms": max(latencies_ms, default=float("nan")),
        "failed_streams": failed,
    }
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("paths", help="a JSON file: the list of event paths, one per subscriber")
    args = parser.parse_args()
    with open(args.paths) as listing:
        uvloop.run(main(args.url, json.load(listing)))
