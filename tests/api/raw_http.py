"""HTTP/1.1 written byte by byte, as an attacker's client would: any method, path, header bytes and
body framing (even a Content-Length that lies), and only as much of the answer as there is to read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import orjson

READ_TIMEOUT = 3.0


@dataclass
class RawRequest:
    method: bytes
    target: bytes  # path and query, exactly as sent
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    framing: str = "length"  # "length", "chunked", "none", "short" (declares less) or "long" (more)

    def encode(self) -> bytes:
        lines = [self.method + b" " + self.target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
        lines += [name + b": " + value for name, value in self.headers]
        body = self.body
        if self.framing == "length":
            lines.append(b"Content-Length: %d" % len(body))
        elif self.framing == "short":
            lines.append(b"Content-Length: %d" % max(0, len(body) - 3))
        elif self.framing == "long":
            lines.append(b"Content-Length: %d" % (len(body) + 10))
        elif self.framing == "chunked":
            lines.append(b"Transfer-Encoding: chunked")
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def from_the_app(self) -> bool:
        """Every answer of the service carries a request id; uvicorn's own refusals of bytes that are
        not HTTP do not (they never reach the app)."""
        return "x-request-id" in self.headers

    def json(self) -> object:
        return orjson.loads(self.body)


async def send(port: int, request: RawRequest) -> RawResponse | None:
    """The answer's status, headers and body (a stream's head only); None when the server closed
    without answering (it may, when the client closed its side before the body it announced)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request.encode())
        if request.framing == "long":
            writer.write_eof()  # the promised bytes never come
        await writer.drain()
        async with asyncio.timeout(READ_TIMEOUT):
            return await _read_response(reader, head_only=request.method == b"HEAD")
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


async def _read_response(reader: asyncio.StreamReader, *, head_only: bool) -> RawResponse | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    status = int(status_line.split(" ")[1])
    if head_only or headers.get("content-type", "").startswith("text/event-stream") or status in (204, 304):
        return RawResponse(status, headers, b"")  # a stream stays open: its head says enough
    if "content-length" in headers:
        return RawResponse(status, headers, await reader.readexactly(int(headers["content-length"])))
    return RawResponse(status, headers, await reader.read())
