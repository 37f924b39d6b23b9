"""The offline provider on hostile inputs: linear summaries, bounded reports, no exceptions, a deadline."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path

import pytest

from service.core.errors import JobTimedOut
from service.providers.base import ReportRequest
from service.providers.offline.csv_summary import MAX_COLUMNS, MAX_ROWS
from service.providers.offline.json_summary import MAX_FIELDS, MAX_NESTING, MAX_RECORDS, summarize_json
from service.providers.offline.provider import OfflineProvider
from tests.fakes.stuck import hanging_summary, process_is_gone, runs
from tests.providers.support import report


def distinct_keys(records: int) -> str:
    """Records that each have fields of their own: the shape that made the summary quadratic."""
    return json.dumps(
        [{f"field_{n:06d}": n, f"label_{n:06d}": f"v{n}", "shared": n % 7} for n in range(records)]
    )


async def summarise(text: str, name: str, content_type: str) -> tuple[str, float]:
    """The report through the provider (in its own process, as a job gets it) and the seconds it took."""
    start = time.monotonic()
    answer = await OfflineProvider(chunk_delay=0).write_report(
        ReportRequest(text, name, content_type, "m", 9)
    )
    return answer.text, time.monotonic() - start


async def test_a_2_mb_json_upload_with_tens_of_thousands_of_distinct_keys_is_summarised_in_seconds() -> None:
    text = distinct_keys(40_000)
    assert len(text) >= 2_000_000
    out, seconds = await summarise(text, "keys.json", "application/json")
    assert seconds < 5.0, f"took {seconds:.2f} s"  # ~1 s on a shared 2-core machine; tens of minutes before
    assert f"40,000 records in the top-level array, with 20,001 fields in the first {MAX_RECORDS:,}." in out
    assert f"The field statistics below are from the first {MAX_RECORDS:,} records." in out
    assert f"The first {MAX_FIELDS} fields with plain values are profiled; 19,941 more fields are not." in out


def test_the_json_summary_is_linear_in_distinct_keys() -> None:
    """Twice the distinct keys takes at most three times as long (the old code took four times).

    CPU time, four rounds of half then all the keys back to back, the best round's ratio: a busy spell on
    a shared machine can only make one round look worse, while a quadratic summary shows 4x in every one.
    """

    def seconds(text: str) -> float:
        gc.collect()
        start = time.process_time()
        summarize_json(text)
        return time.process_time() - start

    half, full = distinct_keys(MAX_RECORDS // 2), distinct_keys(MAX_RECORDS)  # 10,001 and 20,001 keys
    rounds = [(seconds(half), seconds(full)) for _ in range(4)]
    small, large = min(rounds, key=lambda times: times[1] / max(times[0], 0.02))
    assert large <= 3 * max(small, 0.02), f"{small:.3f} s for half the keys, {large:.3f} s for all"


def test_ten_thousand_records_are_profiled_in_full_and_fast() -> None:
    records = [{"id": n, "region": "NSEW"[n % 4], "revenue": n * 1.5} for n in range(10_000)]
    start = time.process_time()
    out = report(json.dumps(records), "orders.json", "application/json")
    assert time.process_time() - start < 2.0
    assert "10,000 records in the top-level array, with 3 fields." in out
    assert "from the first" not in out
    assert "| revenue | 10,000 | 0 | 14,998.5 |" in out


async def test_a_20_000_column_csv_gives_a_bounded_report() -> None:
    header = ",".join(f"col{n}" for n in range(20_000))
    rows = "\n".join(",".join(str(n * row) for n in range(20_000)) for row in range(1, 6))
    out, seconds = await summarise(f"{header}\n{rows}\n", "wide.csv", "text/csv")
    assert seconds < 5.0
    assert "5 rows and 20,000 columns" in out
    assert f"The first {MAX_COLUMNS} columns are profiled below; 19,950 more columns are not." in out
    assert len(out) < 20_000, f"{len(out):,} characters of report"
    assert "col49" in out and "col50" not in out


def test_a_million_row_csv_is_counted_in_full_and_profiled_from_its_first_rows() -> None:
    start = time.process_time()
    out = report("n\n" + "1\n" * 1_000_000, "long.csv", "text/csv")
    assert time.process_time() - start < 5.0
    assert "1,000,000 rows and 1 column" in out
    assert f"The column statistics below are from the first {MAX_ROWS:,} rows." in out


def test_many_repeated_column_names_are_listed_briefly() -> None:
    header = ",".join(f"c{n % 5_000}" for n in range(10_000))
    out = report(header + "\n" + ",".join("1" for _ in range(10_000)) + "\n", "twice.csv", "text/csv")
    assert "and 4,990 more." in out
    assert len(out) < 20_000


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param("[" * 100_000, "nested too deeply", id="100,000 unclosed"),
        pytest.param("[" * 100_000 + "]" * 100_000, "nested too deeply", id="100,000 closed"),
        pytest.param('{"a": ' * 50_000 + "1" + "}" * 50_000, "nested too deeply", id="50,000 objects"),
        pytest.param("]" * 5_000 + "\n" + "[" * 5_000 + "]" * 5_000, "invalid JSON", id="deep second line"),
        pytest.param('"' + '\\"[' * 50_000, "invalid JSON", id="brackets in an unclosed string"),
    ],
)
def test_json_nested_too_deep_is_summarised_as_text_and_says_why(text: str, why: str) -> None:
    out = report(text, "deep.json", "application/json")
    assert "The file did not parse as JSON" in out and why in out
    assert "so it is summarised as text" in out


def test_json_just_under_the_nesting_cap_is_still_read_as_json() -> None:
    out = report("[" * MAX_NESTING + "]" * MAX_NESTING, "deep.json", "application/json")
    assert f"Values sit up to {MAX_NESTING} levels deep" in out


@pytest.mark.parametrize("digits", [400, 5_000], ids=["past a float", "past Python's int limit"])
def test_json_with_a_huge_number_is_summarised(digits: int) -> None:
    out = report(
        json.dumps({"rows": [{"n": 1}, {"n": 2}]})[:-1] + f', "big": 1{"0" * digits}}}', "n.json", ""
    )
    assert "2 records in `rows`, with 1 field." in out
    assert "- `big`: number (inf)" in out  # too long for a float: read as one, infinite
    assert "did not parse" not in out


async def test_a_summary_that_hangs_is_killed_at_its_deadline(tmp_path: Path) -> None:
    log = tmp_path / "summary"
    provider = OfflineProvider(chunk_delay=0, summary_timeout=1.0, summarize=hanging_summary)
    start = time.monotonic()
    with pytest.raises(JobTimedOut, match=r"SUMMARY_TIMEOUT_SECONDS \(1s\)"):
        await provider.write_report(ReportRequest("data", str(log), "text/plain", "m", 9))
    assert 0.95 <= time.monotonic() - start < 2.5  # 1 s, plus starting the process
    (pid,) = runs(log)
    assert process_is_gone(pid)
