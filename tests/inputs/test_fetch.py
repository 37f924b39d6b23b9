"""InputFetcher against real HTTP(S) servers on 127.0.0.1: content, limits, errors and the SSRF guard."""

from __future__ import annotations

import json
import socket
import ssl
import time
import tracemalloc
from collections.abc import Callable, Iterator
from ipaddress import ip_address
from urllib.parse import quote

import pytest

from service.core.errors import InputRejected, InputUnavailable
from service.core.settings import Settings
from service.inputs.addresses import AddressPolicy, IPAddress
from service.inputs.fetch import FetchedInput, InputFetcher, build_input_client
from service.inputs.guard import HostNotFound, ResolutionFailed, Resolver
from tests.fakes.input_server import CAP, Servers, gzip_bomb, running_servers

ONLY_LOOPBACK = AddressPolicy(extra_allowed=frozenset({ip_address("127.0.0.1")}))  # the test server alone


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with running_servers(tmp_path_factory.mktemp("tls")) as running:
        yield running


def make_settings(
    *, allow_private: bool = True, read_timeout: float = 0.5, max_redirects: int = 2
) -> Settings:
    return Settings(
        _env_file=None,
        allow_private_input_urls=allow_private,
        input_max_bytes=CAP,
        input_connect_timeout_seconds=1.0,
        input_read_timeout_seconds=read_timeout,
        input_max_redirects=max_redirects,
    )


async def fetch(
    url: str,
    settings: Settings | None = None,
    *,
    policy: AddressPolicy | None = None,
    resolver: Resolver | None = None,
    trust: ssl.SSLContext | None = None,
    deadline: float | None = None,
) -> FetchedInput:
    settings = settings if settings is not None else make_settings()
    verify: ssl.SSLContext | bool = trust if trust is not None else True
    async with build_input_client(settings, policy=policy, resolver=resolver, verify=verify) as client:
        return await InputFetcher(client, settings, deadline_seconds=deadline).fetch(url)


