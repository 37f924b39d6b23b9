"""Markdown → typed blocks: the small subset a model writes in a report, parsed without dependencies.

The parser is line-based and forgiving: it never raises, whatever the text. Anything it does not
recognise becomes a paragraph, so no words are ever lost. Inline markup is reduced to spans that carry
only bold / italic / code flags, which is all the PDF renderer can draw cheaply with the standard fonts.
"""

from __future__ import annotations

import re

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

_MAX_DEPTH = 5  # deeper nesting is drawn at this depth: the page is only so wide
_MAX_INLINE_NESTING = 4  # emphasis inside emphasis deeper than this is kept as literal text

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*(.*?)[ \t]*$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_QUOTE = re.compile(r"^ {0,3}>[ \t]?(.*)$")
_ITEM = re.compile(r"^([ \t]*)([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$")
_TABLE_DELIMITER = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_INLINE = re.compile(  # every span is bounded, so a paragraph of stray markers stays linear to scan
    r"""\\(?P<esc>[!-/:-@\[-`{-~])
    | (?P<ticks>`+)(?P<code>.{1,1000}?)(?P=ticks)
    | !\[(?P<alt>[^\]]{0,500}+)\]\([^)]{0,2000}+\)
    | \[(?P<label>[^\]]{1,500}+)\]\((?P<url>[^)\s]{0,2000}+)(?:\s[^)]{0,500}+)?\)
    | <(?P<auto>https?://[^>\s]{1,2000}+)>
    | (?P<sd3>\*\*\*|___)(?=\S)(?P<strong_em>.{1,500}?)(?<=\S)(?P=sd3)
    | (?P<sd>\*\*|__)(?=\S)(?P<strong>.{1,500}?)(?<=\S)(?P=sd)
    | \*(?=[^\s*])(?P<em>.{1,500}?)(?<=[^\s*])\*
    | (?<!\w)_(?=[^\s_])(?P<em2>.{1,500}?)(?<=[^\s_])_(?!\w)""",
    re.VERBOSE,
)


