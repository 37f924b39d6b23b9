"""InputFetcher against real HTTP(S) servers on 127.0.0.1: content, limits, errors and the SSRF guard."""

from __future__ import annotations

import json
import socket
import ssl
import time
import tracemalloc
from urllib.parse import quote

import pytest

from service.core.errors import InputRejected, InputUnavailable
from service.inputs.fetch import InputFetcher, build_input_client
from tests.fakes.input_server import Servers, gzip_bomb
from tests.inputs.support import fetch, make_settings

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


@pytest.mark.parametrize(("path", "retry_after"), [("503-a-day", 60.0), ("503-superscript", None)])
async def test_an_input_hosts_retry_after_defers_a_job_a_minute_at_most_and_nonsense_is_ignored(
    servers: Servers, path: str, retry_after: float | None
) -> None:
    with pytest.raises(InputUnavailable, match="answered 503") as caught:
        await fetch(f"{servers.http}/status/{path}")
    assert caught.value.retry_after == retry_after


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(InputUnavailable, match="could not reach the input host"):
        await fetch(f"http://127.0.0.1:{port}/data.csv")
