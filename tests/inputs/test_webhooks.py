"""The webhook sender: Standard Webhooks signatures a receiver verifies with the user's secret, the
fetcher's SSRF guard on every attempt, no redirects followed, one deadline per attempt."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from ipaddress import ip_address

import pytest
from standardwebhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Route

from service.core.settings import Settings
from service.inputs.addresses import AddressPolicy
from service.inputs.guard import Resolver
from service.inputs.webhooks import Attempt, WebhookSender, build_webhook_client, signed_headers
from service.store.webhook_secrets import new_secret
from tests.conftest import LiveServer
from tests.fakes.webhook_receiver import STALL, WebhookReceiver, webhook_receiver
from tests.inputs.support import resolving_to

BODY = b'{"type":"report.completed","timestamp":"2026-01-01T00:00:00.000Z","data":{"jobId":"j"}}'
ONLY_LOOPBACK = AddressPolicy(extra_allowed=frozenset({ip_address("127.0.0.1")}))


def settings(*, allow_private: bool = True, timeout: float = 2.0) -> Settings:
    return Settings(_env_file=None, allow_private_input_urls=allow_private, webhook_timeout_seconds=timeout)


async def send(
    url: str,
    secret: str,
    config: Settings,
    *,
    policy: AddressPolicy | None = None,
    resolver: Resolver | None = None,
) -> Attempt:
    async with build_webhook_client(config, policy=policy, resolver=resolver) as client:
        sender = WebhookSender(client, timeout_seconds=config.webhook_timeout_seconds, max_retry_after=60)
        return await sender.send(url, secret, "msg_0123abcd", BODY)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as live:
        yield live


async def test_the_receiver_verifies_the_webhook_with_the_users_secret_and_not_with_another(
    receiver: WebhookReceiver,
) -> None:
    secret, other = new_secret(), new_secret()
    attempt = await send(receiver.hook(), secret, settings())
    assert attempt.delivered and attempt.status == 200
    [got] = receiver.requests
    assert got.body == BODY and got.headers["webhook-id"] == "msg_0123abcd"
    assert got.headers["content-type"] == "application/json"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 5
    assert got.verified(secret) == {"type": "report.completed", "timestamp": "2026-01-01T00:00:00.000Z",
                                    "data": {"jobId": "j"}}  # fmt: skip
    with pytest.raises(WebhookVerificationError):
        got.verified(other)


def test_a_signature_covers_the_id_the_timestamp_and_the_body() -> None:
    secret = new_secret()
    headers = signed_headers(secret, "msg_a", BODY, now=1_700_000_000)
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"].startswith("v1,")
    changed = [
        signed_headers(secret, "msg_b", BODY, now=1_700_000_000),
        signed_headers(secret, "msg_a", BODY + b" ", now=1_700_000_000),
        signed_headers(secret, "msg_a", BODY, now=1_700_000_001),
    ]
    assert len({h["webhook-signature"] for h in [headers, *changed]}) == 4


async def test_a_non_2xx_answer_is_a_failed_attempt_with_its_status_and_retry_after(
    receiver: WebhookReceiver,
) -> None:
    receiver.answers = [503]
    attempt = await send(receiver.hook(), new_secret(), settings())
    assert not attempt.delivered and attempt.status == 503 and not attempt.gone
    receiver.answers = [410]
    assert (await send(receiver.hook(), new_secret(), settings())).gone


async def test_a_receiver_that_never_answers_fails_the_attempt_within_the_webhook_timeout(
    receiver: WebhookReceiver,
) -> None:
    receiver.answers = [STALL]
    started = time.monotonic()
    attempt = await send(receiver.hook(), new_secret(), settings(timeout=0.5))
    assert not attempt.delivered and attempt.status is None
    assert 0.5 <= time.monotonic() - started < 2.0


async def test_a_redirect_is_not_followed_and_counts_as_a_failure() -> None:
    """A 3xx is a failure (Standard Webhooks): following it would also let a receiver point the
    fleet somewhere else after the URL was checked."""
    async with webhook_receiver() as target:

        async def redirect(request: Request) -> RedirectResponse:
            return RedirectResponse(target.hook(), status_code=307)

        app = Starlette(routes=[Route("/hook", redirect, methods=["POST"])])
        async with LiveServer(app) as redirector:
            attempt = await send(f"{redirector.url}/hook", new_secret(), settings())
        assert not attempt.delivered and attempt.status == 307
        assert target.requests == []


async def test_a_name_that_resolves_to_a_private_address_is_refused_at_delivery(
    receiver: WebhookReceiver,
) -> None:
    """The guard of input fetches, on the address connected to: the same name is delivered when it
    resolves to the one allowed address, and refused when it resolves privately."""
    port = receiver.url.rsplit(":", 1)[1]
    url = f"http://hooks.test:{port}/hooks/reports"
    strict = settings(allow_private=False)
    public_like, _ = resolving_to(["127.0.0.1"])
    assert (await send(url, new_secret(), strict, policy=ONLY_LOOPBACK, resolver=public_like)).delivered
    private, asked = resolving_to(["10.20.30.40"])
    refused = await send(url, new_secret(), strict, policy=ONLY_LOOPBACK, resolver=private)
    assert not refused.delivered and refused.status is None and refused.problem == "could not reach the host"
    assert asked == ["hooks.test"] and len(receiver.requests) == 1


async def test_loopback_is_refused_unless_private_addresses_are_allowed(receiver: WebhookReceiver) -> None:
    """ALLOW_PRIVATE_INPUT_URLS applies to webhooks as it does to inputs."""
    refused = await send(receiver.hook(), new_secret(), settings(allow_private=False))
    assert not refused.delivered and receiver.requests == []
    assert (await send(receiver.hook(), new_secret(), settings(allow_private=True))).delivered
