"""The report as a PDF, drawn with borb: the only module that imports borb.

borb 3 lays out one element at a time and can neither split an element over pages nor shrink one that is
too wide (it asserts), and its paragraphs paint one borb ``Chunk`` per word. So we break lines and
paginate ourselves and hand borb one ``Chunk`` per same-font run of a line: every line fits by
construction, long reports flow over pages, and a 4,000-token report renders in ~35 ms instead of ~290 ms
(``python -m bench.render``). Text is encoded for the standard fonts' WinAnsi encoding (cp1252): curly quotes,
dashes and bullets survive, other characters are transliterated or become '?', so rendering never fails
on what a model writes.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import multiprocessing
import os
import re
import threading
import time
import unicodedata
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from borb.pdf import Chunk, Document, HexColor, LayoutElement, Page, Standard14Fonts
from borb.pdf.visitor.write_new.facade_visitor import FacadeVisitor

from service import markdown as md
from service.errors import PermanentJobError, TransientJobError

__all__ = ["PdfRenderer", "ReportDocument", "render_pdf"]

PAGE_WIDTH, PAGE_HEIGHT = 595, 842  # A4 in points
MARGIN_X, MARGIN_TOP, MARGIN_BOTTOM = 56, 60, 64
TEXT_WIDTH = PAGE_WIDTH - 2 * MARGIN_X
OFFLINE_NOTICE = "Written offline \u2014 no language model was used"

_FONTS = {"regular": "Helvetica", "bold": "Helvetica-Bold", "italic": "Helvetica-Oblique",
          "bold_italic": "Helvetica-BoldOblique", "mono": "Courier"}  # fmt: skip
_COLORS = {"text": "#1A1A1A", "heading": "#1F3763", "muted": "#595959", "code": "#F2F2F2",
           "rule": "#BFBFBF", "header": "#E8EEF7", "notice": "#FFF1C2", "warn": "#7A4B00"}  # fmt: skip
_HEADINGS = {1: (16.0, 21.0, 16.0), 2: (13.5, 18.0, 13.0), 3: (11.5, 15.0, 10.0)}  # size, leading, space
_BULLETS = ("\u2022", "\u2013", "\u00b7")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\xad]")  # control characters and the (invisible) soft hyphen
_TOKEN = re.compile(r"[^ ]+| +")
_ASCII_FOR = {"\u2192": "->", "\u2190": "<-", "\u21d2": "=>", "\u2194": "<->", "\u2264": "<=",
              "\u2265": ">=", "\u2260": "!=", "\u2248": "~", "\u2212": "-", "\u2010": "-", "\u2011": "-",
              "\u2012": "-", "\u2015": "\u2014", "\u2032": "'", "\u2033": '"', "\u2044": "/",
              "\u2219": "\u00b7", "\u25cf": "\u2022", "\u25e6": "\u2022", "\u25aa": "\u2022",
              "\u2713": "v", "\u2714": "v", "\u2717": "x", "\u2718": "x", "\u2605": "*", "\u0142": "l",
              "\u0141": "L", "\u0111": "d", "\u0110": "D", "\u0131": "i", "\u0127": "h"}  # fmt: skip


@functools.lru_cache(maxsize=4096)
def _replacement(char: str) -> str:
    """What an unencodable character becomes: an ASCII look-alike, its base letter, nothing, or '?'."""
    if char in _ASCII_FOR:
        return _ASCII_FOR[char]
    category = unicodedata.category(char)
    if category.startswith(("M", "C")) or char in "\ufe0f\u200d" or category == "Sk":
        return ""  # combining marks, zero-width joiners, variation selectors, emoji skin tones
    if category == "Zs":
        return " "
    base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    try:
        base.encode("cp1252")
    except UnicodeEncodeError:
        return "?"
    return base or "?"


def _transliterate(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    return "".join(map(_replacement, error.object[error.start : error.end])), error.end


codecs.register_error("report-pdf", _transliterate)


def pdf_text(text: str) -> str:
    """``text`` as the one-byte characters a standard-font ``Chunk`` writes (WinAnsi = cp1252)."""
    composed = unicodedata.normalize("NFC", text)  # "e" + combining acute is "é", which the font has
    return _CONTROL.sub(" ", composed.encode("cp1252", "report-pdf").decode("latin-1"))


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


def _text_width(text: str, font: str, size: float) -> float:
    return sum(map(_WIDTHS[font].__getitem__, text.encode("latin-1"))) * size


@dataclass(frozen=True)
class ReportDocument:
    """Everything the PDF shows: the header block on page 1 and the model's Markdown below it."""

    title: str
    created_at: datetime  # timezone-aware UTC
    model: str  # e.g. "claude-opus-4-7" or "offline"
    markdown: str  # the model's answer
    source: str  # short description of the input, e.g. "sales.csv (12.3 kB)"
    offline: bool  # True: written by the offline provider, which page 1 and every footer say plainly


