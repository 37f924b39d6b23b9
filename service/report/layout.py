"""The PDF's layout: Markdown blocks broken into lines of same-font runs and placed on A4 pages."""

from __future__ import annotations

from collections.abc import Iterable

from service.report import document as doc
from service.report.document import ReportDocument, utc
from service.report.markdown import parse_markdown
from service.report.measure import TOKEN, LineSetter, clean, mirror, rtl_paragraph
from service.report.pages import MARGIN_BOTTOM, TEXT_WIDTH, Line, Run, paginate

OFFLINE_NOTICE = "Written offline \u2014 no language model was used"
MAX_PAGES = 150  # borb's writer slows with the square of a PDF's objects: 950 short pages took 45 s
PAGES_NOTE = "[The rest of this report is not shown: it runs past {limit} pages.]"
LIMIT_NOTE = "[The report ends here because the model reached its output limit, not because it had finished.]"

_HEADINGS = {1: (16.0, 21.0, 16.0), 2: (13.5, 18.0, 13.0), 3: (11.5, 15.0, 10.0)}  # size, leading, space
_BULLETS = ("\u2022", "\u2013", "\u00b7")
_TITLE_CHARS = 300  # a footer shows at most this much of the title before cutting it to fit


def _font_for(span: doc.Span, bold: bool) -> str:
    if span.code:
        return "mono"
    if span.bold or bold:
        return "bold_italic" if span.italic else "bold"
    return "italic" if span.italic else "regular"


def _spans(spans: doc.Spans, bold: bool = False) -> list[tuple[str, str]]:
    return [(span.text, _font_for(span, bold)) for span in spans]


def _rule() -> list[Line]:
    return [Line(14.0, 0.0, boxes=[(0.0, 7.0, TEXT_WIDTH, 0.75, "rule")], space_before=4.0)]


