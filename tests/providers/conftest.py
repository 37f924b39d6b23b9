"""The fake Anthropic API for the provider tests (one per module), and a provider pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from service.providers.anthropic.provider import AnthropicProvider, build_anthropic_client
from tests.fakes.anthropic import FakeAnthropic
from tests.providers.support import settings_for


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAnthropic) -> FakeAnthropic:
    server.reset()
    return server


@pytest.fixture
async def provider(fake: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    client = build_anthropic_client(settings_for(fake.base_url))
    yield AnthropicProvider(client)
    await client.close()
