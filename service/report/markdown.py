"""Markdown → typed blocks, parsed by markdown-it-py (CommonMark, GFM tables): the one module importing it.

markdown-it runs in time linear in the text, whatever the text (runs of backticks, unclosed emphasis,
blank lines inside a list), but its pure-Python constant reaches ~25 us a character of hostile markup: past
``MAX_CHARS`` the text is cut, and the report says so where it stops. The conversion never raises and
loses no words: raw HTML, link reference definitions and indented code stay text (as a model means them),
and containers nested past ``MAX_NESTING`` keep their rest as one plain paragraph (markdown-it would drop
it). Blocks the PDF cannot nest (code, tables, headings in list items) end the list and follow it; in a
quote everything becomes the quote's paragraphs. Spans carry only bold / italic / code flags.
"""

from __future__ import annotations

from collections.abc import Iterable

from markdown_it import MarkdownIt
from markdown_it.rules_block import StateBlock, table
from markdown_it.rules_block.table import escapedSplit, getLine
from markdown_it.token import Token

from service.report.document import (
    Block,
    BulletList,
    CodeBlock,
    Heading,
    ListItem,
    Paragraph,
    Quote,
    Rule,
    Span,
    Spans,
    Table,
    plain_text,
)

MAX_CHARS = 100_000  # ~25,000 tokens, 6x the default MAX_OUTPUT_TOKENS; the worst markup parses in ~2 s
MAX_NESTING = 16  # markdown-it token levels (a list level takes two); deeper content stays plain text
MAX_DEPTH = 5  # list items nested deeper are drawn at this depth: the page is only so wide
MAX_COLUMNS = 16  # table cells past it join the last one: thousands of columns would take minutes to lay out
CUT_NOTE = "[The rest of this report is not shown: it is longer than {limit:,} characters.]"
_ALIGN = {"text-align:left": "left", "text-align:center": "center", "text-align:right": "right"}
_STYLE = {"strong_open": (1, 0), "strong_close": (-1, 0), "em_open": (0, 1), "em_close": (0, -1)}


def _too_deep(state: StateBlock, start: int, end: int, silent: bool) -> bool:
    """Past the nesting cap, the rest of the container is one paragraph of its text (markdown-it's own cap,
    which bounds its recursion, would drop the text)."""
    if silent or state.level < MAX_NESTING:
        return False
    stop = start + 1
    while stop < end and (state.isEmpty(stop) or state.sCount[stop] >= state.blkIndent):
        stop += 1
    state.push("paragraph_open", "p", 1).map = [start, stop]
    inline = state.push("inline", "", 0)
    inline.content = state.getLines(start, stop, state.blkIndent, False).strip()
    inline.map, inline.children = [start, stop], []
    state.push("paragraph_close", "p", -1)
    state.line = stop
    return True


def _wide_table(state: StateBlock, start: int, end: int, silent: bool) -> bool:
    """GFM tables, remembering each row's cells: GFM drops those past the header's, the report keeps them."""
    first = len(state.tokens)
    if not table(state, start, end, silent):
        return False
    for token in state.tokens[first:]:
        if token.type == "tr_open" and token.map:
            cells = [cell.strip() for cell in escapedSplit(getLine(state, token.map[0]).strip())]
            if len(cells) > 1 and not cells[-1]:  # the closing pipe
                cells.pop()
            token.meta["cells"] = cells[1:] if cells and not cells[0] else cells  # the opening one
    return True


_MD = MarkdownIt("commonmark", {"html": False, "maxNesting": MAX_NESTING + 4})  # +4: _too_deep acts first
_MD.enable("table").disable(["code", "reference", "html_block", "html_inline"])
_MD.block.ruler.before("table", "too_deep", _too_deep)
_MD.block.ruler.at("table", _wide_table)


