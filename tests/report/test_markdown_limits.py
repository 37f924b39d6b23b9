"""The Markdown parser's limits: hostile answers parse in linear time, are cut past a cap, nest boundedly."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import pytest

from bench.render import sample_report_markdown
from service.report import markdown
from service.report.document import (
    Block,
    BulletList,
    CodeBlock,
    Heading,
    Paragraph,
    Quote,
    Span,
    Table,
    plain_text,
)
from service.report.markdown import CUT_NOTE, MAX_CHARS, MAX_COLUMNS, MAX_DEPTH, parse_markdown


def words(blocks: list[Block]) -> str:
    """Every piece of text the blocks hold, in order."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading | Paragraph):
            out.append(plain_text(block.spans))
        elif isinstance(block, BulletList):
            out += [plain_text(item.spans) for item in block.items]
        elif isinstance(block, Quote):
            out += [plain_text(spans) for spans in block.paragraphs]
        elif isinstance(block, CodeBlock):
            out.append(block.text)
        elif isinstance(block, Table):
            out += [plain_text(cell) for row in (block.header, *block.rows) for cell in row]
    return " ".join(out)


def ends_with_the_cut_note(blocks: list[Block]) -> bool:
    last = blocks[-1]
    return isinstance(last, Paragraph) and plain_text(last.spans) == CUT_NOTE.format(limit=MAX_CHARS)


def parse_seconds(text: str) -> float:
    """CPU time of one parse (other processes on a shared machine do not inflate it), after a collection
    (garbage left by earlier tests is not collected in the middle of it)."""
    gc.collect()
    start = time.process_time()
    parse_markdown(text)
    return time.process_time() - start


