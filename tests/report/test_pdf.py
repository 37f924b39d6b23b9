"""The PDF renderer: what the report shows, how it flows over pages, odd text, and the process pool."""

from __future__ import annotations

import io
import statistics
import time
from typing import Any

import pytest
from pypdf import PdfReader

import service.report.painter as pdf_module
from bench.render import sample_document, sample_report_markdown
from service.core.errors import PermanentJobError
from service.report import pages
from service.report.painter import render_pdf
from tests.report.support import document, fonts_of, page_texts


def test_first_page_shows_title_date_model_source_and_the_markdown_content() -> None:
    pdf = render_pdf(document())
    assert pdf.startswith(b"%PDF-")
    (text,) = page_texts(pdf)
    for expected in [
        "Sales review",
        "Created: 2025-03-04 05:06 UTC",
        "Model: claude-opus-4-7",
        "Source: sales.csv (12.3 kB)",
        "Quarterly review",
        "Highlights",
        "An opening paragraph about revenue and margins, with code in it.",
        "First bullet point",
        "A nested bullet",
        "1. Numbered one",
        "2. Numbered two",
        "SELECT region, sum(revenue) FROM sales GROUP BY region;",
        "EMEA",
        "1,200",
        "Closing paragraph.",
        "Page 1 of 1",
    ]:
        assert expected in text
    assert "\u2022 First bullet point" in text  # a real bullet, not a '?'


def test_code_is_set_in_a_monospace_font_and_emphasis_in_embedded_bold_and_italic() -> None:
    """Subset fonts are named TAG+Name (six capitals): the embedded Noto faces, Courier for code."""
    names = {name.split("+")[-1] for name in fonts_of(render_pdf(document()))}
    assert names >= {"/Courier", "NotoSans", "NotoSans-Bold", "NotoSansItalic"}


def test_a_long_report_flows_over_several_pages_and_every_page_has_its_number() -> None:
    pages = page_texts(render_pdf(document(sample_report_markdown(12_000))))
    assert len(pages) >= 8
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in text


def test_nothing_is_cut_off_every_word_of_a_long_report_is_in_the_pdf() -> None:
    markdown = "\n\n".join(f"Paragraph {n} ends with marker-{n}." for n in range(400))
    text = "\n".join(page_texts(render_pdf(document(markdown))))
    assert all(f"marker-{n}." in text for n in range(400))


def test_text_stays_inside_the_page_margins_even_for_huge_words_and_wide_tables() -> None:
    """A URL longer than the line and a 12-column table are wrapped, never drawn off the page."""
    wide = "|" + "|".join(f"column {n}" for n in range(12)) + "|\n|" + "---|" * 12 + "\n|" + "x |" * 12
    markdown = f"{'https://example.com/' + 'a' * 400}\n\n{wide}\n\n```\n{'y' * 300}\n```"
    positions: list[tuple[float, float]] = []
    for page in PdfReader(io.BytesIO(render_pdf(document(markdown)))).pages:
        page.extract_text(
            visitor_text=lambda text, cm, tm, *_: positions.append((tm[4], tm[5])) if text.strip() else None
        )
    assert positions
    assert all(pages.MARGIN_X - 0.5 <= x < pages.PAGE_WIDTH - pages.MARGIN_X for x, _ in positions)
    assert all(0 < y < pages.PAGE_HEIGHT - pages.MARGIN_TOP for _, y in positions)


def test_a_table_longer_than_a_page_continues_on_the_next_page() -> None:
    rows = "\n".join(f"| row {n} | value {n} |" for n in range(150))
    pages = page_texts(render_pdf(document(f"| Name | Value |\n|---|---|\n{rows}")))
    assert len(pages) >= 3
    assert all(f"value {n}" in "\n".join(pages) for n in range(150))


def test_a_heading_is_never_left_alone_at_the_bottom_of_a_page() -> None:
    sections = [f"## Heading {n}\n\n" + "Body text of the section. " * (3 + n % 11) for n in range(60)]
    pages = page_texts(render_pdf(document("\n\n".join(sections))))
    assert len(pages) > 3
    for text in pages:
        last_line_before_footer = text.strip().splitlines()[-2]
        assert not last_line_before_footer.startswith("Heading")


