"""Fixtures of the API's browser tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser

from service.core.settings import Settings
from tests.api.browsers import chromium
from tests.api.events.support import LiveApi, live_api


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[LiveApi]:
    async with live_api(settings) as api:
        yield api
