"""The offline provider: right statistics for CSV, JSON and text, safe on bad input, streamed, repeatable."""

from __future__ import annotations

import itertools
import json
import random
import socket
import time
from typing import Any

import pytest

from service.providers.base import PROGRESS_INTERVAL_SECONDS, CallUsage, ReportRequest
from service.providers.offline.columns import profile_column
from service.providers.offline.common import fmt_number, inline, parse_number
from service.providers.offline.csv_summary import summarize_csv
from service.providers.offline.provider import (
    OFFLINE_NOTICE,
    OfflineProvider,
    detect_format,
    render_offline_report,
)
from tests.providers.support import ORDERS, report

SALES = """region,units,price,date,active,comment
North,10,2.50,2024-01-01,yes,first
South,20,3.50,2024-01-02,no,
North,,4.00,2024-01-03,yes,
East,30,1.00,2024-01-04,yes,
"""


def big_csv(target_bytes: int = 2_000_000) -> str:
    rnd = random.Random(7)
    lines = ["order_id,date,region,product,units,unit_price,revenue,customer,notes"]
    size, n = len(lines[0]), 0
    while size < target_bytes:
        n += 1
        units, price = rnd.randint(1, 50), round(rnd.uniform(1, 200), 2)
        note = "" if rnd.random() < 0.7 else "call back"
        day = f"2024-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
        line = (
            f"{n},{day},{rnd.choice('NSEW')},P{rnd.randint(1, 40)},"
            f"{units},{price},{units * price:.2f},cust{rnd.randint(1, 5000)},{note}"
        )
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


# --- CSV ----------------------------------------------------------------------------------------------


def test_csv_numeric_columns_get_count_min_max_mean_median_sum() -> None:
    text = report(SALES, "sales.csv", "text/csv")
    assert "| units | 3 | 10 | 30 | 20 | 20 | 60 |" in text
    assert "| price | 4 | 1 | 4 | 2.75 | 3 | 11 |" in text
    assert "4 rows and 6 columns, separated by commas." in text


def test_csv_columns_get_a_type_guess_and_missing_and_distinct_counts() -> None:
    text = report(SALES, "sales.csv", "text/csv")
    assert "| region | text | 4 | 0 | 3 |" in text
    assert "| units | integer | 3 | 1 | 3 |" in text
    assert "| price | decimal | 4 | 0 | 4 |" in text
    assert "| date | date | 4 | 0 | 4 |" in text
    assert "| active | boolean | 4 | 0 | 2 |" in text
    assert "| comment | text | 1 | 3 | 1 |" in text
    assert "**comment** is 75% empty." in text


def test_csv_text_columns_list_their_top_values_and_dates_their_range() -> None:
    text = report(SALES, "sales.csv", "text/csv")
    assert "**region**: 3 distinct values; most common: North (2), South (1), East (1)." in text
    assert "**date**: dates from 2024-01-01 to 2024-01-04." in text


def test_a_semicolon_csv_with_decimal_commas_reads_as_numbers() -> None:
    summary = summarize_csv("item;weight\nbolt;1,5\nnut;2,5\n")
    text = "\n".join(section.body for section in summary.sections)
    assert "| weight | 2 | 1.5 | 2.5 | 2 | 2 | 4 |" in text
    assert "separated by semicolons" in summary.findings[0]


def test_a_csv_whose_first_row_is_numbers_has_no_header() -> None:
    summary = summarize_csv("1,2\n3,4\n")
    assert summary.findings[0].startswith("2 rows and 2 columns")
    assert "column 1" in summary.sections[0].body


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param(
            'name,comment\nann,"never closed\nbob,ok\n', "unexpected end of data", id="unclosed-quote"
        ),
        pytest.param("just prose, with commas, here\nand more\nand a line, or two\n", "fields", id="ragged"),
        pytest.param("a,b\n", "no data rows", id="header-only"),
        pytest.param("", "no rows", id="empty"),
    ],
)
def test_a_malformed_csv_falls_back_to_the_text_summary_and_says_so(text: str, why: str) -> None:
    out = report(text, "broken.csv", "text/csv")
    assert "The file did not parse as CSV" in out
    assert why in out
    assert OFFLINE_NOTICE in out


def test_values_from_the_data_cannot_break_the_markdown() -> None:
    out = report('name,score\n"a|b",1\n"# heading",2\n"x\x00y",3\n', "odd.csv", "text/csv")
    assert "a\\|b" in out
    assert "\\# heading" in out
    assert "\x00" not in out


# --- column profiles and numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (["1", "2", "3"], "integer"),
        (["1.5", "2", "-3.25"], "decimal"),
        (["$1,200", "45%", "7"], "integer"),
        (["2024-01-01", "2024-02-01T10:00:00Z"], "date"),
        (["yes", "no", "Yes"], "boolean"),
        (["red", "green", "1"], "text"),
        (["", "NA", "null"], "empty"),
    ],
)
def test_column_types_are_guessed_from_the_filled_values(values: list[str], kind: str) -> None:
    assert profile_column("c", values).kind == kind


