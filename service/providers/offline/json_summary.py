"""The offline summary of a JSON (or JSON Lines) file: structure outline, sizes, and record statistics."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from itertools import accumulate, islice
from typing import Any

from service.providers.offline.columns import (
    categories_section,
    column_findings,
    column_notes,
    numeric_section,
    overview_section,
    profile_column,
)
from service.providers.offline.common import NotParsed, Section, Summary, fmt_number, inline, plural

SAMPLE = 1_000  # values looked at per level of the outline: enough for the shape, bounded on big files
MAX_OUTLINE_LINES = 40
MAX_OUTLINE_DEPTH = 4
MAX_KEYS = 25
MAX_FIELDS = 60  # record fields profiled as columns
MAX_RECORDS = 10_000  # records profiled; the counts still cover every record
MAX_NESTING = 200  # deeper documents are not parsed (the parser would recurse that deep): they are text
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)  # possessive: never backtracks, even unclosed
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


@dataclass(frozen=True)
class Census:
    objects: int
    arrays: int
    scalars: int
    depth: int


def summarize_json(text: str) -> Summary:
    """Raises ``NotParsed`` when the text is neither JSON nor JSON Lines."""
    data, as_lines = load_json(text)
    summary = Summary("JSON Lines document" if as_lines else "JSON document")
    census = take_census(data)
    first = (
        f"One JSON document per line: {plural(len(data), 'line')}." if as_lines else top_level_finding(data)
    )
    summary.findings = [
        first,
        f"Values sit up to {plural(census.depth, 'level')} deep: {plural(census.objects, 'object')}, "
        f"{plural(census.arrays, 'array')} and {plural(census.scalars, 'plain value')} in all.",
    ]
    summary.sections = [Section("Structure", "\n".join(outline(data)))]
    found = main_records(data)
    if found is not None:
        _add_records(summary, *found)
    return summary


def load_json(text: str) -> tuple[Any, bool]:
    """The parsed document and whether it came as JSON Lines (one document per line)."""
    _check_nesting(text)
    try:
        return _loads(text), False
    except json.JSONDecodeError as exc:
        records = _json_lines(text)
        if records is None:
            raise NotParsed(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
        return records, True


def _check_nesting(text: str) -> None:
    """Raises ``NotParsed`` past ``MAX_NESTING`` levels: linear, without recursion, strings left out.

    Up to its first error the parser nests exactly as deep as the brackets before it, so the deepest
    prefix bounds its recursion whether or not the text is valid.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > MAX_NESTING:
        raise NotParsed(f"it is nested too deeply to read (more than {MAX_NESTING} levels)")


def _loads(text: str) -> Any:
    """``json.loads``, with integers too long for Python's limit (4,300 digits) or for a float read as
    floats (infinite): 300 digits are plenty for any real figure, and the summary never fails on one."""
    return json.loads(text, parse_int=lambda digits: int(digits) if len(digits) <= 300 else float(digits))


def _json_lines(text: str) -> list[Any] | None:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    try:
        for line in lines:
            _check_nesting(line)  # a line deeper than the whole: earlier lines can close more than they open
        return [_loads(line) for line in lines]
    except (ValueError, NotParsed):
        return None


def take_census(data: Any) -> Census:
    """Counts every value without recursion, so deep documents cannot exhaust the stack."""
    objects = arrays = scalars = depth = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, level = stack.pop()
        depth = max(depth, level)
        if isinstance(value, dict):
            objects += 1
            stack.extend((child, level + 1) for child in value.values())
        elif isinstance(value, list):
            arrays += 1
            stack.extend((child, level + 1) for child in value)
        else:
            scalars += 1
    return Census(objects, arrays, scalars, depth)


def top_level_finding(data: Any) -> str:
    if isinstance(data, dict):
        keys = ", ".join(f"`{_key(key)}`" for key in list(data)[:8])
        more = f" and {len(data) - 8:,} more" if len(data) > 8 else ""
        listed = f": {keys}{more}." if data else "."
        return f"The top level is an object with {plural(len(data), 'key')}{listed}"
    if isinstance(data, list):
        kinds = Counter(_kind(item) for item in data)
        mix = ", ".join(f"{count:,} {kind}s" for kind, count in kinds.most_common())
        return f"The top level is an array of {plural(len(data), 'item')}" + (f": {mix}." if data else ".")
    return f"The document is a single {_kind(data)}."


# --- the outline ------------------------------------------------------------------------------------


def outline(data: Any) -> list[str]:
    """A nested bullet list of the document's shape; the items of arrays are merged into one shape."""
    lines: list[str] = []
    _describe([data], "top level", 0, lines)
    if len(lines) >= MAX_OUTLINE_LINES:
        lines.append("- …(outline cut short)")
    return lines


