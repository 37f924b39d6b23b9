"""Settings for worker tests whose jobs call the model: the session's fake Anthropic server."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core.settings import Settings
from tests.conftest import make_settings
from tests.fakes.anthropic import FakeAnthropic


@pytest.fixture
def model_settings(redis_url: str, tmp_path: Path, fake_anthropic: FakeAnthropic) -> Settings:
    return make_settings(
        redis_url,
        tmp_path / "data",
        anthropic_api_key="sk-ant-test",
        anthropic_base_url=fake_anthropic.base_url,
    )
