"""What the fetcher tests share: a policy allowing only the test server, settings, a fetch, resolvers."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from ipaddress import ip_address

from service.core.settings import Settings
from service.inputs.addresses import AddressPolicy, IPAddress
from service.inputs.fetch import FetchedInput, InputFetcher, build_input_client
from service.inputs.guard import Resolver
from tests.fakes.input_server import CAP

ONLY_LOOPBACK = AddressPolicy(extra_allowed=frozenset({ip_address("127.0.0.1")}))  # the test server alone


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
