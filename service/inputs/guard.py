"""Outbound address policy for input fetches, enforced on the very address a socket connects to."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import httpcore

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

# Cloud instance-metadata endpoints hand out credentials to whoever asks from inside the VM; they stay
# refused even when private addresses are allowed (AWS/GCP/Azure/Oracle/DO, AWS ECS/EKS agents,
# AWS IPv6 IMDS, Alibaba).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.170.23",
        "fd00:ec2::254",
        "fd00:ec2::23",
        "100.100.100.200",
    )
)

# Ranges that `is_global` (Python 3.11) still calls global but that must not be reached from here.
_NOT_PUBLIC: tuple[IPv4Network | IPv6Network, ...] = (
    IPv4Network("100.64.0.0/10"),  # carrier-grade NAT: often the provider's internal network
    IPv4Network("192.0.0.0/24"),  # IETF protocol assignments
    IPv4Network("198.18.0.0/15"),  # benchmarking
    IPv6Network("64:ff9b:1::/48"),  # local-use NAT64
    IPv6Network("fec0::/10"),  # deprecated site-local
    IPv6Network("2001::/32"),  # Teredo: the tunnelled IPv4 address is obfuscated
)
_NAT64 = IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix: the last 32 bits are an IPv4 address
_BROADCAST = IPv4Address("255.255.255.255")


class AddressRefused(Exception):
    """The host resolves to an address the policy does not allow; ``str()`` is for logs only."""


class HostNotFound(Exception):
    """The host name does not exist (NXDOMAIN or no address records): retrying will not help."""


class ResolutionFailed(Exception):
    """The resolver could not answer right now (SERVFAIL, timeout, no network): worth a retry."""


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped or NAT64 IPv6 address stands for, else the address itself."""
    if isinstance(ip, IPv6Address):
        ip = IPv6Address(int(ip))  # drops a %zone suffix, which would defeat equality checks
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def is_public_address(ip: IPAddress) -> bool:
    """True for addresses on the public internet: `is_global` plus the gaps it leaves in Python 3.11."""
    ip = _unwrap(ip)
    if isinstance(ip, IPv6Address) and ip.sixtofour is not None and not is_public_address(ip.sixtofour):
        return False  # 6to4 tunnels to the embedded IPv4 address
    special = (
        ip.is_multicast,  # `is_global` is True for 224.0.0.0/4 and ff00::/8
        ip.is_reserved,
        ip.is_unspecified,
        ip.is_loopback,
        ip.is_link_local,
        ip.is_private,
    )
    if not ip.is_global or any(special):
        return False
    return not any(ip in net for net in _NOT_PUBLIC if net.version == ip.version)


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses the fetcher may connect to.

    ``allow_private`` opens loopback, RFC 1918, link-local and the like (tests, private deployments),
    but never the metadata endpoints, ``0.0.0.0``/``::``, multicast or broadcast. ``extra_allowed``
    names exact addresses allowed regardless (a known internal host; a test server).
    """

    allow_private: bool = False
    extra_allowed: frozenset[IPAddress] = frozenset()

    def permits(self, ip: IPAddress) -> bool:
        ip = _unwrap(ip)
        if ip in METADATA_ADDRESSES or ip.is_unspecified or ip.is_multicast or ip == _BROADCAST:
            return False
        if ip in self.extra_allowed or is_public_address(ip):
            return True
        return self.allow_private


_ADDRESS_CHARACTERS = frozenset("0123456789abcdefxABCDEFX.")


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host denotes without DNS, including the legacy forms the C resolver accepts.

    ``getaddrinfo`` reads ``2130706433``, ``0x7f.1`` and ``017700000001`` as 127.0.0.1 (inet_aton
    rules), so a syntactic check that only knew dotted quads would miss them.
    """
    bare = host.strip("[]")
    # Most hosts are names: a character no address form can contain settles it without exceptions.
    if not bare or not (":" in bare or _ADDRESS_CHARACTERS.issuperset(bare)):
        return None  # inet_aton also accepts trailing junk after a space; real host names never get here
    try:
        return ip_address(bare)
    except ValueError:
        pass
    if ":" in bare:
        return None
    try:
        return IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None


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