@dataclass(slots=True)
class _Run:
    x: float
    text: str  # already pdf_text()
    font: str
    size: float
    color: str
    width: float


@dataclass(slots=True)
class _Line:
    """One line of the flow: runs of text, background boxes (x, y down from top, w, h, color)."""

    height: float
    baseline: float  # from the top of the line
    runs: list[_Run] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float, str]] = field(default_factory=list)
    space_before: float = 0.0
    keep_with_next: bool = False  # headings, table header rows and multi-line table rows


def _font_for(span: md.Span, bold: bool) -> str:
    if span.code:
        return "mono"
    if span.bold or bold:
        return "bold_italic" if span.italic else "bold"
    return "italic" if span.italic else "regular"


def _wrap(pieces: Iterable[tuple[str, str]], size: float, width: float, color: str) -> list[list[_Run]]:
    """Break (text, font) pieces into lines of runs no wider than ``width``; x starts at 0."""
    lines: list[list[_Run]] = [[]]
    x, pending_space = 0.0, False
    for text, font in pieces:
        for token in _TOKEN.findall(pdf_text(text)):
            if token[0] == " ":
                pending_space = bool(lines[-1])
                continue
            for part in _split_long_word(token, font, size, width):
                w = _text_width(part, font, size)
                last = lines[-1][-1] if lines[-1] else None
                space = _text_width(" ", last.font, size) if last and pending_space else 0.0
                if last is not None and x + space + w > width:
                    lines.append([])
                    x, last, space = 0.0, None, 0.0
                if last is not None and space:
                    last.text, last.width, x = last.text + " ", last.width + space, x + space
                if last is not None and last.font == font:
                    last.text, last.width = last.text + part, last.width + w
                else:
                    lines[-1].append(_Run(x, part, font, size, color, w))
                x, pending_space = x + w, False
    return lines


def _split_long_word(word: str, font: str, size: float, width: float) -> list[str]:
    """A word wider than the line (a URL, a hash) is cut where it has to be."""
    if _text_width(word, font, size) <= width:
        return [word]
    parts, current, current_width = [], "", 0.0
    for char in word:
        char_width = _WIDTHS[font][ord(char)] * size
        if current and current_width + char_width > width:
            parts.append(current)
            current, current_width = "", 0.0
        current, current_width = current + char, current_width + char_width
    return [*parts, current]


def _text_lines(pieces: Iterable[tuple[str, str]], size: float, leading: float, *, indent: float = 0.0,
                color: str = "text", space_before: float = 0.0) -> list[_Line]:  # fmt: skip
    """Wrapped text as flow lines, the first one ``space_before`` below the previous block."""
    lines = []
    for runs in _wrap(pieces, size, TEXT_WIDTH - indent, color):
        for run in runs:
            run.x += indent
        lines.append(_Line(leading, (leading + 0.7 * size) / 2, runs))
    lines[0].space_before = space_before
    return lines


def _spans(spans: md.Spans, bold: bool = False) -> list[tuple[str, str]]:
    return [(span.text, _font_for(span, bold)) for span in spans]


def _heading(block: md.Heading) -> list[_Line]:
    size, leading, space = _HEADINGS.get(block.level, (10.5, 14.0, 9.0))
    lines = _text_lines(_spans(block.spans, bold=True), size, leading, color="heading", space_before=space)
    for line in lines:
        line.keep_with_next = True  # never leave a heading alone at the bottom of a page
    return lines


