"""An ASGI app served by uvicorn on a background thread: fakes a test inspects while other
processes (workers) reach them by URL."""

from __future__ import annotations

import socket
import threading
import time
from typing import Literal

import uvicorn
from starlette.types import ASGIApp


class ThreadedServer:
    def __init__(self, server: uvicorn.Server, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread

    def stop(self) -> None:
        self._server.should_exit = True
        self._server.force_exit = True  # do not wait for answers a test has stopped reading
        self._thread.join(timeout=10)


def serve_in_thread(
    app: ASGIApp, host: str, port: int, name: str, *, lifespan: Literal["on", "off"] = "off"
) -> tuple[int, ThreadedServer]:
    """Serves ``app`` on ``host:port`` (0: any free port); returns the port once it accepts.
    ``lifespan="on"`` for an app that opens its resources in its lifespan (the API)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(
        app,
        log_config=None,  # leave the test process's logging configuration alone
        log_level="warning",
        access_log=False,
        lifespan=lifespan,
        ws="none",
        loop="asyncio",
        http="h11",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.01)
    return sock.getsockname()[1], ThreadedServer(server, thread)