HOSTILE: dict[str, tuple[Callable[[int], str], int]] = {
    "backticks": (lambda n: "`" * n, 20_000),
    "blank lines inside a list": (lambda n: "- first\n" + "\n" * n + "  still the first item\n", 20_000),
    "nested quotes": (lambda n: "> " * n + "deep", 10_000),
    "nested lists": (lambda n: "- " * n + "deep", 10_000),
    "nested numbered lists in quotes": (lambda n: "> 1. " * n + "deep", 10_000),
    "unclosed emphasis": (lambda n: "*a " * n, 50_000),  # 150,000 characters: cut at MAX_CHARS
    "unclosed strong emphasis": (lambda n: "__a " * n, 20_000),
    "unclosed links": (lambda n: "[a](" * n, 20_000),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_answers_parse_quickly_and_in_linear_time(case: str) -> None:
    """At N (the size named) well under 2 s, and N takes at most 8x the time of N/4: no quadratic blowup.

    Four rounds, each timing N/4 then N back to back; the best round's ratio counts, since a busy spell
    can only make one round look worse, while a quadratic parser shows 16x in every round (a linear one
    4x: the wide margin between them keeps a shared machine's noise from failing a linear parser).
    """
    make, n = HOSTILE[case]
    quarter_text, full_text = make(n // 4), make(n)
    rounds = [(parse_seconds(quarter_text), parse_seconds(full_text)) for _ in range(4)]
    quarter, full = min(rounds, key=lambda times: times[1] / max(times[0], 0.01))
    assert min(times[1] for times in rounds) < 2.0, f"{case}: {full:.2f} s"
    assert full <= 8 * max(quarter, 0.01), f"{case}: {quarter:.3f} s at N/4, {full:.3f} s at N"


def test_a_2_mb_answer_is_cut_at_the_cap_with_a_visible_note_and_parses_quickly() -> None:
    answer = sample_report_markdown(500_000)
    assert len(answer) >= 2_000_000
    start = time.process_time()
    blocks = parse_markdown(answer)
    assert time.process_time() - start < 2.0
    assert ends_with_the_cut_note(blocks)
    assert len(words(blocks)) < MAX_CHARS


def test_the_worst_markup_found_still_parses_in_bounded_time_at_the_cap() -> None:
    """A run of '[' costs markdown-it the most per character (~25 us): the cap keeps it to seconds."""
    start = time.process_time()
    blocks = parse_markdown("[" * 2_000_000)
    assert time.process_time() - start < 8.0  # ~2-4 s of CPU on a shared 2-core machine; RENDER_TIMEOUT: 60 s
    assert ends_with_the_cut_note(blocks)


def test_an_answer_under_the_cap_has_no_note() -> None:
    assert "not shown" not in words(parse_markdown("word " * (MAX_CHARS // 5 - 1)))


@pytest.mark.parametrize(
    "text",
    ["> " * 10_000 + "deepZ", "- " * 10_000 + "deepZ", "1. " * 10_000 + "deepZ", "> - " * 5_000 + "deepZ"],
    ids=["quotes", "bullets", "numbers", "mixed"],
)
def test_nesting_past_the_cap_keeps_the_deep_text_and_never_recurses_without_bound(text: str) -> None:
    blocks = parse_markdown(text + "\n\nafterZ")
    assert words(blocks).count("deepZ") == 1
    assert isinstance(blocks[-1], Paragraph) and plain_text(blocks[-1].spans) == "afterZ"


def test_list_depth_is_capped_where_it_is_drawn() -> None:
    (block,) = parse_markdown("".join("  " * i + f"- item {i}\n" for i in range(7)))
    assert isinstance(block, BulletList)
    assert [item.depth for item in block.items] == [0, 1, 2, 3, 4, MAX_DEPTH, MAX_DEPTH]
    assert words([block]).endswith("item 5 item 6")


def test_a_code_block_inside_a_list_item_follows_the_items_before_it() -> None:
    blocks = parse_markdown("1. Run it:\n\n   ```bash\n   make run\n   ```\n2. Open the page")
    assert [type(b) for b in blocks] == [BulletList, CodeBlock, BulletList]
    assert blocks[1] == CodeBlock("make run", "bash")
    assert words(blocks) == "Run it: make run Open the page"


def test_a_list_inside_a_quote_becomes_paragraphs_with_their_markers() -> None:
    (quote,) = parse_markdown("> - one\n> - two\n>\n> 3. three")
    assert isinstance(quote, Quote)
    assert [plain_text(p) for p in quote.paragraphs] == ["\u2022 one", "\u2022 two", "3. three"]


def test_raw_html_and_link_reference_definitions_stay_text() -> None:
    blocks = parse_markdown("<div>kept</div>\n\n[ref]: https://example.com\n\nsee [ref]")
    assert words(blocks) == "<div>kept</div> [ref]: https://example.com see [ref]"


def test_a_later_paragraph_of_a_list_item_joins_its_text() -> None:
    (block,) = parse_markdown("- first\n\n  more about first\n- second")
    assert isinstance(block, BulletList)
    assert [plain_text(item.spans) for item in block.items] == ["first more about first", "second"]


def test_a_parser_failure_still_gives_the_text_as_paragraphs(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(text: str) -> None:
        raise RuntimeError("block rule didn't increment state.line")

    monkeypatch.setattr(markdown._MD, "parse", broken)
    assert parse_markdown("# Title\n\nbody *text*") == [
        Paragraph((Span("# Title"),)),
        Paragraph((Span("body *text*"),)),
    ]


def test_a_table_wider_than_the_cap_folds_the_rest_of_each_row_into_its_last_cell() -> None:
    width = MAX_COLUMNS + 4
    header = "|" + "|".join(f"h{n}" for n in range(width)) + "|"
    row = "|" + "|".join(f"c{n}" for n in range(width + 2)) + "|"  # two cells more than the header
    (table,) = parse_markdown(f"{header}\n|{'---|' * width}\n{row}")
    assert isinstance(table, Table)
    assert len(table.header) == len(table.rows[0]) == len(table.align) == MAX_COLUMNS
    assert plain_text(table.header[-1]) == " | ".join(f"h{n}" for n in range(MAX_COLUMNS - 1, width))
    assert plain_text(table.rows[0][-1]) == " | ".join(f"c{n}" for n in range(MAX_COLUMNS - 1, width + 2))