def test_an_empty_report_still_has_its_header_and_page_number() -> None:
    (text,) = page_texts(render_pdf(document("")))
    assert "Sales review" in text
    assert "Page 1 of 1" in text


def test_the_offline_notice_appears_on_page_one_and_in_every_footer_only_when_offline() -> None:
    notice = "Written offline \u2014 no language model was used"
    offline_pages = page_texts(render_pdf(document(sample_report_markdown(4000), offline=True)))
    assert len(offline_pages) > 1
    assert offline_pages[0].count(notice) == 2  # the notice under the title and the footer
    assert all(notice in text for text in offline_pages)
    online_pages = page_texts(render_pdf(document(sample_report_markdown(4000))))
    assert not any("offline" in text.lower() for text in online_pages)


def test_unicode_heavy_text_renders_as_written_nothing_replaced() -> None:
    markdown = (
        "# Caf\u00e9 \u201cQ3\u201d \u2014 r\u00e9sum\u00e9\n\n"
        "Curly \u2018quotes\u2019, dashes \u2013 and \u2014, ellipsis\u2026, "
        "\u20ac5, 3\u00d74, na\u00efve.\n\n"
        "Emoji \U0001f680\U0001f44d\U0001f3fd, CJK \u65e5\u672c\u8a9e, Greek \u03b1\u03b2, "
        "arrows \u2192 \u2264, "
        "\u0142\u00f3d\u017a, zero\u200bwidth, combining e\u0301.\n\n"
        "- \u2022 bullet in text\n- \u00a0non-breaking\u00a0space\n\n"
        "| \U0001f600 | \u65e5 |\n|---|---|\n| \u2713 | \u2717 |\n\n```\nprint('\u03bb \U0001f600')\n```"
    )
    (text,) = page_texts(render_pdf(document(markdown, title="\u65e5\u672c \u201cTitle\u201d (\u03b2)")))
    assert "Caf\u00e9 \u201cQ3\u201d \u2014 r\u00e9sum\u00e9" in text
    assert (
        "Curly \u2018quotes\u2019, dashes \u2013 and \u2014, ellipsis\u2026, \u20ac5, 3\u00d74, na\u00efve."
        in text
    )
    assert (
        "Emoji \U0001f680\U0001f44d\U0001f3fd, CJK \u65e5\u672c\u8a9e, Greek \u03b1\u03b2, "
        "arrows \u2192 \u2264, "
        "\u0142\u00f3d\u017a, zero\u200bwidth, combining \u00e9." in text
    )
    assert "print('\u03bb \U0001f600')" in text
    assert "?" not in text


def test_random_unicode_never_makes_rendering_fail() -> None:
    import random

    rng = random.Random(5)
    for _ in range(10):
        markdown = "".join(
            chr(rng.randrange(0x20, 0x2FFFF)) if rng.random() < 0.5 else rng.choice("#*-|`\n ")
            for _ in range(800)
        )
        assert render_pdf(document(markdown, title=markdown[:40])).startswith(b"%PDF-")


def test_a_borb_failure_becomes_a_permanent_job_error_without_report_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Exploding:
        def visit(self, node: Any) -> None:
            raise AssertionError("secret report text")

    monkeypatch.setattr(pdf_module, "FacadeVisitor", Exploding)
    with pytest.raises(PermanentJobError) as caught:
        render_pdf(document())
    assert caught.value.reason == "the report could not be rendered as a PDF: AssertionError"


def test_rendering_leaves_no_cached_chunk_sizes_behind() -> None:
    """borb caches every Chunk's size in a process-wide cache; a long-lived pool process must not grow."""
    render_pdf(document())
    chunk: Any = getattr(pdf_module, "Chunk")  # noqa: B009  # borb's class, reached without importing borb
    assert chunk.get_size.cache_info().currsize == 0


def test_a_4000_token_report_renders_well_under_the_300_ms_budget() -> None:
    document = sample_document(4000)
    render_pdf(document)
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        render_pdf(document)
        timings.append(time.perf_counter() - start)
    assert statistics.median(timings) < 0.3
