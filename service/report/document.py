"""The report as a document: what the PDF shows, and the typed blocks its Markdown is parsed into.

No parsing and no drawing here: ``service.report.markdown`` makes the blocks, ``service.report.layout``
places them, ``service.report.painter`` paints them with borb.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class ReportDocument:
    """Everything the PDF shows: the header block on page 1 and the model's Markdown below it."""

    title: str
    created_at: datetime  # timezone-aware UTC
    model: str  # e.g. "claude-opus-4-7" or "offline"
    markdown: str  # the model's answer
    source: str  # short description of the input, e.g. "sales.csv (12.3 kB)"
    offline: bool  # True: written by the offline provider, which page 1 and every footer say plainly
    output_limit_reached: bool = False  # True: the model stopped at its output limit; the end says so


@dataclass(frozen=True)
class Span:
    """A run of text in one style."""

    text: str
    bold: bool = False
    italic: bool = False
    code: bool = False


Spans = tuple[Span, ...]


@dataclass(frozen=True)
class Heading:
    level: int  # 1-6, as many '#' as the source had
    spans: Spans


@dataclass(frozen=True)
class Paragraph:
    spans: Spans


@dataclass(frozen=True)
class ListItem:
    depth: int  # 0 for top-level items, 1 for items nested once, ...
    ordered: bool
    number: int  # the number the source wrote for ordered items, 0 for bullets
    spans: Spans


@dataclass(frozen=True)
class BulletList:
    """Consecutive list items, bullets and numbered ones, at any nesting depth."""

    items: tuple[ListItem, ...]


@dataclass(frozen=True)
class CodeBlock:
    text: str
    language: str = ""


@dataclass(frozen=True)
class Quote:
    paragraphs: tuple[Spans, ...]


@dataclass(frozen=True)
class Rule:
    """A horizontal rule (``---``)."""


@dataclass(frozen=True)
class Table:
    header: tuple[Spans, ...]
    rows: tuple[tuple[Spans, ...], ...]  # every row has exactly len(header) cells
    align: tuple[str, ...]  # "left", "center" or "right" per column


Block = Heading | Paragraph | BulletList | CodeBlock | Quote | Rule | Table


def plain_text(spans: Spans) -> str:
    """The text of ``spans`` without any styling."""
    return "".join(span.text for span in spans)


def utc(moment: datetime) -> datetime:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
