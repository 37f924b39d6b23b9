"""Hostile answers render in bounded time: the PDF is cut at MAX_PAGES, tables folded at MAX_COLUMNS."""

from __future__ import annotations

import time

import pytest

from service.report.layout import MAX_PAGES, PAGES_NOTE
from service.report.painter import render_pdf
from tests.report.support import document, page_texts

HOSTILE = {
    # 33,000 one-word paragraphs: 950 pages, 45 s of borb before the page cap (its writer is quadratic)
    "tiny paragraphs": "p\n\n" * 33_000,
    "tiny list items": "- a\n" * 25_000,
    # one row of 30,000 cells: 110 s of layout before the column cap
    "a row of 30,000 cells": "|a|\n|-|\n|" + "x|" * 30_000 + "\n",
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_answers_render_well_within_the_render_deadline(case: str) -> None:
    start = time.process_time()
    pages = page_texts(render_pdf(document(HOSTILE[case])))
    assert (
        time.process_time() - start < 15.0
    )  # 1 to 5 s of CPU on a shared 2-core machine; the deadline: 60 s
    assert len(pages) <= MAX_PAGES


def test_a_report_past_the_page_cap_ends_with_a_note_on_its_last_page() -> None:
    pages = page_texts(render_pdf(document("p\n\n" * 33_000)))
    assert len(pages) == MAX_PAGES
    assert PAGES_NOTE.format(limit=MAX_PAGES) in pages[-1].replace("\n", " ")
    assert all(PAGES_NOTE.format(limit=MAX_PAGES) not in page for page in pages[:-1])
