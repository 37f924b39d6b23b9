"""Loopback HTTP and HTTPS servers for the input-fetcher tests: one route per behaviour under test."""

from __future__ import annotations

import contextlib
import gzip
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

CAP = 20_000
RELEASE = threading.Event()  # set at teardown: frees handlers that stall on purpose

Headers = dict[str, str]
STATIC: dict[str, tuple[int, Headers, bytes]] = {
    "/data.csv": (200, {"Content-Type": "text/csv; charset=utf-8"}, "name,amount\nä,1\n".encode()),
    "/data.json": (200, {"Content-Type": "application/json"}, b'{"rows": [1, 2]}'),
    "/notes.txt": (200, {"Content-Type": "text/plain"}, b"plain notes\n"),
    "/download/report.csv": (200, {"Content-Type": "application/octet-stream"}, b"a,b\n1,2\n"),
    "/raw/data.csv": (200, {"Content-Type": "text/plain; charset=utf-8"}, b"a,b\n1,2\n"),
    "/blob": (200, {}, b' {"sniffed": true}'),
    "/api/items": (200, {"Content-Type": "application/vnd.api+json"}, b'{"data": []}'),
    "/latin1.txt": (200, {"Content-Type": "text/plain; charset=ISO-8859-1"}, "café".encode("latin-1")),
    "/mislabelled.txt": (200, {"Content-Type": "text/plain; charset=iso-8859-1"}, "café".encode()),
    "/cp1252.txt": (200, {"Content-Type": "text/plain"}, "€5 café".encode("cp1252")),
    "/utf16.txt": (200, {"Content-Type": "text/plain"}, "hello".encode("utf-16")),
    "/bom.csv": (200, {"Content-Type": "text/csv"}, b"\xef\xbb\xbfa,b\n"),
    "/sjis.txt": (200, {"Content-Type": "text/plain; charset=shift_jis"}, "日本".encode("shift_jis")),
    "/bogus-charset.txt": (200, {"Content-Type": "text/plain; charset=x-nonsense"}, "ü".encode()),
    "/gzip.csv": (
        200,
        {"Content-Type": "text/csv", "Content-Encoding": "gzip"},
        gzip.compress(b"a,b\n1,2\n"),
    ),
    "/image.png": (200, {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n"),
    "/archive.zip": (200, {"Content-Type": "application/zip"}, b"PK\x03\x04"),
    "/binary": (200, {"Content-Type": "application/octet-stream"}, b"abc\x00\x01\x02def"),
    "/fake.txt": (200, {"Content-Type": "text/plain"}, b"%PDF-1.7\n1 0 obj"),
    "/brotli.txt": (200, {"Content-Type": "text/plain", "Content-Encoding": "br"}, b"\x0b\x01\x80"),
    "/empty.txt": (200, {"Content-Type": "text/plain"}, b"  \n"),
    "/status/403": (403, {}, b"no"),
    "/status/404": (404, {}, b"missing"),
    "/status/429": (429, {"Retry-After": "7"}, b"slow down"),
    "/status/500": (500, {}, b"oops"),
    "/status/503": (503, {"Retry-After": "7"}, b"busy"),
    "/status/503-a-day": (503, {"Retry-After": "86400"}, b"come back tomorrow"),
    "/status/503-superscript": (503, {"Retry-After": "\u00b2"}, b"busy"),
    "/set-cookie": (200, {"Content-Type": "text/plain", "Set-Cookie": "session=abc; Path=/"}, b"ok"),
    "/large-declared": (200, {"Content-Type": "text/plain", "Content-Length": str(10**9)}, b"x" * 1000),
}


@cache
def gzip_bomb() -> bytes:
    return gzip.compress(b"\0" * 20_000_000, compresslevel=9)  # about 20 kB on the wire


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read results, not access logs."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        # The fetcher hangs up on purpose (cap reached, timeout): not an error for the server.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self._route(parts.path, query)

    def _route(self, path: str, query: dict[str, str]) -> None:
        if path in STATIC:
            status, headers, body = STATIC[path]
            self.reply(status, body, headers)
        elif path == "/redirect":
            self.reply(int(query.get("code", "302")), b"", {"Location": query["to"]})
        elif path.startswith("/chain/"):
            hops = int(path.rsplit("/", 1)[-1])
            target = f"/chain/{hops - 1}" if hops > 1 else "/data.csv"  # /chain/N: N redirects
            self.reply(302, b"", {"Location": target})
        elif path == "/echo":
            seen = {
                name: self.headers.get(name) for name in ("Host", "Cookie", "User-Agent", "Accept-Encoding")
            }
            self.reply(200, json.dumps(seen).encode(), {"Content-Type": "application/json"})
        elif path == "/gzip-bomb":
            self.reply(200, gzip_bomb(), {"Content-Type": "text/plain", "Content-Encoding": "gzip"})
        else:
            self._slow(path)

    def _slow(self, path: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()  # no Content-Length: the body ends when the connection closes
        if path == "/large-stream":
            for _ in range(CAP * 3 // 1000):
                self.wfile.write(b"y" * 1000)
        elif path == "/stall":
            self.wfile.write(b"partial")
            self.wfile.flush()
            RELEASE.wait(5)
        elif path == "/trickle":
            for _ in range(100):
                self.wfile.write(b"z")
                self.wfile.flush()
                if RELEASE.wait(0.05):
                    break

    def reply(self, status: int, body: bytes, headers: Headers) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass(frozen=True)
class Servers:
    http: str  # http://127.0.0.1:PORT
    port: int
    https: str | None  # https://localhost:PORT, None without an openssl binary
    https_port: int
    trust: ssl.SSLContext | None  # trusts the https server's self-signed certificate


def _serve(tls: ssl.SSLContext | None = None) -> tuple[ThreadingHTTPServer, threading.Thread]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


def _self_signed(directory: Path) -> tuple[Path, Path] | None:
    if shutil.which("openssl") is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ),
            *("-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@contextlib.contextmanager
def running_servers(tls_dir: Path) -> Iterator[Servers]:
    """A plain server on 127.0.0.1 and, when openssl can make a certificate, a TLS one for localhost."""
    running = [_serve()]
    pair = _self_signed(tls_dir)
    trust = None
    if pair is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(*pair)
        running.append(_serve(tls))
        trust = ssl.create_default_context(cafile=str(pair[0]))
    ports = [server.server_address[1] for server, _ in running]
    https_port = ports[1] if trust is not None else 0
    try:
        yield Servers(
            http=f"http://127.0.0.1:{ports[0]}",
            port=ports[0],
            https=f"https://localhost:{https_port}" if trust is not None else None,
            https_port=https_port,
            trust=trust,
        )
    finally:
        RELEASE.set()
        for server, thread in running:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
