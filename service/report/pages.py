"""The page: A4 geometry, the line the layout produces (runs of text, background boxes), and
pagination, which places lines top-down and keeps what belongs together on one page."""

from __future__ import annotations

from dataclasses import dataclass, field

PAGE_WIDTH, PAGE_HEIGHT = 595, 842  # A4 in points
MARGIN_X, MARGIN_TOP, MARGIN_BOTTOM = 56, 60, 64
TEXT_WIDTH = PAGE_WIDTH - 2 * MARGIN_X


@dataclass(slots=True)
class Run:
    x: float
    text: str  # already pdf_text()
    font: str
    size: float
    color: str
    width: float


@dataclass(slots=True)
class Line:
    """One line of the flow: runs of text, background boxes (x, y down from top, w, h, color)."""

    height: float
    baseline: float  # from the top of the line
    runs: list[Run] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float, str]] = field(default_factory=list)
    space_before: float = 0.0
    keep_with_next: bool = False  # headings, table header rows and multi-line table rows


def paginate(lines: list[Line]) -> list[list[tuple[float, Line]]]:
    """Place lines top-down (y of each line's top); a line and what it keeps with move to the next page."""
    top, bottom = float(PAGE_HEIGHT - MARGIN_TOP), float(MARGIN_BOTTOM)
    chain = [line.height for line in lines]  # height of a line plus the lines it must stay with
    for i in range(len(lines) - 2, -1, -1):
        if lines[i].keep_with_next:
            chain[i] += lines[i + 1].space_before + chain[i + 1]
    pages: list[list[tuple[float, Line]]] = [[]]
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
