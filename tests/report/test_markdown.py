"""The Markdown parser: the block and inline subset a model writes, and never an exception."""

from __future__ import annotations

import random
import time

import pytest

from service.report.document import (
    BulletList,
    CodeBlock,
    Heading,
    Paragraph,
    Quote,
    Rule,
    Span,
    Table,
    plain_text,
)
from service.report.markdown import parse_inline, parse_markdown


def test_headings_of_every_level_keep_their_level_and_lose_closing_hashes() -> None:
    blocks = parse_markdown("# One\n## Two ##\n### Three\n#### Four\n###### Six")
    assert [(b.level, plain_text(b.spans)) for b in blocks if isinstance(b, Heading)] == [
        (1, "One"),
        (2, "Two"),
        (3, "Three"),
        (4, "Four"),
        (6, "Six"),
    ]


def test_hash_without_space_and_seven_hashes_are_paragraphs_not_headings() -> None:
    blocks = parse_markdown("#hashtag\n\n####### seven")
    assert all(isinstance(b, Paragraph) for b in blocks)
    assert [plain_text(b.spans) for b in blocks if isinstance(b, Paragraph)] == ["#hashtag", "####### seven"]


def test_setext_underlines_make_headings() -> None:
    blocks = parse_markdown("Title\n=====\n\nSection\n---\n")
    assert blocks == [Heading(1, (Span("Title"),)), Heading(2, (Span("Section"),))]


def test_consecutive_lines_join_into_one_paragraph_and_blank_lines_separate_them() -> None:
    blocks = parse_markdown("first line\nsecond line\n\nnext paragraph")
    assert blocks == [Paragraph((Span("first line second line"),)), Paragraph((Span("next paragraph"),))]


def test_bullet_lists_record_nesting_depth_and_continuation_lines() -> None:
    (block,) = parse_markdown("- top\n  - nested\n    - deeper\n      continued\n- back\n* star\n+ plus")
    assert isinstance(block, BulletList)
    assert [(i.depth, i.ordered, plain_text(i.spans)) for i in block.items] == [
        (0, False, "top"),
        (1, False, "nested"),
        (2, False, "deeper continued"),
        (0, False, "back"),
        (0, False, "star"),
        (0, False, "plus"),
    ]


def test_numbered_lists_keep_the_numbers_the_source_wrote_and_survive_blank_lines() -> None:
    (block,) = parse_markdown("1. one\n\n2) two\n   1. two-a\n10. ten")
    assert isinstance(block, BulletList)
    assert [(i.depth, i.ordered, i.number, plain_text(i.spans)) for i in block.items] == [
        (0, True, 1, "one"),
        (0, True, 2, "two"),
        (1, True, 1, "two-a"),
        (0, True, 10, "ten"),
    ]


def test_a_list_ends_at_a_paragraph_after_a_blank_line() -> None:
    blocks = parse_markdown("- a\n- b\n\nAfter the list.")
    assert [type(b) for b in blocks] == [BulletList, Paragraph]


def test_fenced_code_keeps_its_text_verbatim_and_its_language() -> None:
    blocks = parse_markdown("```python\ndef f():\n    return '**not bold**'\n```\nafter")
    assert blocks[0] == CodeBlock("def f():\n    return '**not bold**'", "python")
    assert blocks[1] == Paragraph((Span("after"),))


def test_an_unclosed_fence_runs_to_the_end_of_the_text() -> None:
    assert parse_markdown("~~~\ncode\n# not a heading") == [CodeBlock("code\n# not a heading", "")]


def test_block_quotes_keep_their_paragraphs() -> None:
    (block,) = parse_markdown("> first\n> still first\n>\n> second")
    assert block == Quote(((Span("first still first"),), (Span("second"),)))


@pytest.mark.parametrize("line", ["---", "***", "___", "- - -", " * * *"])
def test_horizontal_rules_in_every_spelling(line: str) -> None:
    assert parse_markdown(f"para\n\n{line}\n\nmore")[1] == Rule()


def test_pipe_tables_have_a_header_rows_of_equal_width_and_alignment() -> None:
    text = "| Region | Revenue | Note |\n|:--|--:|:-:|\n| EMEA | 1,200 | a \\| b |\n| APAC | 900 |\n"
    (table,) = parse_markdown(text)
    assert isinstance(table, Table)
    assert [plain_text(c) for c in table.header] == ["Region", "Revenue", "Note"]
    assert [[plain_text(c) for c in row] for row in table.rows] == [
        ["EMEA", "1,200", "a | b"],
        ["APAC", "900", ""],
    ]
    assert table.align == ("left", "right", "center")