def _list(block: md.BulletList) -> list[_Line]:
    lines: list[_Line] = []
    for index, item in enumerate(block.items):
        label = f"{item.number}." if item.ordered else _BULLETS[item.depth % len(_BULLETS)]
        label_width = _text_width(pdf_text(label), "regular", 10)
        indent = 16.0 * item.depth + max(14.0, label_width + 5)
        item_lines = _text_lines(
            _spans(item.spans), 10, 14, indent=indent, space_before=7 if index == 0 else 3
        )
        label_x = indent - max(14.0, label_width + 5)
        item_lines[0].runs.insert(0, _Run(label_x, pdf_text(label), "regular", 10, "text", label_width))
        lines += item_lines
    return lines


def _code(block: md.CodeBlock) -> list[_Line]:
    size, leading, pad = 8.5, 11.0, 5.0
    per_line = max(1, int((TEXT_WIDTH - 2 * pad) / (_WIDTHS["mono"][ord("m")] * size)))
    lines = []
    for source_line in block.text.split("\n"):
        text = pdf_text(source_line).rstrip()
        for start in range(0, max(len(text), 1), per_line):
            part = text[start : start + per_line]
            run = _Run(pad, part, "mono", size, "text", len(part) * _WIDTHS["mono"][32] * size)
            lines.append(_Line(leading, (leading + 0.7 * size) / 2, [run] if part else []))
    lines[0].space_before, lines[0].height, lines[0].baseline = 8.0, leading + pad, lines[0].baseline + pad
    lines[-1].height += pad
    for line in lines:
        line.boxes.append((0.0, 0.0, TEXT_WIDTH, line.height, "code"))
    return lines


def _quote(block: md.Quote) -> list[_Line]:
    lines: list[_Line] = []
    for index, spans in enumerate(block.paragraphs or ((md.Span(""),),)):
        pieces = _spans(tuple(md.Span(s.text, s.bold, True, s.code) for s in spans))
        lines += _text_lines(pieces, 10, 14, indent=12, color="muted", space_before=7 if index == 0 else 4)
    for line in lines:
        line.boxes.append((0.0, 0.0, 2.5, line.height + 0.5, "rule"))
    return lines


def _rule() -> list[_Line]:
    return [_Line(14.0, 0.0, boxes=[(0.0, 7.0, TEXT_WIDTH, 0.75, "rule")], space_before=4.0)]


def _table(block: md.Table) -> list[_Line]:
    size, pad = 9.0, 4.0
    rows = [(block.header, True), *((row, False) for row in block.rows)]
    widths = _column_widths([[_spans(cell, header) for cell in cells] for cells, header in rows], size, pad)
    lines: list[_Line] = []
    for cells, header in rows:
        lines += _table_row([_spans(cell, header) for cell in cells], header, widths, block.align, size, pad)
    lines[0].space_before = 8.0
    return lines


def _column_widths(rows: list[list[list[tuple[str, str]]]], size: float, pad: float) -> list[float]:
    """Natural widths when they fit; otherwise narrow columns keep theirs and wide ones share the rest."""
    natural = [2 * pad + 1.0] * len(rows[0])
    for cells in rows:
        for index, pieces in enumerate(cells):
            width = sum(_text_width(pdf_text(text), font, size) for text, font in pieces) + 2 * pad + 1
            natural[index] = max(natural[index], width)
    share = TEXT_WIDTH / len(natural)
    wide = sum(width for width in natural if width > share)
    room = TEXT_WIDTH - sum(width for width in natural if width <= share)
    fits = sum(natural) <= TEXT_WIDTH
    return [width if fits or width <= share else room * width / wide for width in natural]


def _table_row(cells: list[list[tuple[str, str]]], header: bool, widths: list[float], align: tuple[str, ...],
               size: float, pad: float) -> list[_Line]:  # fmt: skip
    """One table row as flow lines: the k-th line of every cell side by side, kept together."""
    wrapped = [
        _wrap(pieces, size, width - 2 * pad, "text") for pieces, width in zip(cells, widths, strict=True)
    ]
    lines = [_Line(12.0, (12.0 + 0.7 * size) / 2, keep_with_next=True) for _ in range(max(map(len, wrapped)))]
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


