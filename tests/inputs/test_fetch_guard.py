"""The fetcher's address guard at work: private and metadata addresses refused at connect time,
through redirects and DNS rebinding."""

from __future__ import annotations

import json
import re
import socket
from urllib.parse import quote

import pytest

from service.core.errors import InputUnavailable
from service.inputs.fetch import UNREACHABLE_HOST as UNREACHABLE
from service.inputs.fetch import InputFetcher, build_input_client
from service.inputs.guard import HostNotFound, ResolutionFailed
from tests.fakes.input_server import Servers
from tests.inputs.support import ONLY_LOOPBACK, failing_resolver, fetch, make_settings, resolving_to

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
    with pytest.raises(InputUnavailable, match=re.escape(UNREACHABLE)):
        await fetch(f"http://{host}:{servers.port}/data.csv", make_settings(allow_private=False))


@pytest.mark.parametrize("host", ["169.254.169.254", "[fd00:ec2::254]", "[::ffff:169.254.169.254]"])
async def test_metadata_endpoints_are_refused_even_when_private_urls_are_allowed(host: str) -> None:
    with pytest.raises(InputUnavailable, match=re.escape(UNREACHABLE)):
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
    with pytest.raises(InputUnavailable, match=re.escape(UNREACHABLE)):
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
        with pytest.raises(InputUnavailable, match=re.escape(UNREACHABLE)):
            await fetcher.fetch(url)
    assert asked == ["rebind.test", "rebind.test"]


async def test_a_name_with_any_private_answer_is_refused(servers: Servers) -> None:
    resolver, _ = resolving_to(["127.0.0.1", "10.0.0.1"])
    with pytest.raises(InputUnavailable, match=re.escape(UNREACHABLE)):
        await fetch(f"http://mixed.test:{servers.port}/data.csv", policy=ONLY_LOOPBACK, resolver=resolver)


async def test_refused_unknown_and_unreachable_hosts_answer_alike_so_private_names_cannot_be_mapped(
    servers: Servers,
) -> None:
    """No internal-DNS oracle: a name that resolves privately, one that does not exist, one whose
    resolver fails and a host that refuses the connection all give the same error, retried alike."""
    private, _ = resolving_to(["10.1.2.3"])
    unreachable = f"http://127.0.0.1:{_closed_port()}/data.csv"
    answers = []
    for url, resolver in [
        ("http://db.internal/data.csv", private),
        ("http://nxdomain.test/data.csv", failing_resolver(HostNotFound)),
        ("http://servfail.test/data.csv", failing_resolver(ResolutionFailed)),
        (unreachable, None),
    ]:
        with pytest.raises(InputUnavailable) as failure:
            await fetch(url, make_settings(allow_private=False), resolver=resolver, policy=ONLY_LOOPBACK)
        answers.append((type(failure.value), failure.value.reason, failure.value.error_code))
    assert len(set(answers)) == 1 and answers[0][2] == "input_unavailable"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
