"""Shared pieces of the offline summaries: the summary shape, number formatting and Markdown helpers."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field

# Cell values that mean "no value" in exported data, compared lower-cased and stripped.
MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "none", "nil", "-", "--", "?", "#n/a"})
_NUMBER_NOISE = re.compile(r"^[\s$€£¥]*([+-]?)[\s$€£¥]*([\d,._]+(?:[eE][+-]?\d+)?)\s*%?\s*$")
_THOUSANDS = re.compile(r"^\d{1,3}(,\d{3})+(\.\d+)?$")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class NotParsed(ValueError):
    """The input is not valid in the format its name or type claims; ``reason`` says why, briefly."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Section:
    heading: str
    body: str


@dataclass
class Summary:
    """What a format summariser found: headline bullets, detailed sections, data-quality notes."""

    kind: str  # "CSV table", "JSON document", "text"
    findings: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NumericStats:
    count: int
    minimum: float
    maximum: float
    mean: float
    median: float
    total: float


def numeric_stats(values: list[float]) -> NumericStats:
    total = math.fsum(values)
    return NumericStats(
        len(values), min(values), max(values), total / len(values), statistics.median(values), total
    )


def is_missing(value: str) -> bool:
    return value.strip().lower() in MISSING_MARKERS


def parse_number(value: str) -> float | None:
    """A number as people export them: ``12``, ``-3.5``, ``1,234.50``, ``$12``, ``45%``; else None."""
    number: float | None
    try:
        number = float(value)
    except ValueError:
        number = _parse_noisy_number(value)
    return number if number is not None and math.isfinite(number) else None


def _parse_noisy_number(value: str) -> float | None:
    match = _NUMBER_NOISE.match(value)
    if match is None:
        return None
    sign, digits = match.groups()
    if "," in digits:
        if not _THOUSANDS.match(digits):
            return None
        digits = digits.replace(",", "")
    try:
        return float(sign + digits)
    except ValueError:
        return None


def fmt_number(value: float) -> str:
    """Deterministic, readable: separators, at most 2 decimals, 3 significant digits below 1."""
    value = float(value)  # ints have no is_integer() before Python 3.12
    if abs(value) >= 1e15:
        return f"{value:.3e}"
    if abs(value) >= 1 or value == 0:
        text = f"{value:,.2f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    return f"{value:.3g}"


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "0%"


def plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


def inline(text: str, limit: int = 40) -> str:
    """A value from the data, safe inside Markdown text or a table cell: one line, capped, escaped."""
    flat = " ".join(_CONTROL.sub("", text).split())
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat) if flat else "(blank)"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; cells must already be made safe with ``inline`` or be our own text."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fenced(lines: list[str]) -> str:
    """A code block whose fence is longer than any backtick run inside, so the data cannot close it."""
    lines = [_CONTROL.sub("", line) for line in lines]
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return "\n".join([fence, *lines, fence])
