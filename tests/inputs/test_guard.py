"""Address policy and URL checks without a server: which addresses and URLs input fetches may use."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.inputs.addresses import AddressPolicy, is_public_address, literal_address
from service.inputs.guard import system_resolve
from service.inputs.urls import _PLAIN_URL, _split_any_url, _split_url, check_input_url

PUBLIC = [
    "8.8.8.8",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",  # IPv4-mapped: judged as the IPv4 address
    "64:ff9b::808:808",  # NAT64 of a public address (IPv6-only hosts with DNS64 need it)
    "2002:808:808::",  # 6to4 of a public address
]
NOT_PUBLIC = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",  # CGNAT: is_global is already False, kept explicit
    "198.18.0.1",
    "192.0.0.8",
    "0.0.0.0",  # noqa: S104 - an address under test, nothing binds to it
    "255.255.255.255",
    "240.0.0.1",
    "224.0.0.1",  # multicast: is_global says True in Python 3.11
    "::1",
    "::",
    "fc00::1",
    "fd00:ec2::254",
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",  # site-local: is_global says True
    "ff02::1",  # multicast: is_global says True
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "64:ff9b::7f00:1",  # NAT64 of loopback: is_global says True
    "64:ff9b:1::808:808",  # local-use NAT64
    "2002:7f00:1::",  # 6to4 of loopback: is_global says True
    "2001::1",  # Teredo
    "::7f00:1",  # IPv4-compatible (deprecated): is_global says True
]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_public(address: str) -> None:
    assert is_public_address(ip_address(address))


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_special_addresses_are_not_public_including_is_global_gaps(address: str) -> None:
    assert not is_public_address(ip_address(address))
    assert not AddressPolicy().permits(ip_address(address))


@pytest.mark.parametrize(
    ("address", "permitted"),
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("::1", True),
        ("169.254.1.1", True),
        ("169.254.169.254", False),
        ("::ffff:169.254.169.254", False),
        ("169.254.170.2", False),
        ("fd00:ec2::254", False),
        ("100.100.100.200", False),
        ("0.0.0.0", False),  # noqa: S104 - an address under test
        ("::", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
    ],
)
def test_allow_private_opens_private_ranges_but_never_metadata_or_unspecified(
    address: str, permitted: bool
) -> None:
    assert AddressPolicy(allow_private=True).permits(ip_address(address)) is permitted


def test_extra_allowed_addresses_are_permitted_but_not_their_neighbours() -> None:
    policy = AddressPolicy(extra_allowed=frozenset({ip_address("127.0.0.1")}))
    assert policy.permits(ip_address("127.0.0.1"))
    assert not policy.permits(ip_address("127.0.0.2"))


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0", "0.0.0.0"),  # noqa: S104 - an address under test
        ("[::1]", "::1"),
        ("example.com", None),
        ("cafe", None),
        ("deadbeef.example", None),
    ],
)
def test_literal_address_reads_hosts_as_the_resolver_does(host: str, expected: str | None) -> None:
    found = literal_address(host)
    assert (str(found) if found is not None else None) == expected


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "017700000001", "127.1"])
async def test_system_resolver_turns_numeric_host_forms_into_loopback(host: str) -> None:
    """glibc's getaddrinfo applies inet_aton rules without DNS; the connect-time check sees 127.0.0.1."""
    assert await system_resolve(host, 80) == [ip_address("127.0.0.1")]