def _front_matter(document: ReportDocument) -> list[_Line]:
    """Title, creation date, model and source; the offline notice right below them when it applies."""
    lines = _text_lines([(document.title or "Report", "bold")], 20, 25, color="heading")
    meta = {"Created": f"{_utc(document.created_at):%Y-%m-%d %H:%M} UTC", "Model": document.model,
            "Source": document.source}  # fmt: skip
    for index, (label, value) in enumerate(meta.items()):
        pieces = [(f"{label}: ", "bold"), (value, "regular")]
        lines += _text_lines(pieces, 9, 12.5, color="muted", space_before=6 if index == 0 else 0)
    if document.offline:
        notice = _text_lines([(OFFLINE_NOTICE, "bold")], 11, 15, indent=8, color="warn", space_before=10)
        notice[0].height, notice[0].baseline, notice[-1].height = 20, 12.5, notice[-1].height + 5
        for line in notice:
            line.boxes.append((0.0, 0.0, TEXT_WIDTH, line.height, "notice"))
        lines += notice
    return [*lines, *_rule()]


def _block_lines(block: md.Block) -> list[_Line]:
    match block:
        case md.Heading():
            return _heading(block)
        case md.Paragraph():
            return _text_lines(_spans(block.spans), 10, 14, space_before=7)
        case md.BulletList():
            return _list(block)
        case md.CodeBlock():
            return _code(block)
        case md.Quote():
            return _quote(block)
        case md.Table():
            return _table(block)
    return _rule()


def _paginate(lines: list[_Line]) -> list[list[tuple[float, _Line]]]:
    """Place lines top-down (y of each line's top); a line and what it keeps with move to the next page."""
    top, bottom = float(PAGE_HEIGHT - MARGIN_TOP), float(MARGIN_BOTTOM)
    chain = [line.height for line in lines]  # height of a line plus the lines it must stay with
    for i in range(len(lines) - 2, -1, -1):
        if lines[i].keep_with_next:
            chain[i] += lines[i + 1].space_before + chain[i + 1]
    pages: list[list[tuple[float, _Line]]] = [[]]
    y = top
    for line, needed in zip(lines, chain, strict=True):
        gap = line.space_before if pages[-1] else 0.0
        chain_fits = needed > top - bottom or y - gap - needed >= bottom  # over-tall chains break anyway
        if pages[-1] and (not chain_fits or y - gap - line.height < bottom):
            pages.append([])
            y, gap = top, 0.0
        pages[-1].append((y - gap, line))
        y -= gap + line.height
    return pages


def _footer(document: ReportDocument, number: int, total: int) -> tuple[float, _Line]:
    """The notice (offline) or the title on the left, "Page N of M" on the right, under a thin rule."""
    right = f"Page {number} of {total}"
    right_width = _text_width(right, "regular", 8)
    font, color = ("bold", "warn") if document.offline else ("regular", "muted")
    left = pdf_text(OFFLINE_NOTICE if document.offline else document.title)
    if _text_width(left, font, 8) > TEXT_WIDTH - right_width - 24:
        while left and _text_width(left + "...", font, 8) > TEXT_WIDTH - right_width - 24:
            left = left[:-1]
        left += "..."
    runs = [
        _Run(0.0, left, font, 8, color, 0.0),
        _Run(TEXT_WIDTH - right_width, right, "regular", 8, "muted", 0.0),
    ]
    return MARGIN_BOTTOM - 24, _Line(12.0, 9.0, runs, [(0.0, -6.0, TEXT_WIDTH, 0.5, "rule")])


class _Box(LayoutElement):  # type: ignore[misc]  # borb has no type hints
    """A filled rectangle: code and table backgrounds, rules. borb paints any element's background."""

    def __init__(self, color: Any) -> None:
        super().__init__(background_color=color)

    def paint(self, available_space: tuple[float, float, float, float], page: Any) -> None:
        self._paint_background_and_borders(page=page, rectangle=available_space)


