"""The input mix of the cost benchmark: what a team's reports are made from, generated the same way
every run (a seeded random source), so every row of the table prices the same inputs.

Half small CSV exports (20 to 60 rows), three in ten JSON API dumps (50 to 150 records), two in ten
plain-text notes (10 to 30 paragraphs): from about 1 kB to 30 kB, 300 to 8,000 input tokens.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

REGIONS = ("north", "south", "east", "west", "central")
PRODUCTS = ("basic", "plus", "pro", "enterprise")
WORDS = [
    "revenue",
    "churn",
    "pipeline",
    "quarter",
    "forecast",
    "margin",
    "hiring",
    "backlog",
    "customers",
    "renewal",
    "pricing",
    "onboarding",
    "latency",
    "incident",
    "roadmap",
    "budget",
    "partner",
    "launch",
    "retention",
    "support",
]


@dataclass(frozen=True)
class Input:
    name: str
    content_type: str
    body: bytes


def _csv(rng: random.Random) -> bytes:
    lines = ["month,region,product,revenue,units,refunds"]
    for _ in range(rng.randint(20, 60)):
        month = f"2026-{rng.randint(1, 12):02d}"
        revenue, units = rng.uniform(500, 90_000), rng.randint(1, 900)
        lines.append(
            f"{month},{rng.choice(REGIONS)},{rng.choice(PRODUCTS)},{revenue:.2f},{units},{rng.randint(0, 20)}"
        )
    return ("\n".join(lines) + "\n").encode()


def _json(rng: random.Random) -> bytes:
    records = [
        {
            "id": n,
            "account": f"acct-{rng.randint(1000, 9999)}",
            "plan": rng.choice(PRODUCTS),
            "seats": rng.randint(1, 500),
            "mrr": round(rng.uniform(20, 20_000), 2),
            "health": rng.choice(["green", "amber", "red"]),
        }
        for n in range(rng.randint(50, 150))
    ]
    return json.dumps({"accounts": records}).encode()


def _text(rng: random.Random) -> bytes:
    paragraphs = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 140))).capitalize() + "."
        for _ in range(rng.randint(10, 30))
    ]
    return "\n\n".join(paragraphs).encode()


def input_mix(count: int, seed: int = 12) -> list[Input]:
    rng = random.Random(seed)
    mix: list[Input] = []
    for n in range(count):
        share = n % 10
        if share < 5:
            mix.append(Input(f"sales-{n}.csv", "text/csv", _csv(rng)))
        elif share < 8:
            mix.append(Input(f"accounts-{n}.json", "application/json", _json(rng)))
        else:
            mix.append(Input(f"notes-{n}.txt", "text/plain", _text(rng)))
    return mix
