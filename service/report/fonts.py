"""The report's Unicode fonts: which face shows each character, text shaped into glyphs, and the glyphs a
PDF uses cut out of their font. The only module that imports uharfbuzz.

The faces are Noto fonts from two wheels (``manimgx-fonts``: Latin, Greek, Cyrillic, Arabic, Hebrew, the
Indic and South-East Asian scripts, symbols; ``justmytype-intl-cjk``: Chinese, Japanese, Korean), all
SIL OFL 1.1 and variable in weight: bold is the same file at ``wght`` 700. HarfBuzz shapes every run (Arabic
joining, Indic reordering, ligatures, kerning) and subsets each face to the glyphs a PDF shows, with the
weight pinned, in a few milliseconds: a CJK face is 10-18 MB, its subset a few kB.
"""

from __future__ import annotations

import functools
import itertools
import struct
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

import uharfbuzz as hb

_NOTO = Path(str(files("manimgx_fonts")))
_CJK = Path(str(files("justmytype_intl_cjk"))) / "fonts" / "ofl"
_SCRIPTS = ("arabic", "hebrew", "devanagari", "bengali", "gujarati", "gurmukhi", "kannada", "malayalam",
            "oriya", "sinhala", "tamil", "telugu", "thai", "lao", "khmer", "myanmar", "armenian", "georgian",
            "ethiopic")  # fmt: skip
_FILES = {
    "sans": _NOTO / "NotoSans[wght].ttf",
    "sans-italic": _NOTO / "NotoSans-Italic[wght].ttf",
    **{script: _NOTO / f"NotoSans{script.capitalize()}[wght].ttf" for script in (*_SCRIPTS, "symbols")},
    **{
        f"cjk-{region}": _CJK / f"notosans{region}" / f"NotoSans{region.upper()}[wght].ttf"
        for region in ("sc", "jp", "kr", "tc")
    },
    "emoji": _NOTO / "NotoEmoji[wght].ttf",
}
# Han characters look different in Chinese, Japanese and Korean: kana picks the Japanese face, Hangul the
# Korean one, other Han characters the Simplified Chinese one (then the others, for what it lacks).
_CJK_ORDER = {"sc": ("cjk-sc", "cjk-jp", "cjk-tc", "cjk-kr"), "jp": ("cjk-jp", "cjk-sc", "cjk-tc", "cjk-kr"),
              "kr": ("cjk-kr", "cjk-sc", "cjk-jp", "cjk-tc")}  # fmt: skip
_INHERIT = frozenset("\u200c\u200d\u034f")  # joiners stay in the face of the character they join
BOLD, REGULAR = 700, 400


def _tag(name: str) -> int:
    return int.from_bytes(name.encode("ascii"), "big")


@functools.cache
def _face(family: str) -> hb.Face:
    return hb.Face(hb.Blob.from_file_path(str(_FILES[family])))


@functools.cache
def _cmap(family: str) -> frozenset[int]:
    return frozenset(_face(family).unicodes)


@functools.cache
def _font(family: str, weight: int) -> hb.Font:
    font = hb.Font(_face(family))
    if any(axis.tag == "wght" for axis in _face(family).axis_infos):
        font.set_variations({"wght": weight})
    return font


@functools.cache
def _advances(family: str, weight: int) -> Callable[[int], float]:
    """A glyph's own advance in em, by glyph id (cached: a report uses a few hundred glyphs)."""
    font, em = _font(family, weight), float(_face(family).upem)
    return functools.lru_cache(maxsize=None)(lambda gid: font.get_glyph_h_advance(gid) / em)


def _cjk_region(code: int) -> str:
    if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF or 0xFF66 <= code <= 0xFF9F:
        return "jp"
    if 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F or 0xAC00 <= code <= 0xD7AF:
        return "kr"
    return "sc"


@functools.lru_cache(maxsize=8192)
def family_for(char: str, italic: bool) -> str:
    """The face that shows ``char``: Noto Sans when it can, then each script's face, CJK, symbols, emoji.
    A character no face has is drawn with Noto Sans's missing-glyph box (and still extracts as itself)."""
    code = ord(char)
    first = "sans-italic" if italic else "sans"
    for family in (first, *_SCRIPTS, *_CJK_ORDER[_cjk_region(code)], "symbols", "emoji"):
        if code in _cmap(family):
            return family
    return first


def split(text: str, italic: bool) -> list[tuple[str, str]]:
    """``text`` cut into (part, family) where the face changes; marks and joiners stay with their base."""
    parts: list[tuple[str, str]] = []
    for char in text:
        keeps = parts and (char in _INHERIT or unicodedata.category(char).startswith("M"))
        family = parts[-1][1] if keeps else family_for(char, italic)
        if parts and parts[-1][1] == family:
            parts[-1] = (parts[-1][0] + char, family)
        else:
            parts.append((char, family))
    return parts


def has_italic(family: str) -> bool:
    """Only Latin, Greek and Cyrillic have a real italic; the painter slants the other faces."""
    return family == "sans-italic"