ACCEPTED = [
    "https://example.com/data.csv",
    "http://example.com:8080/x.json?token=abc#frag",
    "  https://example.com/padded.txt  ",
    "https://exämple.com/idn.csv",
    "https://8.8.8.8/data.csv",
    "http://[2001:4860:4860::8888]/data.csv",
    "HTTPS://EXAMPLE.COM/upper.csv",
]
REFUSED = [
    ("", "empty"),
    ("ftp://example.com/data.csv", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("example.com/data.csv", "http:// or https://"),
    ("http:///data.csv", "no host"),
    ("https://user:pass@example.com/data.csv", "user name or password"),
    ("https://token@example.com/data.csv", "user name or password"),
    ("http://example.com:0/", "port"),
    ("http://example.com:65536/", "port"),
    ("http://example.com:abc/", "not a valid URL"),
    ("https://example.com/" + "a" * 2048, "longer than 2048"),
    ("http://exa mple.com/", "spaces or control characters"),
    ("http://example.com/\x00", "spaces or control characters"),
    ("http://127.0.0.1/", "private or local"),
    ("http://localhost:8000/", "private or local"),
    ("http://LOCALHOST./", "private or local"),
    ("http://api.localhost/", "private or local"),
    ("http://10.1.2.3/", "private or local"),
    ("http://172.16.0.1/", "private or local"),
    ("http://192.168.0.1/", "private or local"),
    ("http://169.254.169.254/latest/meta-data/", "private or local"),
    ("http://100.64.0.1/", "private or local"),
    ("http://0.0.0.0/", "private or local"),
    ("http://[::1]/", "private or local"),
    ("http://[::ffff:127.0.0.1]/", "private or local"),
    ("http://[fd00::1]/", "private or local"),
    ("http://2130706433/", "private or local"),
    ("http://0x7f000001/", "private or local"),
    ("http://0177.0.0.1/", "private or local"),  # httpx refuses dotted quads with leading zeros
    ("http://127.1/", "private or local"),
]


@pytest.mark.parametrize("url", ACCEPTED)
def test_check_input_url_accepts_public_http_urls(url: str) -> None:
    assert check_input_url(url) == url.strip()


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_check_input_url_refuses_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_input_url(url)


def test_check_input_url_with_private_allowed_still_refuses_metadata() -> None:
    assert check_input_url("http://127.0.0.1:8000/x.csv", allow_private=True) == "http://127.0.0.1:8000/x.csv"
    assert check_input_url("http://localhost/x.csv", allow_private=True) == "http://localhost/x.csv"
    with pytest.raises(ValueError, match="never allowed"):
        check_input_url("http://169.254.169.254/", allow_private=True)


def test_refusals_never_echo_the_url() -> None:
    with pytest.raises(ValueError, match="user name") as caught:
        check_input_url("https://alice:s3cret-token@example.com/data.csv")
    assert "s3cret" not in str(caught.value)


# Pieces of URLs, tricky ones included: the shortcut must answer as urlsplit does wherever it answers.
_SCHEMES = st.sampled_from(["http", "https", "HTTP", "hTTps", "ftp", "http:", "https:/"])
_HOST_CHARS = st.sampled_from([*list("abcXYZ019-."), "@", ":", "[", "]", "%", "\\", "é", " ", "\t"])
_REST_CHARS = st.sampled_from([*list("/?#=&a.Z9%@:"), "\\", " ", "\n", "\x00", "\x7f", "é", "\u2028"])


@given(
    scheme=_SCHEMES,
    host=st.one_of(
        st.from_regex(r"[A-Za-z0-9-]{1,6}(\.[A-Za-z0-9-]{1,6}){0,3}\.?", fullmatch=True),
        st.text(_HOST_CHARS, max_size=12),
    ),
    port=st.one_of(st.none(), st.integers(-1, 70000).map(str), st.sampled_from(["", "0", "080", "8o"])),
    rest=st.one_of(
        st.tuples(st.sampled_from("/?#"), st.text(_REST_CHARS, max_size=12)).map("".join),
        st.text(_REST_CHARS, max_size=12),
    ),
)
@settings(max_examples=1000, deadline=None)
def test_the_plain_url_shortcut_reads_the_host_as_urlsplit_does(
    scheme: str, host: str, port: str | None, rest: str
) -> None:
    url = f"{scheme}://{host}" + ("" if port is None else f":{port}") + rest
    if _PLAIN_URL.fullmatch(url) is None:
        return  # the long way: nothing to compare
    assert _outcome(_split_url, url) == _outcome(_split_any_url, url), url


def _outcome(split: Callable[[str], str], url: str) -> str:
    try:
        return split(url)
    except ValueError as exc:
        return f"refused: {exc}"


def test_the_shortcut_takes_the_usual_urls() -> None:
    for url in (
        "https://example.com/data/sales.csv",
        "http://Data.Example.org:8080/a?b=c#d",
        "https://127.0.0.1/",
    ):
        assert _PLAIN_URL.fullmatch(url), url