def test_a_mostly_numeric_column_counts_the_values_that_do_not_fit() -> None:
    profile = profile_column("price", [str(n) for n in range(19)] + ["n.a."])
    assert (profile.kind, profile.misfits, profile.filled) == ("integer", 1, 20)
    assert profile.numbers is not None
    assert profile.numbers.total == sum(range(19))


def test_numbers_parse_as_people_export_them() -> None:
    assert [parse_number(v) for v in ["12", "-3.5", "1,234.50", "$12", "45%", "1e3"]] == [
        12,
        -3.5,
        1234.5,
        12,
        45,
        1000,
    ]
    assert [parse_number(v) for v in ["1,2,3", "abc", "nan", "inf", ""]] == [None] * 5
    assert [fmt_number(v) for v in [3, 7.333, 2556.356, 0.0012345, -0.5]] == [
        "3",
        "7.33",
        "2,556.36",
        "0.00123",
        "-0.5",
    ]


def test_inline_values_are_one_line_capped_and_escaped() -> None:
    assert inline("a\nb   c") == "a b c"
    assert inline("x" * 50, 10) == "x" * 9 + "…"
    assert inline("*bold* [link]") == "\\*bold\\* \\[link\\]"
    assert inline("  ") == "(blank)"


# --- the report and the provider ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "content_type"),
    [
        (SALES, "sales.csv", "text/csv"),
        (json.dumps(ORDERS), "o.json", "application/json"),
        ("Hi.", "a", "text/plain"),
    ],
)
def test_every_report_says_at_the_top_that_it_was_written_offline(
    text: str, name: str, content_type: str
) -> None:
    lines = report(text, name, content_type).splitlines()
    assert lines[0] == f"# Offline summary of {inline(name, 80)}"
    assert lines[2] == OFFLINE_NOTICE
    assert "without a language model" in OFFLINE_NOTICE
    assert "## Key findings" in lines


def test_formats_are_detected_from_the_type_then_the_extension() -> None:
    assert detect_format("text/csv", "x") == "csv"
    assert detect_format("application/octet-stream", "x.JSONL") == "json"
    assert detect_format("text/plain", "x.tsv") == "csv"
    assert detect_format("application/json; charset=utf-8", "x") == "json"
    assert detect_format("text/markdown", "x.md") == "text"


def test_the_same_input_gives_the_same_report() -> None:
    assert report(SALES, "s.csv", "text/csv") == report(SALES, "s.csv", "text/csv")
    data = json.dumps(ORDERS)
    assert report(data, "o.json", "application/json") == report(data, "o.json", "application/json")


async def test_the_provider_streams_with_rising_estimates_then_the_final_count() -> None:
    heard: list[tuple[float, int]] = []

    async def on_output(usage: CallUsage) -> None:
        heard.append((time.monotonic(), usage.output_tokens))

    request = ReportRequest(SALES, "sales.csv", "text/csv", "ignored", 1000)
    answer = await OfflineProvider(chunk_delay=0.2).write_report(request, on_output)  # a few intervals
    counts = [tokens for _, tokens in heard]
    assert len(counts) >= 3
    assert counts == sorted(counts)
    assert counts[-1] == answer.output_tokens == len(answer.text) // 4
    estimates = [at for at, _ in heard[:-1]]
    assert all(
        later - earlier >= PROGRESS_INTERVAL_SECONDS - 0.01
        for earlier, later in itertools.pairwise(estimates)
    )
    assert (answer.model, answer.offline, answer.input_tokens) == ("offline", True, len(SALES) // 4)
    assert answer.text == report(SALES, "sales.csv", "text/csv")


async def test_the_provider_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No connection but the local one to the fork server (a Unix socket) that starts the summary's process;
    the summary itself, which the patch cannot follow into that process, is checked here in-process."""
    connect = socket.socket.connect

    def refuse(self: socket.socket, *args: Any, **kwargs: Any) -> None:
        if self.family != socket.AF_UNIX:
            raise AssertionError("the offline provider opened a connection")
        connect(self, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    request = ReportRequest("Hello.", "a.txt", "text/plain", "m", 9)
    answer = await OfflineProvider(chunk_delay=0).write_report(request)
    assert answer.offline
    assert render_offline_report(request) == answer.text
    with socket.socket() as probe, pytest.raises(AssertionError, match="opened a connection"):
        probe.connect(("127.0.0.1", 9))  # the patch does refuse the network


async def test_a_2_mb_csv_is_summarised_in_well_under_a_few_seconds() -> None:
    text = big_csv()
    started = time.perf_counter()
    answer = await OfflineProvider(chunk_delay=0).write_report(
        ReportRequest(text, "big.csv", "text/csv", "m", 9)
    )
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, (
        f"took {elapsed:.2f} s"
    )  # ~0.3 s on a 2-core machine; the bound only catches blowups
    assert "rows and 9 columns" in answer.text
