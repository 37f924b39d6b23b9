"""A small HTTP/1.1 load generator: keep-alive connections on loopback, one request in flight each.

Written on raw asyncio streams (with uvloop) rather than an HTTP client library, so the generator
spends as little CPU as possible on a 2-core machine where it shares the cores with the server.
Run it in its own process: ``python -m bench.loadgen URL --body JSON --header 'K: V' --seconds 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import uvloop

RequestFactory = Callable[[int], bytes]


def request_factory(url: str, body: str, headers: list[str], unique_header: str | None) -> RequestFactory:
    """Builds request bytes; ``unique_header`` gets a fresh value per request (e.g. Idempotency-Key)."""
    parts = urlsplit(url)
    payload = body.encode()
    head = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(payload)}"]
    head += ["Content-Type: application/json", *headers]

    def build(sequence: int) -> bytes:
        extra = [f"{unique_header}: bench-{sequence:012d}"] if unique_header else []
        return ("\r\n".join([*head, *extra]) + "\r\n\r\n").encode() + payload

    return build


async def read_response(reader: asyncio.StreamReader) -> int:
    header = await reader.readuntil(b"\r\n\r\n")
    status = int(header[9:12])
    length = 0
    for line in header.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def connection(
    host: str, port: int, build: RequestFactory, deadline: float, counter: list[int], latencies: list[float],
    statuses: dict[int, int],
) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            counter[0] += 1
            started = time.perf_counter()
            writer.write(build(counter[0]))
            status = await read_response(reader)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def run_load(url: str, build: RequestFactory, connections: int, seconds: float) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = [0]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(connection(host, port, build, deadline, counter, latencies, statuses) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "ok": sum(count for status, count in statuses.items() if 200 <= status < 300),
        "errors": sum(count for status, count in statuses.items() if status >= 300),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--body", default="{}")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--unique-header")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    build = request_factory(args.url, args.body, args.header, args.unique_header)
    result = uvloop.run(run_load(args.url, build, args.connections, args.seconds))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
