"""What the provider tests share: a key, a model, a small CSV, settings and requests, a recorder."""

from __future__ import annotations

import time
from typing import Any

from service.core.settings import Settings
from service.providers.base import CallUsage, ReportRequest
from service.providers.offline.provider import render_offline_report

API_KEY = "sk-test-0123456789abcdef"
MODEL = "claude-haiku-4-5-20251001"
CSV = "region,revenue\nNorth,100\nSouth,80\nMARKER-csv42,1\n"


def settings_for(base_url: str, **overrides: Any) -> Settings:
    return Settings(anthropic_api_key=API_KEY, anthropic_base_url=base_url, _env_file=None, **overrides)


def request_for(text: str = CSV, **overrides: Any) -> ReportRequest:
    fields: dict[str, Any] = {
        "input_text": text,
        "input_name": "sales.csv",
        "content_type": "text/csv",
        "model": MODEL,
        "max_tokens": 1000,
    }
    return ReportRequest(**{**fields, **overrides})


class Recorder:
    """An ``on_usage`` listener that remembers what it heard and when."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, CallUsage]] = []

    async def __call__(self, usage: CallUsage) -> None:
        self.calls.append((time.monotonic(), usage))

    @property
    def counts(self) -> list[int]:
        """The output tokens heard, in order."""
        return [usage.output_tokens for _, usage in self.calls]

    @property
    def finals(self) -> list[CallUsage]:
        return [usage for _, usage in self.calls if usage.final]


ORDERS = {
    "company": "Acme",
    "orders": [
        {
            "id": n,
            "amount": n * 1.5,
            "status": "paid" if n % 4 else "open",
            "items": [{"sku": "A"}] * (n % 3 + 1),
        }
        for n in range(1, 21)
    ],
    "meta": {"version": 2, "tags": ["x", "y"]},
}


def report(text: str, name: str, content_type: str) -> str:
    return render_offline_report(ReportRequest(text, name, content_type, "offline", 1000))
