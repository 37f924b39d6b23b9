"""Text as the PDF sets it: cleaned, cut into runs per face, measured, broken into tokens a line may end
after, and the direction of a paragraph.

Faces are named by font key: ``"mono"`` is the standard Courier font (code, for what WinAnsi can show) and
``"<family>/<weight>"`` an embedded Noto face from ``service.report.fonts`` (everything else).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

from service.report import fonts
from service.report.pages import Run

_CONTROL = re.compile(r"[\x00-\x1f\x7f\xad]")  # control characters and the (invisible) soft hyphen
_SURROGATE = re.compile("[\ud800-\udfff]")  # half a UTF-16 pair is no character: no font or PDF string has it
_STYLES: Mapping[str, tuple[bool, int]] = {
    "regular": (False, fonts.REGULAR),
    "bold": (False, fonts.BOLD),
    "italic": (True, fonts.REGULAR),
    "bold_italic": (True, fonts.BOLD),
}
# Chinese and Japanese put no spaces between words: a line may end after any of these characters, except
# before closing punctuation and small kana, and after opening brackets (the basic kinsoku rules).
_CJK = "\u2e80-\u2fff\u3001-\u303f\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff01-\uff60\U00020000-\U0003ffff"  # noqa: E501
_CLOSE = "\u3001\u3002\uff0c\uff0e\uff1a\uff1b\uff1f\uff01\uff09\u300d\u300f\u3011\u3009\u300b\u3015\uff5d\u30fc\u2026\u30fb\u3041\u3043\u3045\u3047\u3049\u3063\u3083\u3085\u3087\u30a1\u30a3\u30a5\u30a7\u30a9\u30c3\u30e3\u30e5\u30e7)\\]},.:;!?%"  # noqa: E501
_OPEN = "\uff08\u300c\u300e\u3010\u3008\u300a\u3014\uff5b([{"
TOKEN = re.compile(rf"[{_OPEN}]*[{_CJK}][{_CLOSE}]*|[^ {_CJK}]+[{_CLOSE}]*| +")


def clean(text: str) -> str:
    """NFC ("e" + combining acute is "é", one glyph), control characters as spaces, lone surrogates as
    U+FFFD."""
    return _SURROGATE.sub("\ufffd", _CONTROL.sub(" ", unicodedata.normalize("NFC", text)))


def winansi(text: str) -> str:
    """``text`` (all of it WinAnsi) as the one-byte characters a standard-font ``Chunk`` writes."""
    return text.encode("cp1252").decode("latin-1")


def _in_winansi(char: str) -> bool:
    try:
        char.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return True


def rtl_paragraph(texts: Sequence[str]) -> bool:
    """True when the first letter with a direction is Arabic or Hebrew (the paragraph reads right to left)."""
    for text in texts:
        for char in text:
            direction = unicodedata.bidirectional(char)
            if direction in ("R", "AL"):
                return True
            if direction == "L":
                return False
    return False


class Measure:
    """Widths in points at size 1; ``mono`` is Courier's width table by WinAnsi code (borb's metrics)."""

    def __init__(self, mono: Sequence[float]) -> None:
        self._mono = mono

    def segments(self, text: str, style: str) -> list[tuple[str, str]]:
        """``text`` in ``style`` cut into (part, font key) runs; code falls back to the sans faces for what
        Courier lacks, and every style to the face of each character's script."""
        if style != "mono":
            italic, weight = _STYLES[style]
            slanted = "/slanted" if italic else ""  # faces without an italic are slanted by the painter
            return [
                (part, f"{family}/{weight}{'' if fonts.has_italic(family) else slanted}")
                for part, family in fonts.split(text, italic)
            ]
        parts: list[tuple[str, str]] = []
        for char in text:
            font = "mono" if _in_winansi(char) else f"{fonts.family_for(char, False)}/{fonts.REGULAR}"
            if parts and parts[-1][1] == font:
                parts[-1] = (parts[-1][0] + char, font)
            else:
                parts.append((char, font))
        return parts

    def width(self, text: str, font: str) -> float:
        if font == "mono":
            return sum(map(self._mono.__getitem__, text.encode("cp1252")))
        family, weight = font.split("/")[:2]
        return fonts.width(text, family, int(weight))


def mirror(runs: list[Run], width: float) -> None:
    """A right-to-left line: its runs placed from the right edge in reverse order. The list keeps reading
    order, which is the order the painter writes and a PDF reader extracts."""
    for run in runs:
        run.x = width - run.x - run.width


class LineSetter:
    """Runs of text measured and fitted into a line, in the faces ``measure`` picks."""

    def __init__(self, measure: Measure) -> None:
        self._measure = measure

    def _text_width(self, text: str, font: str, size: float) -> float:
        return self._measure.width(text, font) * size

    def _styled_width(self, text: str, style: str, size: float) -> float:
        return sum(self._text_width(part, font, size) for part, font in self._measure.segments(text, style))

    def _runs(self, x: float, text: str, style: str, size: float, color: str) -> list[Run]:
        """One unbroken line of ``text`` as runs per face, starting at ``x``."""
        runs = []
        for part, font in self._measure.segments(text, style):
            runs.append(Run(x, part, font, size, color, self._text_width(part, font, size)))
            x += runs[-1].width
        return runs

    def _parts(self, token: str, style: str, size: float, width: float) -> list[tuple[str, str]]:
        """A token's runs per face; one wider than the line (a URL, a hash) is cut where it has to be."""
        parts = []
        for part, font in self._measure.segments(token, style):
            while part:
                head, part = self._fit(part, font, size, width)
                parts.append((head, font))
        return parts

    def _fit(self, text: str, font: str, size: float, room: float) -> tuple[str, str]:
        """The longest start of ``text`` (one character at least) no wider than ``room``, and the rest."""
        if self._text_width(text, font, size) <= room:
            return text, ""
        used = 0.0
        for index, char in enumerate(text):
            used += self._text_width(char, font, size)
            if used > room:
                return text[: max(index, 1)], text[max(index, 1) :]
        return text, ""

    def _code_line(self, text: str, size: float, width: float) -> list[list[Run]]:
        """A line of code cut into lines exactly where it runs out of room (spaces are kept: indentation)."""
        lines: list[list[Run]] = [[]]
        x = 0.0
        for part, font in self._measure.segments(text, "mono"):
            while part:
                head, part = self._fit(part, font, size, width - x)
                if self._text_width(head, font, size) > width - x and lines[-1]:
                    lines.append([])
                    x, part = 0.0, head + part
                    continue
                lines[-1].append(Run(x, head, font, size, "text", self._text_width(head, font, size)))
                x += lines[-1][-1].width
                if part:
                    lines.append([])
                    x = 0.0
        return lines
