"""Column profiles for tabular data (CSV rows, JSON records): type guess, gaps, statistics, top values."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from service.providers.offline.common import (
    NumericStats,
    Section,
    fmt_number,
    inline,
    is_missing,
    numeric_stats,
    parse_number,
    percent,
    plural,
    table,
)

# Share of the filled values that must fit a type for the column to be given that type.
TYPE_THRESHOLD = 0.9
MAX_TABLE_COLUMNS = 60
TOP_VALUES = 5
_DATE = re.compile(r"^\d{4}[-/]\d{2}[-/]\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?)?$")
_BOOLEANS = frozenset({"true", "false", "yes", "no", "y", "n", "t", "f"})
_ID_NAME = re.compile(r"(^|[\s_-])id$|^id([\s_-]|$)", re.IGNORECASE)
NUMERIC_KINDS = ("integer", "decimal")


@dataclass(frozen=True)
class ColumnProfile:
    name: str
    kind: str  # integer, decimal, date, boolean, text or empty
    filled: int
    missing: int
    distinct: int
    misfits: int = 0  # filled values that do not fit ``kind``
    numbers: NumericStats | None = None
    top: tuple[tuple[str, int], ...] = ()
    first: str | None = None  # earliest date, for date columns
    last: str | None = None

    @property
    def looks_like_id(self) -> bool:
        return self.kind == "integer" and self.distinct == self.filled and bool(_ID_NAME.search(self.name))


def profile_column(name: str, values: list[str]) -> ColumnProfile:
    """Classifies a column from its values; each distinct value is parsed once, so repeats are cheap."""
    counts = Counter(value.strip() for value in values if not is_missing(value))
    filled = sum(counts.values())
    missing, distinct = len(values) - filled, len(counts)
    if not filled:
        return ColumnProfile(name, "empty", 0, missing, 0)
    numbers, written = _numbers(counts)
    if len(numbers) >= TYPE_THRESHOLD * filled:
        integral = all(n.is_integer() for n in numbers) and not any("." in value for value in written)
        kind = "integer" if integral else "decimal"
        stats = numeric_stats(numbers)
        return ColumnProfile(name, kind, filled, missing, distinct, filled - len(numbers), stats)
    top = tuple(counts.most_common(TOP_VALUES))
    dates = sorted(value for value in counts if _DATE.match(value))
    dated = sum(counts[value] for value in dates)
    if dated >= TYPE_THRESHOLD * filled:
        return ColumnProfile(
            name, "date", filled, missing, distinct, filled - dated, None, top, dates[0], dates[-1]
        )
    flags = sum(count for value, count in counts.items() if value.lower() in _BOOLEANS)
    if flags >= TYPE_THRESHOLD * filled:
        return ColumnProfile(name, "boolean", filled, missing, distinct, filled - flags, None, top)
    return ColumnProfile(name, "text", filled, missing, distinct, 0, None, top)


def _numbers(counts: Counter[str]) -> tuple[list[float], list[str]]:
    """Every value that is a number, repeats included, and how those numbers were written."""
    numbers: list[float] = []
    written: list[str] = []
    for value, count in counts.items():
        number = parse_number(value)
        if number is not None:
            numbers.extend([number] * count)
            written.append(value)
    return numbers, written


# --- Markdown -------------------------------------------------------------------------------------


def _name(profile: ColumnProfile) -> str:
    return f"**{inline(profile.name)}**"


def overview_section(profiles: list[ColumnProfile], rows: int, heading: str = "Columns") -> Section:
    shown = profiles[:MAX_TABLE_COLUMNS]
    body = table(
        ["Column", "Type", "Filled", "Missing", "Distinct"],
        [[inline(p.name), p.kind, f"{p.filled:,}", f"{p.missing:,}", f"{p.distinct:,}"] for p in shown],
    )
    if len(profiles) > len(shown):
        body += f"\n\n…and {plural(len(profiles) - len(shown), 'more column')}."
    return Section(heading, body)


def numeric_section(profiles: list[ColumnProfile]) -> Section | None:
    rows = [
        [inline(p.name), *(fmt_number(v) for v in (n.count, n.minimum, n.maximum, n.mean, n.median, n.total))]
        for p in profiles[:MAX_TABLE_COLUMNS]
        if (n := p.numbers) is not None
    ]
    if not rows:
        return None
    return Section("Numeric columns", table(["Column", "Count", "Min", "Max", "Mean", "Median", "Sum"], rows))


def categories_section(profiles: list[ColumnProfile]) -> Section | None:
    lines = []
    for p in profiles[:MAX_TABLE_COLUMNS]:
        if p.kind in ("text", "boolean"):
            tops = ", ".join(f"{inline(value)} ({count:,})" for value, count in p.top)
            lines.append(f"- {_name(p)}: {plural(p.distinct, 'distinct value')}; most common: {tops}.")
        elif p.kind == "date" and p.first is not None and p.last is not None:
            lines.append(f"- {_name(p)}: dates from {inline(p.first)} to {inline(p.last)}.")
    return Section("Text and date columns", "\n".join(lines)) if lines else None


def column_findings(profiles: list[ColumnProfile], rows: int) -> list[str]:
    kinds = Counter("numeric" if p.kind in NUMERIC_KINDS else p.kind for p in profiles)
    mix = ", ".join(
        f"{count} {kind}" for kind, count in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    findings = [f"Column types: {mix}."]
    measures = [p for p in profiles if p.numbers is not None and not p.looks_like_id][:3]
    for p in measures:
        assert p.numbers is not None
        n = p.numbers
        findings.append(
            f"{_name(p)} totals {fmt_number(n.total)} and averages {fmt_number(n.mean)} "
            f"(median {fmt_number(n.median)}, from {fmt_number(n.minimum)} to {fmt_number(n.maximum)})."
        )
    categories = [p for p in profiles if p.kind == "text" and p.top and p.distinct * 2 <= p.filled][:2]
    for p in categories:
        value, count = p.top[0]
        share = f"{count:,} of {p.filled:,}, {percent(count, p.filled)}"
        findings.append(f"Most common {_name(p)}: {inline(value)} ({share}).")
    findings.append(_missing_finding(profiles, rows))
    return findings


def _missing_finding(profiles: list[ColumnProfile], rows: int) -> str:
    gaps = [p for p in profiles if p.missing]
    if not gaps:
        return "No missing values."
    worst = max(gaps, key=lambda p: p.missing)
    total = sum(p.missing for p in gaps)
    return (
        f"{plural(total, 'missing value')} across {plural(len(gaps), 'column')}; the most in {_name(worst)} "
        f"({percent(worst.missing, rows)} of rows)."
    )


def column_notes(profiles: list[ColumnProfile], rows: int) -> list[str]:
    notes = []
    for p in profiles:
        if p.kind == "empty":
            notes.append(f"{_name(p)} is entirely empty.")
        elif rows and p.missing * 5 > rows:
            notes.append(f"{_name(p)} is {percent(p.missing, rows)} empty.")
        if p.misfits:
            notes.append(
                f"{_name(p)} is mostly {p.kind} but has {plural(p.misfits, 'value')} that do not fit."
            )
        if p.distinct == 1 and p.filled > 1:
            only = fmt_number(p.numbers.minimum) if p.numbers is not None else inline(p.top[0][0])
            notes.append(f"{_name(p)} holds the same value in every filled row ({only}).")
    return notes
