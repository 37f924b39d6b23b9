"""What each process loads, checked at run time: the import contracts in pyproject.toml read the
source, and this confirms the processes as they really start (vendors import vendors, too)."""

from __future__ import annotations

import subprocess
import sys

from tests.fakes.processes import ROOT

WORKER_SIDE = ("httpx", "httpcore", "arq", "anthropic", "httpx2", "borb", "uharfbuzz", "fontTools")

_PROBE = """
import sys
{setup}
loaded = {{name.split(".")[0] for name in sys.modules}}
print(",".join(sorted(loaded & set({forbidden!r}))))
"""


def loaded_vendors(setup: str, forbidden: tuple[str, ...]) -> list[str]:
    code = _PROBE.format(setup=setup, forbidden=forbidden)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return [name for name in done.stdout.strip().split(",") if name]


def test_the_api_process_loads_no_worker_side_library() -> None:
    setup = (
        "from service.app import create_app\n"
        "from service.core.settings import Settings\n"
        "create_app(Settings(_env_file=None), configure_logs=False)"
    )
    assert loaded_vendors(setup, WORKER_SIDE) == []


def test_the_offline_provider_loads_no_sdk() -> None:
    setup = "import service.providers.offline.provider"
    assert loaded_vendors(setup, ("anthropic", "httpx2", "httpx")) == []


def test_the_api_process_never_loads_the_webhook_signer() -> None:
    """The API stores each user's secret and schedules cancelled jobs' webhooks; only workers sign
    and send (standardwebhooks and httpx stay out of the web process)."""
    setup = (
        "from service.app import create_app\n"
        "from service.core.settings import Settings\n"
        "create_app(Settings(_env_file=None), configure_logs=False)"
    )
    assert loaded_vendors(setup, ("standardwebhooks", "httpx")) == []
    assert loaded_vendors("import service.worker.deliveries", ("standardwebhooks",)) == ["standardwebhooks"]