def _paint_page(
    page: Any, placed: list[tuple[float, _Line]], fonts: dict[str, Any], colors: dict[str, Any]
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
    info["CreationDate"] = info["ModDate"] = f"D:{_utc(document.created_at):%Y%m%d%H%M%S}Z"


def _utc(moment: datetime) -> datetime:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def render_pdf(document: ReportDocument) -> bytes:
    """The report as PDF bytes. Pure and CPU-bound: call it through ``PdfRenderer`` from async code."""
    try:
        lines = _front_matter(document)
        for block in md.parse_markdown(document.markdown):
            lines += _block_lines(block)
        pages = _paginate(lines)
        pdf = Document()
        fonts = {key: Standard14Fonts.get(name) for key, name in _FONTS.items()}  # borb names them per page
        colors = {key: HexColor(value) for key, value in _COLORS.items()}
        for number, placed in enumerate(pages, start=1):
            page = Page(width_in_points=PAGE_WIDTH, height_in_points=PAGE_HEIGHT)
            pdf.append_page(page)
            _paint_page(page, [*placed, _footer(document, number, len(pages))], fonts, colors)
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


def _exit_with_owner(owner_pid: int, interval: float = 1.0) -> None:
    """Pool initializer: leave when the process that owns the pool is gone.

    ProcessPoolExecutor workers never notice their owner's death (each holds both ends of its call
    queue, so no end-of-file ever arrives), and with the fork server their parent is not the owner:
    after a ``kill -9`` of a worker they would live on, orphaned, for good.
    """

    def watch() -> None:
        while True:
            time.sleep(interval)
            try:
                os.kill(owner_pid, 0)
            except ProcessLookupError:
                os._exit(0)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


def _warm_up() -> None:
    markdown = "# Warm-up\n\n- item\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\ncode\n```\n"
    render_pdf(ReportDocument("warm-up", datetime.now(UTC), "offline", markdown, "", True))


class PdfRenderer:
    """Renders off the event loop in a process pool (borb is CPU-bound).

    The pool uses the "forkserver" context: the worker process runs asyncio and threads, and a plain fork
    would copy their locks in whatever state they are. The fork server preloads this module, so every pool
    process - including the replacement after a crash - starts with borb imported and its font tables
    built (a replacement renders a 4,000-token report in ~70 ms instead of ~170 ms). ``__init__`` also
    submits one warm-up render per process without waiting for it: the first real job then finds a started,
    warm process (~40 ms) instead of paying ~220 ms for process start-up, imports and the first render.
    The first ``PdfRenderer()`` in a process blocks ~150 ms while the fork server starts: create it at
    worker start-up, not per job.
    """

    def __init__(self, processes: int = 1) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self._processes = processes
        self._executor: ProcessPoolExecutor | None = self._start()

    def _start(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])  # only takes effect if the fork server is not running yet
        executor = ProcessPoolExecutor(
            self._processes, mp_context=context, initializer=_exit_with_owner, initargs=(os.getpid(),)
        )
        for _ in range(self._processes):
            executor.submit(_warm_up)  # a failure here shows up, and is handled, at the first render
        return executor

    def _replace(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        if self._executor is broken:  # a concurrent render may have replaced it already
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()
        if self._executor is None:
            raise RuntimeError("the PdfRenderer is closed")
        return self._executor

    async def render(self, document: ReportDocument) -> bytes:
        """``render_pdf(document)`` in a pool process; a dead process becomes ``TransientJobError``."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("the PdfRenderer is closed")
        future: Future[bytes]
        try:
            future = executor.submit(render_pdf, document)
        except BrokenProcessPool:
            # the pool died between jobs (killed, out of memory): nothing of this job was lost
            executor = self._replace(executor)
            future = executor.submit(render_pdf, document)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool as exc:
            self._replace(executor)
            raise TransientJobError("the PDF renderer process died while rendering the report") from exc

    def close(self) -> None:
        """Stop the pool, waiting for a render in progress (a few hundred milliseconds at most)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    async def __aenter__(self) -> PdfRenderer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.close)