def parse_markdown(text: str) -> list[Block]:
    """Parse ``text`` into blocks; never raises, and unknown constructs become paragraphs."""
    note: list[Block] = []
    if len(text) > MAX_CHARS:
        cut = text.rfind("\n", MAX_CHARS // 2, MAX_CHARS)
        text = text[: cut if cut > 0 else MAX_CHARS]
        note = [Paragraph((Span(CUT_NOTE.format(limit=MAX_CHARS), italic=True),))]
    try:
        return _Blocks().convert(_MD.parse(text)) + note
    except Exception:  # a parser bug must not fail a report: its words, unstyled, are better than nothing
        return [Paragraph((Span(block),)) for block in text.split("\n\n") if block.strip()] + note


def parse_inline(text: str) -> Spans:
    """Reduce inline Markdown to styled spans; adjacent spans in the same style are merged."""
    tokens = _MD.parseInline(text)
    return _spans(tokens[0].children or []) if tokens else ()


def _spans(tokens: list[Token], bold: int = 0, italic: int = 0) -> Spans:
    raw: list[Span] = []
    links: list[tuple[int, str]] = []  # where each open link's label starts, and its printable address
    for token in tokens:
        kind = token.type
        if kind in _STYLE:
            bold, italic = bold + _STYLE[kind][0], italic + _STYLE[kind][1]
        elif kind in ("text", "code_inline"):
            raw.append(Span(token.content, bold > 0, italic > 0, kind == "code_inline"))
        elif kind in ("softbreak", "hardbreak"):
            raw.append(Span(" ", bold > 0, italic > 0))
        elif kind == "image":  # the alt text stands in for the picture; its nesting is bounded by the parser
            raw.extend(_spans(token.children or [], bold, italic))
        elif kind == "link_open":
            url = (
                "" if token.markup == "autolink" else _MD.normalizeLinkText(str(token.attrGet("href") or ""))
            )
            links.append((len(raw), url))
        elif kind == "link_close" and links:
            start, url = links.pop()
            # a printed report cannot be clicked: keep an http(s) address readable next to its label
            if url.startswith(("http://", "https://")) and url != plain_text(tuple(raw[start:])):
                raw.append(Span(f" ({url})", bold > 0, italic > 0))
    return _merged(raw)


def _merged(spans: Iterable[Span]) -> Spans:
    """The spans without empty ones, each run of spans in the same style made one."""
    merged: list[Span] = []
    for span in spans:
        last = merged[-1] if merged else None
        if last is not None and (last.bold, last.italic, last.code) == (span.bold, span.italic, span.code):
            merged[-1] = Span(last.text + span.text, span.bold, span.italic, span.code)
        elif span.text:
            merged.append(span)
    return tuple(merged)


def _table(tokens: list[Token], start: int) -> tuple[Table, int]:
    """The table whose ``table_open`` is at ``start``, widened to its longest row; the index after it."""
    rows: list[list[Spans]] = []
    align: list[str] = []
    i = start + 1
    while i < len(tokens) and tokens[i].type != "table_close":
        token = tokens[i]
        if token.type == "tr_open":
            rows.append([])
            extra = token.meta.get("cells", [])
        elif token.type == "th_open":
            align.append(_ALIGN.get(str(token.attrGet("style") or ""), "left"))
        elif token.type == "inline" and rows:
            rows[-1].append(_spans(token.children or []))
        elif token.type == "tr_close" and rows:
            rows[-1] += [parse_inline(cell) for cell in extra[len(rows[-1]) :]]
        i += 1
    width = min(max(len(row) for row in rows), MAX_COLUMNS)
    cells = [tuple(_fold(row, width) + [()] * (width - len(row))) for row in rows]
    return Table(cells[0], tuple(cells[1:]), tuple((align + ["left"] * width)[:width])), i + 1


def _fold(row: list[Spans], width: int) -> list[Spans]:
    """The cells of ``row`` past ``width`` joined into its last one: nothing is lost."""
    return row if len(row) <= width else [*row[: width - 1], _piped(row[width - 1 :])]


def _piped(cells: Iterable[Spans]) -> Spans:
    return _merged([span for cell in cells for span in (Span(" | "), *cell)][1:])


class _Blocks:
    """Walks markdown-it's flat token stream once, keeping the containers open at the current token."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.items: list[ListItem] = []  # the list being built: consecutive top-level lists merge
        self.lists: list[bool] = []  # the open lists, innermost last: ordered or not
        self.open_items: list[int | None] = []  # per open item: its index in ``items`` once emitted
        self.pending: tuple[int, bool, int] | None = None  # an item opened, not yet emitted
        self.quote: list[Spans] = []
        self.quotes = 0  # open quotes; inside one, every leaf becomes one of its paragraphs
        self.marker: Span | None = None  # the marker of a list item inside a quote, until its text comes
        self.heading = 0  # the level of the open heading, 0 outside one

    def convert(self, tokens: list[Token]) -> list[Block]:
        i = 0
        while i < len(tokens):
            if tokens[i].type == "table_open":
                block, i = _table(tokens, i)
                self._leaf(block)
            else:
                getattr(self, "_on_" + tokens[i].type, lambda token: None)(tokens[i])
                i += 1
        self._flush()
        return self.blocks

    def _on_heading_open(self, token: Token) -> None:
        self.heading = int(token.tag[1:])  # "h1" to "h6"

    def _on_inline(self, token: Token) -> None:
        spans = _spans(token.children or [])
        self._leaf(Heading(self.heading, spans) if self.heading else Paragraph(spans))
        self.heading = 0  # a heading holds this one inline token

    def _on_fence(self, token: Token) -> None:
        self._leaf(CodeBlock(token.content.removesuffix("\n"), token.info.strip()))

    def _on_hr(self, token: Token) -> None:
        self._leaf(Rule())

    def _on_bullet_list_open(self, token: Token) -> None:
        self._emit_pending(())
        self.lists.append(token.type == "ordered_list_open")

    _on_ordered_list_open = _on_bullet_list_open

    def _on_bullet_list_close(self, token: Token) -> None:
        self.lists.pop()

    _on_ordered_list_close = _on_bullet_list_close

    def _on_list_item_open(self, token: Token) -> None:
        ordered = bool(self.lists and self.lists[-1])
        number = int(token.info) if ordered and token.info.isdigit() else 0
        self.open_items.append(None)
        if self.quotes:  # a list inside a quote: its items are paragraphs starting with their marker
            self.marker = Span(f"{number}. " if ordered else "\u2022 ")
        else:
            self.pending = (min(len(self.lists) - 1, MAX_DEPTH), ordered, number)

    def _on_list_item_close(self, token: Token) -> None:
        self._emit_pending(())
        if self.quotes and self.marker is not None:
            self.quote.append((self.marker,))
        self.marker = None
        self.open_items.pop()

    def _on_blockquote_open(self, token: Token) -> None:
        if not self.quotes:
            self._emit_pending(())
            self._flush()
        self.quotes += 1

    def _on_blockquote_close(self, token: Token) -> None:
        self.quotes -= 1
        if not self.quotes:
            self.blocks.append(Quote(tuple(self.quote)))
            self.quote = []

    def _emit_pending(self, spans: Spans) -> None:
        if self.pending is None or self.quotes:
            return
        self.items.append(ListItem(*self.pending, spans))
        self.open_items[-1] = len(self.items) - 1
        self.pending = None

    def _leaf(self, block: Block) -> None:
        """A block that holds no other: into the open quote, the open list item, or the document."""
        if self.quotes:
            self._into_quote(block)
        elif self.open_items and isinstance(block, Paragraph):
            self._into_item(block.spans)
        else:
            self._emit_pending(())
            self._flush()
            self.blocks.append(block)

    def _into_item(self, spans: Spans) -> None:
        if self.pending is not None:
            self._emit_pending(spans)
            return
        index = self.open_items[-1]
        if index is not None and index == len(self.items) - 1:  # a later paragraph of the last item
            last = self.items[index]
            self.items[index] = ListItem(
                last.depth, last.ordered, last.number, _merged((*last.spans, Span(" "), *spans))
            )
            return
        self._flush()  # a paragraph after the item's nested items: it follows the list, in order
        self.blocks.append(Paragraph(spans))

    def _into_quote(self, block: Block) -> None:
        spans: Spans = ()
        if isinstance(block, Paragraph):
            spans = block.spans
        elif isinstance(block, Heading):
            spans = tuple(Span(span.text, True, span.italic, span.code) for span in block.spans)
        elif isinstance(block, CodeBlock):
            spans = (Span(" ".join(block.text.split()), code=True),)
        elif isinstance(block, Table):
            self.quote += [_piped(row) for row in (block.header, *block.rows)]
        if spans:
            self.quote.append((self.marker, *spans) if self.marker is not None else spans)
            self.marker = None

    def _flush(self) -> None:
        if self.items:
            self.blocks.append(BulletList(tuple(self.items)))
            self.items = []
            self.open_items = [None] * len(self.open_items)