def test_a_line_with_a_pipe_but_no_delimiter_row_is_a_paragraph() -> None:
    assert parse_markdown("a | b\nc | d") == [Paragraph((Span("a | b c | d"),))]


def test_inline_markup_becomes_styled_spans() -> None:
    spans = parse_inline("plain **bold** *italic* ***both*** `code` _under_ __strong__")
    assert spans == (
        Span("plain "),
        Span("bold", bold=True),
        Span(" "),
        Span("italic", italic=True),
        Span(" "),
        Span("both", bold=True, italic=True),
        Span(" "),
        Span("code", code=True),
        Span(" "),
        Span("under", italic=True),
        Span(" "),
        Span("strong", bold=True),
    )


def test_links_keep_their_label_and_show_a_web_address_for_print() -> None:
    assert plain_text(parse_inline("see [the docs](https://example.com/x)")) == (
        "see the docs (https://example.com/x)"
    )
    assert plain_text(parse_inline("[section](#anchor) and ![chart](c.png)")) == "section and chart"
    assert plain_text(parse_inline("<https://example.com>")) == "https://example.com"


def test_snake_case_escapes_and_unmatched_markers_stay_literal() -> None:
    assert plain_text(parse_inline("snake_case_name costs 5 * 3 and \\*not italic\\*")) == (
        "snake_case_name costs 5 * 3 and *not italic*"
    )
    assert plain_text(parse_inline("**unclosed bold")) == "**unclosed bold"


def test_windows_line_endings_and_tabs_are_normalised() -> None:
    assert parse_markdown("# Title\r\n\r\n-\titem\r\n") == parse_markdown("# Title\n\n- item\n")
    assert parse_markdown("old\rmac") == [Paragraph((Span("old mac"),))]


def test_empty_and_blank_text_give_no_blocks() -> None:
    assert parse_markdown("") == []
    assert parse_markdown(" \n\t\n  ") == []


_MARKUP = "#*_`~>|-+=:.[]!\\ \n\t1aZé“”—🚀日\r"


@pytest.mark.parametrize("seed", range(200))
def test_random_text_never_raises_and_keeps_its_letters(seed: int) -> None:
    """Fuzz: markup-heavy random strings parse, and no letter is lost (link targets aside: no parens)."""
    rng = random.Random(seed)
    text = "".join(rng.choice(_MARKUP) for _ in range(rng.randint(0, 400)))
    blocks = parse_markdown(text)
    kept = "".join(
        plain_text(s)
        for b in blocks
        for s in (
            [b.spans]
            if isinstance(b, (Heading, Paragraph))
            else [i.spans for i in b.items]
            if isinstance(b, BulletList)
            else list(b.paragraphs)
            if isinstance(b, Quote)
            else [*b.header, *(c for row in b.rows for c in row)]
            if isinstance(b, Table)
            else [(Span(b.language + b.text),)]
            if isinstance(b, CodeBlock)
            else []
        )
    )
    assert kept.count("Z") == text.count("Z")


@pytest.mark.parametrize("seed", range(100))
def test_random_unicode_never_raises(seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(
        chr(rng.choice([rng.randrange(0x20, 0x80), rng.randrange(0x80, 0x30000)])) for _ in range(300)
    )
    assert isinstance(parse_markdown(text.replace("a", "\n")), list)


@pytest.mark.parametrize(
    "text",
    [
        "*" * 20000,
        "`" * 20000,
        "[" * 20000 + "](",
        "[a](" * 10000,
        "![a](" * 10000,
        "*a " * 10000,
        "**a " * 10000,
        "_a " * 10000,
        "|\n" * 5000,
        "> " * 10000,
        "- " * 10000,
    ],
)
def test_pathological_input_parses_in_linear_time(text: str) -> None:
    """Stray markers in a long paragraph must not make the parser backtrack quadratically.

    2 s, not the old parser's 1 s: markdown-it is linear, but its pure-Python constant for failed link
    destinations (``![a](`` repeated) is ~20 microseconds a character; ~1 s here on a shared machine.
    """
    start = time.perf_counter()
    parse_markdown(text)
    assert time.perf_counter() - start < 2.0


def test_a_row_with_more_cells_than_the_header_widens_the_table_instead_of_dropping_data() -> None:
    (table,) = parse_markdown("| a | b |\n|---|---|\n| 1 | 2 | 3 |")
    assert isinstance(table, Table)
    assert [plain_text(c) for c in table.header] == ["a", "b", ""]
    assert [plain_text(c) for c in table.rows[0]] == ["1", "2", "3"]
    assert table.align == ("left", "left", "left")