def resolving_to(*answers: list[str]) -> tuple[Resolver, list[str]]:
    """A resolver giving each answer in turn (the last one repeats), and the list of names it was asked."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return [ip_address(a) for a in answers[min(len(asked), len(answers)) - 1]]

    return resolve, asked


def failing_resolver(error: Callable[[str], Exception]) -> Resolver:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        raise error(host)

    return resolve


# --- content ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "text", "name"),
    [
        ("/data.csv", "text/csv", "name,amount\nä,1\n", "data.csv"),
        ("/data.json", "application/json", '{"rows": [1, 2]}', "data.json"),
        ("/notes.txt", "text/plain", "plain notes\n", "notes.txt"),
        ("/download/report.csv", "text/csv", "a,b\n1,2\n", "report.csv"),  # octet-stream: by extension
        ("/raw/data.csv", "text/csv", "a,b\n1,2\n", "data.csv"),  # generic text/plain: extension says more
        ("/blob", "application/json", ' {"sniffed": true}', "blob"),  # no type, no extension: sniffed
        ("/api/items", "application/json", '{"data": []}', "items"),
        ("/gzip.csv", "text/csv", "a,b\n1,2\n", "gzip.csv"),
        ("/chain/2?token=x", "text/csv", "name,amount\nä,1\n", "data.csv"),  # name of the final URL
    ],
)
async def test_fetches_text_inputs_with_normalised_type_and_name(
    servers: Servers, path: str, content_type: str, text: str, name: str
) -> None:
    fetched = await fetch(servers.http + path)
    assert (fetched.content_type, fetched.text, fetched.name) == (content_type, text, name)
    assert fetched.size == len(text.encode())


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("/latin1.txt", "café"),
        ("/mislabelled.txt", "café"),  # valid UTF-8 under an old Latin-1 default is read as UTF-8
        ("/cp1252.txt", "€5 café"),  # no charset, not UTF-8: Windows-1252
        ("/utf16.txt", "hello"),  # BOM decides, NUL bytes of UTF-16 are not "binary"
        ("/bom.csv", "a,b\n"),  # UTF-8 BOM stripped
        ("/sjis.txt", "日本"),
        ("/bogus-charset.txt", "ü"),  # unknown label ignored
    ],
)
async def test_decodes_charsets(servers: Servers, path: str, text: str) -> None:
    assert (await fetch(servers.http + path)).text == text


@pytest.mark.parametrize("path", ["/image.png", "/archive.zip", "/binary", "/fake.txt"])
async def test_binary_inputs_are_refused_by_type_or_sniffing(servers: Servers, path: str) -> None:
    with pytest.raises(InputRejected, match="not text"):
        await fetch(servers.http + path)


async def test_unsupported_content_encoding_and_empty_documents_are_refused(servers: Servers) -> None:
    with pytest.raises(InputRejected, match="compressed with br"):
        await fetch(servers.http + "/brotli.txt")
    with pytest.raises(InputRejected, match="empty"):
        await fetch(servers.http + "/empty.txt")


async def test_sends_user_agent_and_keeps_no_cookies_between_fetches(servers: Servers) -> None:
    settings = make_settings()
    async with build_input_client(settings) as client:
        fetcher = InputFetcher(client, settings)
        await fetcher.fetch(servers.http + "/set-cookie")
        seen = json.loads((await fetcher.fetch(servers.http + "/echo")).text)
    assert seen["Cookie"] is None
    assert seen["User-Agent"].startswith("report-service/")
    assert seen["Accept-Encoding"] == "gzip"


# --- the address guard -----------------------------------------------------------------------

PRIVATE_HOSTS = [
    "127.0.0.1",
    "localhost",
    "[::1]",
    "10.0.0.1",
    "192.168.1.1",
    "172.16.0.1",
    "169.254.169.254",
    "[::ffff:127.0.0.1]",
    "0.0.0.0",  # noqa: S104 - an address under test, nothing binds to it
    "2130706433",  # decimal 127.0.0.1: the resolver reads it as loopback
    "0x7f000001",  # hex
    "0x7f.1",
    "017700000001",  # octal
]


@pytest.mark.parametrize("host", PRIVATE_HOSTS)
async def test_private_and_local_addresses_are_refused_by_default(servers: Servers, host: str) -> None:
    """Refused at connect time by the resolved address (check_input_url is not involved here)."""
    with pytest.raises(InputRejected, match="private or local address"):
        await fetch(f"http://{host}:{servers.port}/data.csv", make_settings(allow_private=False))


@pytest.mark.parametrize("host", ["169.254.169.254", "[fd00:ec2::254]", "[::ffff:169.254.169.254]"])
async def test_metadata_endpoints_are_refused_even_when_private_urls_are_allowed(host: str) -> None:
    with pytest.raises(InputRejected, match="private or local address"):
        await fetch(f"http://{host}/latest/meta-data/", make_settings(allow_private=True))


async def test_an_allowed_test_server_is_reachable_under_the_strict_policy(servers: Servers) -> None:
    fetched = await fetch(
        servers.http + "/data.csv", make_settings(allow_private=False), policy=ONLY_LOOPBACK
    )
    assert fetched.content_type == "text/csv"


@pytest.mark.parametrize(
    "target", ["http://127.0.0.2:{port}/data.csv", "http://10.0.0.1/", "http://[::1]:{port}/"]
)
async def test_redirect_from_an_allowed_server_to_a_private_address_is_refused(
    servers: Servers, target: str
) -> None:
    location = quote(target.format(port=servers.port), safe="")
    with pytest.raises(InputRejected, match="private or local address"):
        await fetch(
            f"{servers.http}/redirect?to={location}", make_settings(allow_private=False), policy=ONLY_LOOPBACK
        )


async def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(servers: Servers) -> None:
    """data.test exists only in the injected resolver: the socket can only have used the checked IP."""
    resolver, asked = resolving_to(["127.0.0.1"])
    url = f"http://data.test:{servers.port}/echo"
    fetched = await fetch(url, make_settings(allow_private=False), policy=ONLY_LOOPBACK, resolver=resolver)
    assert json.loads(fetched.text)["Host"] == f"data.test:{servers.port}"
    assert asked == ["data.test"]  # one lookup, the one that was checked: no earlier separate lookup


async def test_dns_rebinding_to_a_private_address_is_refused_on_the_next_connection(servers: Servers) -> None:
    resolver, asked = resolving_to(["127.0.0.1"], ["10.0.0.1"])
    settings = make_settings(allow_private=False)
    url = f"http://rebind.test:{servers.port}/data.csv"
    async with build_input_client(settings, policy=ONLY_LOOPBACK, resolver=resolver) as client:
        fetcher = InputFetcher(client, settings)
        assert (await fetcher.fetch(url)).content_type == "text/csv"
        with pytest.raises(InputRejected, match="private or local address"):
            await fetcher.fetch(url)
    assert asked == ["rebind.test", "rebind.test"]


async def test_a_name_with_any_private_answer_is_refused(servers: Servers) -> None:
    resolver, _ = resolving_to(["127.0.0.1", "10.0.0.1"])
    with pytest.raises(InputRejected, match="private or local address"):
        await fetch(f"http://mixed.test:{servers.port}/data.csv", policy=ONLY_LOOPBACK, resolver=resolver)


async def test_unknown_host_is_rejected_and_a_failing_resolver_is_transient() -> None:
    with pytest.raises(InputRejected, match="does not exist"):
        await fetch("http://nxdomain.test/data.csv", resolver=failing_resolver(HostNotFound))
    with pytest.raises(InputUnavailable, match="could not be resolved right now"):
        await fetch("http://servfail.test/data.csv", resolver=failing_resolver(ResolutionFailed))


# --- redirects and TLS -----------------------------------------------------------------------


async def test_too_many_redirects_are_refused(servers: Servers) -> None:
    assert (await fetch(servers.http + "/chain/2")).name == "data.csv"
    with pytest.raises(InputRejected, match="redirected more than 2 times"):
        await fetch(servers.http + "/chain/3")


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://example.com/data.csv", "gopher://x/"])
async def test_redirect_to_a_non_http_scheme_is_refused(servers: Servers, target: str) -> None:
    with pytest.raises(InputRejected, match="cannot be used"):
        await fetch(f"{servers.http}/redirect?to={quote(target, safe='')}")


def _https(servers: Servers) -> tuple[str, ssl.SSLContext]:
    if servers.https is None or servers.trust is None:
        pytest.skip("needs the openssl binary to make a certificate")
    return servers.https, servers.trust


async def test_https_fetch_uses_the_host_name_for_sni_and_certificate_checks(servers: Servers) -> None:
    base, trust = _https(servers)
    assert (await fetch(base + "/data.csv", trust=trust)).content_type == "text/csv"
    # Same server by IP: the certificate names only "localhost", so verification must fail.
    with pytest.raises(InputRejected, match="TLS certificate"):
        await fetch(f"https://127.0.0.1:{servers.https_port}/data.csv", trust=trust)


async def test_https_to_http_downgrade_is_refused(servers: Servers) -> None:
    base, trust = _https(servers)
    location = quote(servers.http + "/data.csv", safe="")
    with pytest.raises(InputRejected, match="from https to plain http"):
        await fetch(f"{base}/redirect?to={location}", trust=trust)


# --- limits ----------------------------------------------------------------------------------


async def test_declared_length_over_the_cap_is_refused_before_reading(servers: Servers) -> None:
    with pytest.raises(InputRejected, match=r"larger than the 20\.0 kB limit"):
        await fetch(servers.http + "/large-declared")


async def test_streamed_body_without_length_is_cut_at_the_cap(servers: Servers) -> None:
    with pytest.raises(InputRejected, match="larger than"):
        await fetch(servers.http + "/large-stream")


async def test_gzip_bomb_is_stopped_at_the_cap_without_inflating_in_memory(servers: Servers) -> None:
    gzip_bomb()  # built before tracing: its 20 MB of zeros are the server's, not the fetcher's
    tracemalloc.start()
    try:
        with pytest.raises(InputRejected, match="larger than"):
            await fetch(servers.http + "/gzip-bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # the bomb inflates to 20 MB


async def test_a_stalled_server_is_unavailable_within_the_read_timeout(servers: Servers) -> None:
    started = time.monotonic()
    with pytest.raises(InputUnavailable, match="did not answer in time"):
        await fetch(servers.http + "/stall", make_settings(read_timeout=0.3))
    assert time.monotonic() - started < 2


async def test_a_trickling_server_hits_the_overall_deadline(servers: Servers) -> None:
    """One byte every 50 ms never trips the 0.5 s read timeout; the whole-fetch deadline does."""
    started = time.monotonic()
    with pytest.raises(InputUnavailable, match=r"within 0\.6 seconds"):
        await fetch(servers.http + "/trickle", make_settings(read_timeout=0.5), deadline=0.6)
    assert time.monotonic() - started < 2


# --- status codes and connection failures ----------------------------------------------------


@pytest.mark.parametrize(("code", "phrase"), [(403, "403 Forbidden"), (404, "404 Not Found")])
async def test_client_errors_are_rejected_with_the_status(servers: Servers, code: int, phrase: str) -> None:
    with pytest.raises(InputRejected) as caught:
        await fetch(f"{servers.http}/status/{code}?token=s3cret")
    assert (
        caught.value.reason == f"the input URL answered {phrase}"
    )  # the URL (and its token) is never echoed


@pytest.mark.parametrize(("code", "retry_after"), [(503, 7.0), (429, 7.0), (500, None)])
async def test_server_errors_and_429_are_transient(
    servers: Servers, code: int, retry_after: float | None
) -> None:
    with pytest.raises(InputUnavailable, match=f"answered {code}") as caught:
        await fetch(f"{servers.http}/status/{code}")
    assert caught.value.retry_after == retry_after


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(InputUnavailable, match="could not connect"):
        await fetch(f"http://127.0.0.1:{port}/data.csv")
