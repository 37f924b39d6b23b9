"""Text as the standard PDF fonts can show it: WinAnsi (cp1252), everything else transliterated."""

from __future__ import annotations

import codecs
import functools
import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x1f\x7f\xad]")  # control characters and the (invisible) soft hyphen
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