def parse_markdown(text: str) -> list[Block]:
    """Parse ``text`` into blocks; never raises, and unknown constructs become paragraphs."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4).split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        block, i = _parse_block(lines, i)
        blocks.append(block)
    return blocks


def _parse_block(lines: list[str], i: int) -> tuple[Block, int]:
    """Parse the block starting at non-blank line ``i``; return it and the index after it."""
    line = lines[i]
    if fence := _FENCE.match(line):
        return _parse_code(lines, i, fence.group(1), fence.group(2))
    if heading := _HEADING.match(line):
        return Heading(len(heading.group(1)), parse_inline(heading.group(2) or "")), i + 1
    if _RULE.match(line):
        return Rule(), i + 1
    if _QUOTE.match(line):
        return _parse_quote(lines, i)
    if _ITEM.match(line):
        return _parse_list(lines, i)
    if _is_table_start(lines, i):
        return _parse_table(lines, i)
    return _parse_paragraph(lines, i)


def _starts_block(lines: list[str], i: int) -> bool:
    """Whether line ``i`` interrupts a paragraph (CommonMark-like, a little more eager)."""
    line = lines[i]
    return bool(
        not line.strip()
        or _FENCE.match(line)
        or _HEADING.match(line)
        or _RULE.match(line)
        or _QUOTE.match(line)
        or _ITEM.match(line)
        or _is_table_start(lines, i)
    )


def _parse_code(lines: list[str], i: int, fence: str, language: str) -> tuple[CodeBlock, int]:
    closing = re.compile(r"^ {0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$")
    body: list[str] = []
    j = i + 1
    while j < len(lines) and not closing.match(lines[j]):
        body.append(lines[j])
        j += 1
    return CodeBlock("\n".join(body), language), j + 1  # an unclosed fence runs to the end


def _parse_quote(lines: list[str], i: int) -> tuple[Quote, int]:
    paragraphs: list[Spans] = []
    current: list[str] = []
    while i < len(lines) and (match := _QUOTE.match(lines[i])):
        content = match.group(1).strip()
        if content:
            current.append(content.lstrip(">").strip())
        elif current:
            paragraphs.append(parse_inline(" ".join(current)))
            current = []
        i += 1
    if current:
        paragraphs.append(parse_inline(" ".join(current)))
    return Quote(tuple(paragraphs)), i


def _parse_list(lines: list[str], i: int) -> tuple[BulletList, int]:
    items: list[tuple[int, bool, int, list[str]]] = []
    indents: list[int] = []  # indentation of each open nesting level
    while i < len(lines):
        match = _ITEM.match(lines[i])
        if match is None:
            if lines[i].strip() and not _starts_block(lines, i):
                items[-1][3].append(lines[i].strip())  # a continuation line of the previous item
                i += 1
                continue
            if not lines[i].strip() and _next_is_item(lines, i):
                i += 1  # a blank line between items does not end the list
                continue
            break
        indent = len(match.group(1))
        while indents and indent < indents[-1]:
            indents.pop()
        if not indents or indent > indents[-1]:
            indents.append(indent)
        marker = match.group(2)
        ordered = marker[0].isdigit()
        number = int(marker[:-1]) if ordered else 0
        items.append((min(len(indents) - 1, _MAX_DEPTH), ordered, number, [match.group(3) or ""]))
        i += 1
    return BulletList(tuple(ListItem(d, o, n, parse_inline(" ".join(t).strip())) for d, o, n, t in items)), i


def _next_is_item(lines: list[str], i: int) -> bool:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i < len(lines) and _ITEM.match(lines[i]) is not None


def _is_table_start(lines: list[str], i: int) -> bool:
    return (
        "|" in lines[i]
        and i + 1 < len(lines)
        and "-" in lines[i + 1]
        and ("|" in lines[i + 1] or lines[i].strip().startswith("|"))
        and _TABLE_DELIMITER.match(lines[i + 1]) is not None
    )


def _split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())
    if cells and not cells[0].strip():
        cells = cells[1:]
    if cells and not cells[-1].strip():
        cells = cells[:-1]
    return [cell.strip().replace("\\|", "|") for cell in cells]


def _parse_table(lines: list[str], i: int) -> tuple[Table, int]:
    header, specs = _split_row(lines[i]), _split_row(lines[i + 1])
    raw_rows: list[list[str]] = []
    j = i + 2
    while j < len(lines) and lines[j].strip() and "|" in lines[j]:
        raw_rows.append(_split_row(lines[j]))
        j += 1
    width = max(len(row) for row in [header, *raw_rows, [""]])  # a cell too many widens the table
    align = []
    for spec in (specs + ["-"] * width)[:width]:
        right, left = spec.endswith(":"), spec.startswith(":")
        align.append("center" if left and right else "right" if right else "left")
    cells = [
        tuple(parse_inline(cell) for cell in (row + [""] * width)[:width]) for row in [header, *raw_rows]
    ]
    return Table(cells[0], tuple(cells[1:]), tuple(align)), j


def _parse_paragraph(lines: list[str], i: int) -> tuple[Block, int]:
    text = [lines[i].strip()]
    i += 1
    while i < len(lines) and not _starts_block(lines, i):
        if setext := _SETEXT.match(lines[i]):
            level = 1 if setext.group(1).startswith("=") else 2
            return Heading(level, parse_inline(" ".join(text))), i + 1
        text.append(lines[i].strip())
        i += 1
    if i < len(lines) and _RULE.match(lines[i]) and lines[i].strip().startswith("-"):
        return Heading(2, parse_inline(" ".join(text))), i + 1  # "Title\n---" is a setext heading
    return Paragraph(parse_inline(" ".join(text))), i


def parse_inline(text: str, bold: bool = False, italic: bool = False, _nesting: int = 0) -> Spans:
    """Reduce inline Markdown to styled spans; adjacent spans in the same style are merged."""
    spans: list[Span] = []
    position = 0
    if _nesting <= _MAX_INLINE_NESTING:
        for match in _INLINE.finditer(text):
            _append(spans, Span(text[position : match.start()], bold, italic))
            spans.extend(_inline_match(match, bold, italic, _nesting))
            position = match.end()
    _append(spans, Span(text[position:], bold, italic))
    merged: list[Span] = []
    for span in spans:
        _append(merged, span)
    return tuple(merged)


def _inline_match(match: re.Match[str], bold: bool, italic: bool, nesting: int) -> Spans:
    group = match.groupdict()
    if group["esc"] is not None:
        return (Span(group["esc"], bold, italic),)
    if group["code"] is not None:
        return (Span(group["code"].strip() or group["code"], bold, italic, code=True),)
    if group["alt"] is not None:
        return (Span(group["alt"], bold, italic),)
    if group["label"] is not None:
        label = parse_inline(group["label"], bold, italic, nesting + 1)
        url = group["url"]
        # a printed report cannot be clicked: keep an http(s) address readable next to its label
        if url.startswith(("http://", "https://")) and url != plain_text(label):
            return (*label, Span(f" ({url})", bold, italic))
        return label
    if group["auto"] is not None:
        return (Span(group["auto"], bold, italic),)
    if group["strong_em"] is not None:
        return parse_inline(group["strong_em"], True, True, nesting + 1)
    if group["strong"] is not None:
        return parse_inline(group["strong"], True, italic, nesting + 1)
    return parse_inline(group["em"] or group["em2"] or "", bold, True, nesting + 1)


def _append(spans: list[Span], span: Span) -> None:
    if not span.text:
        return
    last = spans[-1] if spans else None
    if last is not None and (last.bold, last.italic, last.code) == (span.bold, span.italic, span.code):
        spans[-1] = Span(last.text + span.text, span.bold, span.italic, span.code)
    else:
        spans.append(span)
