"""The environment of the service processes the end-to-end tests start: the fake Anthropic API, a
short job timeout (so a dead worker's job runs again within seconds) and a short drain."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.support import JOB_TIMEOUT
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.processes import service_env


@pytest.fixture
def env(redis_url: str, tmp_path: Path, fake_anthropic: FakeAnthropic) -> dict[str, str]:
    return service_env(
        redis_url,
        tmp_path / "data",
        ANTHROPIC_API_KEY="sk-ant-resilience",
        ANTHROPIC_BASE_URL=fake_anthropic.base_url,
        JOB_TIMEOUT_SECONDS=str(JOB_TIMEOUT),
        WORKER_GRACE_SECONDS="5",
    )