def _describe(values: list[Any], label: str, depth: int, lines: list[str]) -> None:
    if len(lines) >= MAX_OUTLINE_LINES:
        return
    lines.append(f"{'  ' * depth}- {label}: {_shape(values[:SAMPLE])}")
    if depth >= MAX_OUTLINE_DEPTH:
        return
    objects = [value for value in values[:SAMPLE] if isinstance(value, dict)]
    for key in _keys(objects)[:MAX_KEYS]:
        present = [obj[key] for obj in objects if key in obj]
        share = "" if len(present) == len(objects) else f" (in {len(present):,} of {len(objects):,})"
        _describe(present, f"`{_key(key)}`{share}", depth + 1, lines)
    items = list(
        islice((item for value in values[:SAMPLE] if isinstance(value, list) for item in value), SAMPLE)
    )
    if items:
        _describe(items, "items", depth + 1, lines)


def _shape(sample: list[Any]) -> str:
    kinds = Counter(_kind(value) for value in sample)
    return " or ".join(_kind_detail(kind, sample) for kind, _ in kinds.most_common())


def _kind_detail(kind: str, sample: list[Any]) -> str:
    if kind == "array":
        return f"array of {_span([len(v) for v in sample if isinstance(v, list)], 'item')}"
    if kind == "object":
        return f"object with {_span([len(v) for v in sample if isinstance(v, dict)], 'key')}"
    if kind == "number":
        numbers = [float(v) for v in sample if _kind(v) == "number"]
        low, high = fmt_number(min(numbers)), fmt_number(max(numbers))
        return f"number ({low})" if low == high else f"number ({low} to {high})"
    return kind


def _span(sizes: list[int], word: str) -> str:
    low, high = min(sizes), max(sizes)
    return plural(low, word) if low == high else f"{low:,} to {high:,} {word}s"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    return "array" if isinstance(value, list) else "string"


def _keys(objects: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for obj in objects for key in obj))


def _key(key: str) -> str:
    return inline(key.replace("`", "'"), 40).replace("\\", "")


# --- records: a list of objects, profiled like table columns --------------------------------------------


def main_records(data: Any) -> tuple[str, list[dict[str, Any]]] | None:
    """The list of objects the document is about: the top level, or its longest array of objects."""
    if isinstance(data, list):
        records = [item for item in data if isinstance(item, dict)]
        return ("the top-level array", records) if records and len(records) * 2 >= len(data) else None
    if not isinstance(data, dict):
        return None
    candidates = [
        (f"`{_key(key)}`", [item for item in value if isinstance(item, dict)])
        for key, value in data.items()
        if isinstance(value, list)
    ]
    candidates = [(where, records) for where, records in candidates if records]
    return max(candidates, key=lambda found: len(found[1])) if candidates else None


def _add_records(summary: Summary, where: str, records: list[dict[str, Any]]) -> None:
    sample = records[:MAX_RECORDS]
    fields, plain = _fields(sample)
    columns = {key: [_cell(record.get(key)) for record in sample] for key in plain[:MAX_FIELDS]}
    profiles = [profile_column(key, values) for key, values in columns.items()]
    among = f" in the first {len(sample):,}" if len(sample) < len(records) else ""
    summary.findings.append(
        f"{plural(len(records), 'record')} in {where}, with {plural(len(fields), 'field')}{among}."
    )
    if among:
        summary.findings.append(f"The field statistics below are from the first {len(sample):,} records.")
    if len(plain) > MAX_FIELDS:
        summary.findings.append(
            f"The first {MAX_FIELDS} fields with plain values are profiled; "
            f"{plural(len(plain) - MAX_FIELDS, 'more field')} are not."
        )
    summary.findings += column_findings(profiles, len(sample))[1:]  # the types are in the table
    sections = [overview_section(profiles, len(sample), "Record fields"), numeric_section(profiles)]
    sections.append(categories_section(profiles))
    summary.sections += [section for section in sections if section is not None]
    summary.notes += column_notes(profiles, len(sample))


def _fields(records: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Every key in first-seen order, and those that hold a plain value in some record: one pass."""
    plain_in: dict[str, bool] = {}
    for record in records:
        for key, value in record.items():
            if not plain_in.get(key):
                plain_in[key] = _is_scalar(value)
    return list(plain_in), [key for key, plain in plain_in.items() if plain]


def _is_scalar(value: Any) -> bool:
    """Nested values are described by the outline; only plain ones make sense as table columns."""
    return value is not None and not isinstance(value, dict | list)


def _cell(value: Any) -> str:
    """A record's value as a table cell: scalars as text, absent and null as blank, nested as a tag."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return f"[{_kind(value)}]"
    return str(value)