class Typesetter(LineSetter):
    """Lays reports out in styles ("regular", "bold", "italic", "bold_italic", "mono"), each character in
    the face of its script (``service.report.measure``)."""

    def pages(self, document: ReportDocument) -> list[list[tuple[float, Line]]]:
        """The front matter and the Markdown placed on pages; ``footer`` adds each page's footer."""
        lines = self._front_matter(document)
        for block in parse_markdown(document.markdown):
            lines += self._block_lines(block)
        if document.output_limit_reached:  # else the last sentence may stop mid-way with no reason given
            lines += self._text_lines([(LIMIT_NOTE, "italic")], 10, 14, space_before=7)
        pages = paginate(lines)
        if len(pages) > MAX_PAGES:  # the first MAX_PAGES - 1 pages, then the note starts the last one
            kept = sum(len(page) for page in pages[: MAX_PAGES - 1])
            note = self._text_lines([(PAGES_NOTE.format(limit=MAX_PAGES), "italic")], 10, 14, space_before=7)
            pages = paginate(lines[:kept] + note)
        return pages

    def _wrap(
        self, pieces: Iterable[tuple[str, str]], size: float, width: float, color: str
    ) -> list[list[Run]]:
        """Break (text, font) pieces into lines of runs no wider than ``width``; x starts at 0."""
        lines: list[list[Run]] = [[]]
        x, pending_space = 0.0, False
        for text, style in pieces:
            for token in TOKEN.findall(clean(text)):
                if token[0] == " ":
                    pending_space = bool(lines[-1])
                    continue
                for part, font in self._parts(token, style, size, width):
                    w = self._text_width(part, font, size)
                    last = lines[-1][-1] if lines[-1] else None
                    space = self._text_width(" ", last.font, size) if last and pending_space else 0.0
                    if last is not None and x + space + w > width:
                        lines.append([])
                        x, last, space = 0.0, None, 0.0
                    if last is not None and space:
                        last.text, last.width, x = last.text + " ", last.width + space, x + space
                    if last is not None and last.font == font:
                        last.text, last.width = last.text + part, last.width + w
                    else:
                        lines[-1].append(Run(x, part, font, size, color, w))
                    x, pending_space = x + w, False
        return lines

    def _text_lines(self, pieces: Iterable[tuple[str, str]], size: float, leading: float, *,
                    indent: float = 0.0, color: str = "text",
                    space_before: float = 0.0) -> list[Line]:  # fmt: skip
        """Wrapped text as flow lines, the first one ``space_before`` below the previous block."""
        pieces = list(pieces)
        rtl = rtl_paragraph([text for text, _ in pieces])
        lines = []
        for runs in self._wrap(pieces, size, TEXT_WIDTH - indent, color):
            if rtl:
                mirror(runs, TEXT_WIDTH - indent)
            for run in runs:
                run.x += indent
            lines.append(Line(leading, (leading + 0.7 * size) / 2, runs))
        lines[0].space_before = space_before
        return lines

    def _heading(self, block: doc.Heading) -> list[Line]:
        size, leading, space = _HEADINGS.get(block.level, (10.5, 14.0, 9.0))
        pieces = _spans(block.spans, bold=True)
        lines = self._text_lines(pieces, size, leading, color="heading", space_before=space)
        for line in lines:
            line.keep_with_next = True  # never leave a heading alone at the bottom of a page
        return lines

    def _list(self, block: doc.BulletList) -> list[Line]:
        lines: list[Line] = []
        for index, item in enumerate(block.items):
            label = f"{item.number}." if item.ordered else _BULLETS[item.depth % len(_BULLETS)]
            label_width = self._styled_width(label, "regular", 10)
            indent = 16.0 * item.depth + max(14.0, label_width + 5)
            item_lines = self._text_lines(
                _spans(item.spans), 10, 14, indent=indent, space_before=7 if index == 0 else 3
            )
            label_x = indent - max(14.0, label_width + 5)
            item_lines[0].runs[:0] = self._runs(label_x, label, "regular", 10, "text")
            lines += item_lines
        return lines

    def _code(self, block: doc.CodeBlock) -> list[Line]:
        size, leading, pad = 8.5, 11.0, 5.0
        lines = []
        for source_line in block.text.split("\n"):
            for runs in self._code_line(clean(source_line).rstrip(), size, TEXT_WIDTH - 2 * pad):
                for run in runs:
                    run.x += pad
                lines.append(Line(leading, (leading + 0.7 * size) / 2, runs))
        first = lines[0]
        first.space_before, first.height, first.baseline = 8.0, leading + pad, first.baseline + pad
        lines[-1].height += pad
        for line in lines:
            line.boxes.append((0.0, 0.0, TEXT_WIDTH, line.height, "code"))
        return lines

    def _quote(self, block: doc.Quote) -> list[Line]:
        lines: list[Line] = []
        for index, spans in enumerate(block.paragraphs or ((doc.Span(""),),)):
            pieces = _spans(tuple(doc.Span(s.text, s.bold, True, s.code) for s in spans))
            space_before = 7 if index == 0 else 4
            lines += self._text_lines(pieces, 10, 14, indent=12, color="muted", space_before=space_before)
        for line in lines:
            line.boxes.append((0.0, 0.0, 2.5, line.height + 0.5, "rule"))
        return lines

    def _table(self, block: doc.Table) -> list[Line]:
        size, pad = 9.0, 4.0
        rows = [(block.header, True), *((row, False) for row in block.rows)]
        pieces = [[_spans(cell, header) for cell in cells] for cells, header in rows]
        widths = self._column_widths(pieces, size, pad)
        lines: list[Line] = []
        for cells, header in rows:
            row = [_spans(cell, header) for cell in cells]
            lines += self._table_row(row, header, widths, block.align, size, pad)
        lines[0].space_before = 8.0
        return lines

    def _column_widths(self, rows: list[list[list[tuple[str, str]]]], size: float, pad: float) -> list[float]:
        """Natural widths when they fit; otherwise narrow columns keep theirs and wide ones share the rest."""
        natural = [2 * pad + 1.0] * len(rows[0])
        for cells in rows:
            for index, pieces in enumerate(cells):
                text_width = sum(self._styled_width(clean(text), style, size) for text, style in pieces)
                natural[index] = max(natural[index], text_width + 2 * pad + 1)
        share = TEXT_WIDTH / len(natural)
        wide = sum(width for width in natural if width > share)
        room = TEXT_WIDTH - sum(width for width in natural if width <= share)
        fits = sum(natural) <= TEXT_WIDTH
        return [width if fits or width <= share else room * width / wide for width in natural]

    def _table_row(self, cells: list[list[tuple[str, str]]], header: bool, widths: list[float],
                   align: tuple[str, ...], size: float, pad: float) -> list[Line]:  # fmt: skip
        """One table row as flow lines: the k-th line of every cell side by side, kept together."""
        wrapped = [
            self._wrap(pieces, size, width - 2 * pad, "text")
            for pieces, width in zip(cells, widths, strict=True)
        ]
        baseline = (12.0 + 0.7 * size) / 2
        lines = [Line(12.0, baseline, keep_with_next=True) for _ in range(max(map(len, wrapped)))]
        x = 0.0
        for cell_lines, width, alignment in zip(wrapped, widths, align, strict=True):
            for line, runs in zip(lines, cell_lines, strict=False):
                free = width - 2 * pad - (runs[-1].x + runs[-1].width if runs else 0.0)
                shift = x + pad + {"right": free, "center": free / 2}.get(alignment, 0.0)
                for run in runs:
                    run.x += shift
                line.runs += runs
            x += width
        lines[0].height, lines[0].baseline = lines[0].height + pad, lines[0].baseline + pad
        lines[-1].height += pad
        lines[-1].keep_with_next = header  # a header row stays with the first body row
        for line in lines:
            line.boxes += [(0.0, 0.0, x, line.height, "header")] if header else []
        lines[-1].boxes.append((0.0, lines[-1].height - 0.5, x, 0.5, "rule"))
        return lines

    def _front_matter(self, document: ReportDocument) -> list[Line]:
        """Title, creation date, model and source; the offline notice right below them when it applies."""
        lines = self._text_lines([(document.title or "Report", "bold")], 20, 25, color="heading")
        meta = {"Created": f"{utc(document.created_at):%Y-%m-%d %H:%M} UTC", "Model": document.model,
                "Source": document.source}  # fmt: skip
        for index, (label, value) in enumerate(meta.items()):
            pieces = [(f"{label}: ", "bold"), (value, "regular")]
            lines += self._text_lines(pieces, 9, 12.5, color="muted", space_before=6 if index == 0 else 0)
        if document.offline:
            notice = self._text_lines(
                [(OFFLINE_NOTICE, "bold")], 11, 15, indent=8, color="warn", space_before=10
            )
            notice[0].height, notice[0].baseline, notice[-1].height = 20, 12.5, notice[-1].height + 5
            for line in notice:
                line.boxes.append((0.0, 0.0, TEXT_WIDTH, line.height, "notice"))
            lines += notice
        return [*lines, *_rule()]

    def _block_lines(self, block: doc.Block) -> list[Line]:
        match block:
            case doc.Heading():
                return self._heading(block)
            case doc.Paragraph():
                return self._text_lines(_spans(block.spans), 10, 14, space_before=7)
            case doc.BulletList():
                return self._list(block)
            case doc.CodeBlock():
                return self._code(block)
            case doc.Quote():
                return self._quote(block)
            case doc.Table():
                return self._table(block)
        return _rule()

    def footer(self, document: ReportDocument, number: int, total: int) -> tuple[float, Line]:
        """The notice (offline) or the title on the left, "Page N of M" on the right, under a thin rule."""
        right = f"Page {number} of {total}"
        right_width = self._styled_width(right, "regular", 8)
        style, color = ("bold", "warn") if document.offline else ("regular", "muted")
        left = clean(OFFLINE_NOTICE if document.offline else document.title)
        room = TEXT_WIDTH - right_width - 24
        if self._styled_width(left, style, 8) > room:
            left = left[:_TITLE_CHARS]
            while left and self._styled_width(left + "...", style, 8) > room:
                left = left[:-1]
            left += "..."
        runs = [
            *self._runs(0.0, left, style, 8, color),
            *self._runs(TEXT_WIDTH - right_width, right, "regular", 8, "muted"),
        ]
        return MARGIN_BOTTOM - 24, Line(12.0, 9.0, runs, [(0.0, -6.0, TEXT_WIDTH, 0.5, "rule")])
