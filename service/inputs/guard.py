"""The SSRF guard: an httpcore network backend that connects only to addresses the policy permits,
checked on the very address each socket connects to."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable
from ipaddress import ip_address

import httpcore

from service.inputs.addresses import AddressPolicy, IPAddress

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class AddressRefused(Exception):
    """The host resolves to an address the policy does not allow; ``str()`` is for logs only."""


class HostNotFound(Exception):
    """The host name does not exist (NXDOMAIN or no address records): retrying will not help."""


class ResolutionFailed(Exception):
    """The resolver could not answer right now (SERVFAIL, timeout, no network): worth a retry."""


_PERMANENT_GAI_ERRORS = {
    getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY") if hasattr(socket, name)
}


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """All TCP addresses for ``host`` from the system resolver, in its order, without duplicates."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        if exc.errno in _PERMANENT_GAI_ERRORS:
            raise HostNotFound(f"{host}: {exc.strerror}") from exc
        raise ResolutionFailed(f"{host}: {exc.strerror}") from exc
    found: dict[IPAddress, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        found.setdefault(ip_address(sockaddr[0]), None)
    return list(found)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that resolves the host itself and connects only to checked addresses.

    The check runs on the exact addresses handed to ``connect``, within the same call, so a DNS answer
    that changes between a check and the connection (rebinding) cannot slip through; every redirect
    hop and every new pooled connection comes through here. TLS is layered on later by httpcore with
    the URL's host name as SNI and for certificate checks, so connecting by IP loses nothing.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolve: Resolver = resolver if resolver is not None else system_resolve
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface, not ours to change
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                addresses = await self._resolve(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        refused = [ip for ip in addresses if not self._policy.permits(ip)]
        if refused or not addresses:
            # Refuse when ANY answer is off-limits: a mixed answer is a rebinding or misconfiguration.
            raise AddressRefused(f"{host} resolves to {refused[0] if refused else 'nothing'}")
        last_error: Exception | None = None
        for ip in addresses:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            try:
                return await self._inner.connect_tcp(
                    str(ip),
                    port,
                    timeout=remaining,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        raise last_error if last_error is not None else httpcore.ConnectError(f"cannot connect to {host}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("unix sockets are never used for inputs")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
