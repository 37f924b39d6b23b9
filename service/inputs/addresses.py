"""Which network addresses inputs and webhooks may reach: the policy, and the addresses URL hosts denote.

Pure address arithmetic, no I/O: the API checks literal hosts with it in microseconds, and the
fetcher's guarded connections (``service.inputs.guard``) apply it to every address they connect to.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

IPAddress = IPv4Address | IPv6Address

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