class Glyph(NamedTuple):  # a tuple, not a dataclass: a report has tens of thousands, made in a hot loop
    gid: int
    text: str  # what the glyph extracts as: one character of its cluster, all that is left, or ""
    x: float  # where it is drawn, from the start of the run, in em
    y: float  # how far above the baseline (marks), in em
    advance: float  # the glyph's own advance in em, the PDF's /W


@dataclass(frozen=True, slots=True)
class Shaped:
    # Left to right, as drawn. A cluster's characters go to its glyphs in drawing order (reversed for a
    # right-to-left run, which PDF readers reverse back), one each, the last glyph taking the rest: so
    # every glyph but a ligature's maps to one character, and text extracts in the order it was written.
    glyphs: tuple[Glyph, ...]
    width: float  # in em


def _cluster_texts(text: str, infos: list[hb.GlyphInfo], rtl: bool) -> list[str]:
    """Each glyph of a cluster takes one of its characters in drawing order (reversed for right-to-left
    runs, which PDF readers reverse back); the cluster's last glyph takes the rest."""
    starts = [*sorted({info.cluster for info in infos}), len(text)]
    chars_of = {start: list(text[start:end]) for start, end in itertools.pairwise(starts)}
    order = range(len(infos) - 1, -1, -1) if rtl else range(len(infos))
    last_of = {infos[index].cluster: index for index in order}  # the cluster's last glyph in that order
    texts = [""] * len(infos)
    for index in order:
        chars = chars_of[infos[index].cluster]
        if last_of[infos[index].cluster] == index:
            texts[index] = "".join(chars)
        elif chars:
            texts[index] = chars.pop(0)
    return texts


@functools.lru_cache(maxsize=32768)
def shape(text: str, family: str, weight: int) -> Shaped:
    """``text`` shaped by HarfBuzz in one face: its glyphs, where each is drawn and what it extracts as."""
    font = _font(family, weight)
    buffer = hb.Buffer()
    buffer.add_codepoints([ord(char) for char in text])
    buffer.guess_segment_properties()
    hb.shape(font, buffer, {})
    em = float(_face(family).upem)
    infos, positions = buffer.glyph_infos, buffer.glyph_positions
    if [info.cluster for info in infos] == list(range(len(text))):
        texts = list(text)  # one glyph per character, in order: Latin, Greek, Cyrillic, CJK, most text
    else:
        texts = _cluster_texts(text, infos, buffer.direction == "rtl")
    advance = _advances(family, weight)
    glyphs, pen = [], 0
    for info, position, glyph_text in zip(infos, positions, texts, strict=True):
        gid = info.codepoint
        glyphs.append(
            Glyph(gid, glyph_text, (pen + position.x_offset) / em, position.y_offset / em, advance(gid))
        )
        pen += position.x_advance
    return Shaped(tuple(glyphs), pen / em)


def width(text: str, family: str, weight: int) -> float:
    """The advance of ``text`` in em."""
    return shape(text, family, weight).width


@dataclass(frozen=True)
class FontProgram:
    """A face cut to some glyphs at one weight, and what a PDF font descriptor says of it (1/1000 em)."""

    data: bytes  # a TrueType font keeping the original glyph ids
    name: str
    bbox: tuple[float, float, float, float]
    ascent: float
    descent: float
    cap_height: float


def subset(family: str, weight: int, gids: set[int]) -> FontProgram:
    """The glyphs ``gids`` of ``family`` at ``weight``, as a static TrueType font (hinting and layout tables
    dropped: a PDF viewer needs only outlines and advances)."""
    face = _face(family)
    plan = hb.SubsetInput()
    plan.glyph_set.update({0, *gids})
    plan.flags = hb.SubsetFlags.RETAIN_GIDS | hb.SubsetFlags.NO_HINTING | hb.SubsetFlags.NO_LAYOUT_CLOSURE
    for table in ("GSUB", "GPOS", "GDEF", "BASE", "STAT", "vhea", "vmtx"):
        plan.drop_table_tag_set.add(_tag(table))
    if any(axis.tag == "wght" for axis in face.axis_infos):
        plan.pin_axis_location(face, "wght", weight)
    cut = hb.subset(face, plan)
    scale = 1000 / face.upem
    x_min, y_min, x_max, y_max = struct.unpack(">4h", face.reference_table("head").data[36:44])
    hhea = struct.unpack(">hh", face.reference_table("hhea").data[4:8])
    os2 = face.reference_table("OS/2").data
    cap = struct.unpack(">h", os2[88:90])[0] if len(os2) >= 90 else hhea[0]
    name = _FILES[family].name.split("[")[0].replace("-", "") + ("-Bold" if weight >= BOLD else "")
    return FontProgram(
        cut.blob.data,
        name,
        (x_min * scale, y_min * scale, x_max * scale, y_max * scale),
        hhea[0] * scale,
        hhea[1] * scale,
        cap * scale,
    )
