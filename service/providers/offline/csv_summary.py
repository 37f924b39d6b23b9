"""The offline summary of a CSV file: its shape, a profile of every column and a few sample rows."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter

from service.providers.offline.columns import (
    categories_section,
    column_findings,
    column_notes,
    numeric_section,
    overview_section,
    profile_column,
)
from service.providers.offline.common import NotParsed, Section, Summary, inline, parse_number, plural, table

SNIFF_CHARS = 8_192
SAMPLE_ROWS = 5
SAMPLE_COLUMNS = 8
MAX_COLUMNS = 50  # profiled in full; the report says how many more there are
MAX_ROWS = 100_000  # rows profiled; the counts still cover every row
MAX_NAMES = 10  # repeated column names listed
_DECIMAL_COMMA = re.compile(r"^\s*([+-]?\d+),(\d+)\s*$")
_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def summarize_csv(text: str) -> Summary:
    """Raises ``NotParsed`` when the text is not a table, so the caller can fall back to plain text."""
    rows, delimiter = read_rows(text)
    names, records = split_header(rows)
    if not records:
        raise NotParsed("it has no data rows")
    width = len(names)
    ragged = len(records) - [*map(len, records)].count(width)
    if ragged * 2 > len(records):
        raise NotParsed(
            f"{plural(ragged, 'row')} of {len(records):,} do not have the header's {width} fields"
        )
    comma_decimals = delimiter != ","  # "1,5" in a semicolon file is one and a half
    sample = records[:MAX_ROWS]
    profiles = [
        profile_column(name, _column(sample, i, comma_decimals)) for i, name in enumerate(names[:MAX_COLUMNS])
    ]
    shape = f"{plural(len(records), 'row')} and {plural(width, 'column')}"
    summary = Summary("CSV table", [f"{shape}, separated by {_DELIMITERS[delimiter]}s."])
    summary.findings += _sampling(width, len(records)) + column_findings(profiles, len(sample))
    sections = [overview_section(profiles, len(sample)), numeric_section(profiles)]
    sections += [categories_section(profiles), _sample_section(names, records)]
    summary.sections = [section for section in sections if section is not None]
    summary.notes = _table_notes(names, ragged) + column_notes(profiles, len(sample))
    return summary


def _sampling(width: int, rows: int) -> list[str]:
    """What the profiles leave out of a very wide or very long table."""
    said = []
    if width > MAX_COLUMNS:
        more = plural(width - MAX_COLUMNS, "more column")
        said.append(f"The first {MAX_COLUMNS} columns are profiled below; {more} are not.")
    if rows > MAX_ROWS:
        said.append(f"The column statistics below are from the first {MAX_ROWS:,} rows.")
    return said


def read_rows(text: str) -> tuple[list[list[str]], str]:
    """Non-blank rows and the delimiter; the dialect is sniffed from the start of the file."""
    sample = text[:SNIFF_CHARS]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters="".join(_DELIMITERS))
    except csv.Error:
        dialect = csv.excel  # the sniffer found nothing better than commas
    try:
        # strict: an unclosed quote must fail loudly, not swallow the rest of the file into one cell
        reader = csv.reader(io.StringIO(text), dialect, strict=True)
        rows = [row for row in reader if "".join(row).strip()]  # a row with a filled cell; C-speed
    except csv.Error as exc:
        raise NotParsed(f"the CSV reader stopped: {exc}") from exc
    if not rows:
        raise NotParsed("it holds no rows")
    return rows, dialect.delimiter if dialect.delimiter in _DELIMITERS else ","


def split_header(rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Column names and data rows; a first row made only of numbers is data, not a header."""
    first = rows[0]
    if all(parse_number(cell) is not None for cell in first):
        return [f"column {i + 1}" for i in range(len(first))], rows
    return [cell.strip() or f"column {i + 1}" for i, cell in enumerate(first)], rows[1:]


def _column(records: list[list[str]], index: int, comma_decimals: bool) -> list[str]:
    values = [record[index] if index < len(record) else "" for record in records]
    if comma_decimals:
        values = [_DECIMAL_COMMA.sub(r"\1.\2", value) for value in values]
    return values


def _cell(record: list[str], index: int) -> str:
    value = record[index] if index < len(record) else ""
    return inline(value, 24) if value.strip() else ""


def _sample_section(names: list[str], records: list[list[str]]) -> Section | None:
    if not records:
        return None
    shown = names[:SAMPLE_COLUMNS]
    rows = [[_cell(record, i) for i in range(len(shown))] for record in records[:SAMPLE_ROWS]]
    body = table([inline(name, 24) for name in shown], rows)
    if len(names) > len(shown):
        body += f"\n\nThe first {len(shown)} of {len(names)} columns are shown."
    return Section(f"First {plural(len(rows), 'row')}", body)


def _table_notes(names: list[str], ragged: int) -> list[str]:
    notes = []
    if ragged:
        notes.append(f"{plural(ragged, 'row')} have more or fewer fields than the header.")
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        listed = ", ".join(f"**{inline(name)}**" for name in repeated[:MAX_NAMES])
        more = f" and {len(repeated) - MAX_NAMES:,} more" if len(repeated) > MAX_NAMES else ""
        notes.append(f"Repeated column names: {listed}{more}.")
    return notes
