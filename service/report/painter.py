"""The report as a PDF, drawn with borb: the only module that imports borb.

borb 3 lays out one element at a time and can neither split an element over pages nor shrink one that is
too wide (it asserts), and its paragraphs paint one borb ``Chunk`` per word. So we break lines and
paginate ourselves (``service.report.layout``) and hand borb one ``Chunk`` per same-font run of a line: every
line fits by construction, long reports flow over pages, and a 4,000-token report renders in ~35 ms instead
of ~290 ms (``python -m bench.render``). Text is encoded for the standard fonts' WinAnsi encoding (cp1252,
``service.report.encoding``): curly quotes, dashes and bullets survive, other characters are transliterated or
become '?', so rendering never fails on what a model writes.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from borb.pdf import Chunk, Document, HexColor, LayoutElement, Page, Standard14Fonts
from borb.pdf.visitor.write_new.facade_visitor import FacadeVisitor

from service.core.errors import PermanentJobError
from service.report.document import ReportDocument, utc
from service.report.layout import Typesetter
from service.report.pages import MARGIN_X, PAGE_HEIGHT, PAGE_WIDTH, TEXT_WIDTH, Line

_FONTS = {"regular": "Helvetica", "bold": "Helvetica-Bold", "italic": "Helvetica-Oblique",
          "bold_italic": "Helvetica-BoldOblique", "mono": "Courier"}  # fmt: skip
_COLORS = {"text": "#1A1A1A", "heading": "#1F3763", "muted": "#595959", "code": "#F2F2F2",
           "rule": "#BFBFBF", "header": "#E8EEF7", "notice": "#FFF1C2", "warn": "#7A4B00"}  # fmt: skip


def _width_table(font_name: str) -> tuple[float, ...]:
    """Glyph widths in points at size 1, by WinAnsi code; borb's metrics, computed once per process."""
    font = Standard14Fonts.get(font_name)
    widths = []
    for code in range(256):
        try:
            char = bytes([code]).decode("cp1252")
        except UnicodeDecodeError:
            char = "?"
        # borb's metrics lack a few glyphs (nbsp, superscripts, mu): borrow a neighbour's width
        char = {"\xa0": " ", "\xb2": "2", "\xb3": "3", "\xb9": "1", "\xb5": "u", "\u0192": "f"}.get(
            char, char
        )
        widths.append(font.get_width(char, font_size=1000) / 1000 if code >= 32 else 0.0)
    return tuple(widths)


_WIDTHS = {key: _width_table(name) for key, name in _FONTS.items()}
_TYPESETTER = Typesetter(_WIDTHS)


class _Box(LayoutElement):  # type: ignore[misc]  # borb has no type hints
    """A filled rectangle: code and table backgrounds, rules. borb paints any element's background."""

    def __init__(self, color: Any) -> None:
        super().__init__(background_color=color)

    def paint(self, available_space: tuple[float, float, float, float], page: Any) -> None:
        self._paint_background_and_borders(page=page, rectangle=available_space)


def _paint_page(
    page: Any, placed: list[tuple[float, Line]], fonts: dict[str, Any], colors: dict[str, Any]
) -> None:
    boxes: list[list[Any]] = []
    for top, line in placed:
        for x, y, w, h, color in line.boxes:
            last = boxes[-1] if boxes else None
            if last and (last[0], last[2], last[4]) == (x, w, color) and abs(last[1] - (top - y)) < 0.01:
                last[1], last[3] = top - y - h, last[3] + h  # stack onto the box above: no seams, fewer ops
            else:
                boxes.append([x, top - y - h, w, h, color])
    for x, y, w, h, color in boxes:
        _Box(colors[color]).paint((MARGIN_X + x, round(y, 2), w, round(h, 2)), page)
    for top, line in placed:
        for run in line.runs:
            chunk = Chunk(run.text, font=fonts[run.font], font_size=run.size, font_color=colors[run.color])
            chunk.paint(
                (round(MARGIN_X + run.x, 2), round(top - line.baseline, 2), TEXT_WIDTH, run.size), page
            )


def _set_info(pdf: Any, document: ReportDocument) -> None:
    """Title and dates in the PDF's metadata; borb writes these strings unescaped, so ASCII without parens."""
    title = unicodedata.normalize("NFKD", document.title).encode("ascii", "ignore").decode()
    info = pdf["Trailer"]["Info"]
    info["Title"] = " ".join(re.sub(r"[()\\]", " ", title).split())
    info["CreationDate"] = info["ModDate"] = f"D:{utc(document.created_at):%Y%m%d%H%M%S}Z"


def render_pdf(document: ReportDocument) -> bytes:
    """The report as PDF bytes. Pure and CPU-bound: call it through ``PdfRenderer`` from async code."""
    try:
        pages = _TYPESETTER.pages(document)
        pdf = Document()
        fonts = {key: Standard14Fonts.get(name) for key, name in _FONTS.items()}  # borb names them per page
        colors = {key: HexColor(value) for key, value in _COLORS.items()}
        for number, placed in enumerate(pages, start=1):
            page = Page(width_in_points=PAGE_WIDTH, height_in_points=PAGE_HEIGHT)
            pdf.append_page(page)
            _paint_page(page, [*placed, _TYPESETTER.footer(document, number, len(pages))], fonts, colors)
        _set_info(pdf, document)
        # not PDF.write(): it queues usage statistics for borb's servers and installs SIGTERM handlers
        writer = FacadeVisitor()
        writer.visit(node=pdf)
        return bytes(writer.bytes())
    except Exception as exc:
        # the reason is shown to the user: the exception's type only, never the report's text
        raise PermanentJobError(f"the report could not be rendered as a PDF: {type(exc).__name__}") from exc
    finally:
        Chunk.get_size.cache_clear()  # borb caches sizes per Chunk forever: a leak in a long-lived process
