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

import asyncio
import multiprocessing
import os
import re
import threading
import time
import unicodedata
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from borb.pdf import Chunk, Document, HexColor, LayoutElement, Page, Standard14Fonts
from borb.pdf.visitor.write_new.facade_visitor import FacadeVisitor

from service.core.errors import PermanentJobError, TransientJobError
from service.report.encoding import pdf_text
from service.report.layout import (
    MARGIN_TOP,
    MARGIN_X,
    PAGE_HEIGHT,
    PAGE_WIDTH,
    TEXT_WIDTH,
    Line,
    ReportDocument,
    Typesetter,
    utc,
)

# ReportDocument, pdf_text and the page geometry live in the borb-free modules; re-exported for importers
__all__ = ["MARGIN_TOP", "MARGIN_X", "PAGE_HEIGHT", "PAGE_WIDTH", "PdfRenderer", "ReportDocument", "pdf_text",
           "render_pdf"]  # fmt: skip

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
