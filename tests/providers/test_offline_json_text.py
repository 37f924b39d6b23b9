"""The offline summaries of JSON (structure, records) and of plain text (counts, terms, an excerpt)."""

from __future__ import annotations

import json

import pytest

from service.providers.offline.json_summary import outline, summarize_json
from service.providers.offline.text_summary import text_stats
from tests.providers.support import ORDERS, report


def test_json_reports_top_level_type_key_counts_and_nesting() -> None:
    summary = summarize_json(json.dumps(ORDERS))
    assert summary.findings[0] == "The top level is an object with 3 keys: `company`, `orders`, `meta`."
    assert "20 records in `orders`, with 4 fields." in summary.findings
    assert "Values sit up to 6 levels deep" in summary.findings[1]  # ...orders[].items[].sku


def test_json_outline_shows_nested_structure_and_array_lengths() -> None:
    lines = outline(ORDERS)
    assert "- top level: object with 3 keys" in lines
    assert "  - `orders`: array of 20 items" in lines
    assert "      - `amount`: number (1.5 to 30)" in lines
    assert "      - `items`: array of 1 to 3 items" in lines
    assert "    - `tags`: array of 2 items" in lines


def test_json_records_get_numeric_field_stats() -> None:
    out = report(json.dumps(ORDERS), "orders.json", "application/json")
    assert "| amount | 20 | 1.5 | 30 | 15.75 | 15.75 | 315 |" in out
    assert "Most common **status**: paid (15 of 20, 75%)." in out
    assert "| items |" not in out  # nested fields are in the outline, not the table


def test_json_lines_are_read_as_one_document_a_line() -> None:
    summary = summarize_json('{"a": 1}\n{"a": 2, "b": "x"}\n')
    assert summary.kind == "JSON Lines document"
    assert summary.findings[0] == "One JSON document per line: 2 lines."
    assert "2 records in the top-level array, with 2 fields." in summary.findings


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param('{"a": [1, 2', "invalid JSON at line 1, column 12", id="truncated"),
        pytest.param("[" * 100_000 + "]" * 100_000, "nested too deeply", id="too-deep"),
        pytest.param("", "invalid JSON at line 1, column 1", id="empty"),
    ],
)
def test_a_malformed_json_falls_back_to_the_text_summary_and_says_so(text: str, why: str) -> None:
    out = report(text, "broken.json", "application/json")
    assert "The file did not parse as JSON" in out
    assert why in out


def test_a_json_scalar_is_described() -> None:
    assert "The document is a single number." in report("42", "n.json", "application/json")


def test_text_counts_characters_words_lines_sentences_and_paragraphs() -> None:
    stats = text_stats("Revenue grew. Costs fell!\n\nWhy? Revenue again.\n")
    assert (stats.chars, stats.words, stats.lines, stats.non_empty_lines) == (47, 7, 3, 2)
    assert (stats.sentences, stats.paragraphs) == (4, 2)


def test_top_terms_leave_out_stop_words() -> None:
    stats = text_stats(
        "The revenue and the margin. The revenue would have been higher with the margin revenue."
    )
    assert stats.top_terms[:2] == [("revenue", 3), ("margin", 2)]
    assert all(term not in {"the", "and", "would", "have", "been", "with"} for term, _ in stats.top_terms)


def test_the_text_excerpt_shows_the_first_lines_in_a_fence_the_data_cannot_close() -> None:
    out = report("first line\n```\nthird line\n" + "more\n" * 50, "notes.txt", "text/plain")
    excerpt = out[out.index("## Opening lines") :]
    assert excerpt.count("````") == 2  # a fence longer than the backticks inside
    assert "first line\n```\nthird line" in excerpt
    assert excerpt.count("more") == 5  # 8 non-empty lines at most
