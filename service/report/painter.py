"""The report as a PDF, drawn with borb: the only module that imports borb.

borb 3 lays out one element at a time and can neither split an element over pages nor shrink one that is
too wide (it asserts), and its paragraphs paint one borb ``Chunk`` per word. So we break lines and
paginate ourselves (``service.report.layout``) and paint one run of glyphs per same-face run of a line:
every line fits by construction and long reports flow over pages.

Text is set in embedded Noto fonts (``service.report.fonts``), shaped by HarfBuzz. borb's own TrueType
support embeds a whole font, maps characters (not shaped glyphs) to codes and derives widths from glyph
names, so the painter writes the fonts itself, as composite (Type0, Identity-H) fonts: each code stands
for one glyph *and* the text it extracts as, the glyphs are written in reading order and placed with
``TJ`` offsets (right-to-left runs too), and ``ToUnicode`` maps every code back to its text. A PDF
reader therefore extracts what the model wrote, whatever the script. Code keeps the standard Courier
font (a borb ``Chunk``) for what WinAnsi has.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from typing import Any

from borb.pdf import Chunk, Document, HexColor, LayoutElement, Page, Standard14Fonts
from borb.pdf.primitives import name, stream
from borb.pdf.visitor.write_new.facade_visitor import FacadeVisitor

from service.core.errors import PermanentJobError
from service.report import fonts
from service.report.document import ReportDocument, utc
from service.report.layout import Typesetter
from service.report.measure import Measure, winansi
from service.report.pages import MARGIN_X, PAGE_HEIGHT, PAGE_WIDTH, TEXT_WIDTH, Line, Run

_MONO = "Courier"
_COLORS = {"text": "#1A1A1A", "heading": "#1F3763", "muted": "#595959", "code": "#F2F2F2",
           "rule": "#BFBFBF", "header": "#E8EEF7", "notice": "#FFF1C2", "warn": "#7A4B00"}  # fmt: skip
_SLANT = 0.2  # the faces without an italic (Arabic, CJK...) are slanted by this much for italic text


def _courier_widths() -> tuple[float, ...]:
    """Courier's glyph widths in points at size 1, by WinAnsi code (borb's metrics: 0.6 for every glyph)."""
    font = Standard14Fonts.get(_MONO)
    return tuple(font.get_width("m", font_size=1000) / 1000 if code >= 32 else 0.0 for code in range(256))


_TYPESETTER = Typesetter(Measure(_courier_widths()))


def _rgb(hex_color: str) -> str:
    red, green, blue = (int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return f"{red:.4f} {green:.4f} {blue:.4f} rg"


class _Box(LayoutElement):  # type: ignore[misc]  # borb has no type hints
    """A filled rectangle: code and table backgrounds, rules. borb paints any element's background."""

    def __init__(self, color: Any) -> None:
        super().__init__(background_color=color)

    def paint(self, available_space: tuple[float, float, float, float], page: Any) -> None:
        self._paint_background_and_borders(page=page, rectangle=available_space)


class _EmbeddedFont:
    """One face at one weight as a PDF composite font: codes (CIDs) handed out per (glyph, text) pair."""

    def __init__(self, key: str, resource: str) -> None:
        family, weight = key.split("/")
        self.family, self.weight, self.resource = family, int(weight), resource
        self.codes: dict[tuple[int, str], int] = {}
        self.widths: list[float] = []  # per code, from 1 on
        self.gids: list[int] = []

    def code(self, glyph: fonts.Glyph) -> int:
        code = self.codes.get((glyph.gid, glyph.text))
        if code is None and len(self.gids) >= 0xFFFE:
            return 0  # two-byte codes are used up (a hostile text): the rest shows as missing glyphs
        if code is None:
            code = self.codes[(glyph.gid, glyph.text)] = len(self.gids) + 1  # code 0 is left to .notdef
            self.gids.append(glyph.gid)
            self.widths.append(round(glyph.advance * 1000, 1))
        return code

    def show(self, run: Run, x: float, y: float) -> str:
        """The operators that draw ``run`` with its left end at (x, y)."""
        shaped = fonts.shape(run.text, self.family, self.weight)
        slant = _SLANT * run.size if run.font.endswith("/slanted") else 0
        ops = [f"BT /{self.resource} 1 Tf {run.size} 0 {slant} {run.size} {x:.2f} {y:.2f} Tm ["]
        pen = rise = 0.0
        for glyph in shaped.glyphs:
            if glyph.y != rise:
                ops.append(f"] TJ {glyph.y:.3f} Ts [")
                rise = glyph.y
            if abs(glyph.x - pen) > 0.0005:
                ops.append(f" {(pen - glyph.x) * 1000:.0f} ")
            ops.append(f"<{self.code(glyph):04X}>")
            pen = glyph.x + glyph.advance
        ops.append("] TJ 0 Ts ET\n" if rise else "] TJ ET\n")
        return "".join(ops)

    def dictionary(self) -> dict[Any, Any]:
        """The Type0 font, its CIDFontType2 descendant and the subset of the face, as borb writes them."""
        program = fonts.subset(self.family, self.weight, set(self.gids))
        tag = "".join(chr(65 + b % 26) for b in hashlib.sha256(program.data).digest()[:6])
        base = name(f"{tag}+{program.name}")
        descriptor = {
            name("Type"): name("FontDescriptor"), name("FontName"): base, name("Flags"): 4,
            name("FontBBox"): [round(v) for v in program.bbox], name("ItalicAngle"): 0,
            name("Ascent"): round(program.ascent), name("Descent"): round(program.descent),
            name("CapHeight"): round(program.cap_height), name("StemV"): 80,
            name("FontFile2"): _stream(program.data, {name("Length1"): len(program.data)}),
        }  # fmt: skip
        gid_map = b"\0\0" + b"".join(gid.to_bytes(2, "big") for gid in self.gids)
        descendant = {
            name("Type"): name("Font"), name("Subtype"): name("CIDFontType2"), name("BaseFont"): base,
            name("CIDSystemInfo"): {name("Registry"): "Adobe", name("Ordering"): "Identity",
                                    name("Supplement"): 0},
            name("FontDescriptor"): descriptor, name("DW"): 1000, name("W"): [1, self.widths],
            name("CIDToGIDMap"): _stream(gid_map, {}),
        }  # fmt: skip
        return {
            name("Type"): name("Font"), name("Subtype"): name("Type0"), name("BaseFont"): base,
            name("Encoding"): name("Identity-H"), name("DescendantFonts"): [descendant],
            name("ToUnicode"): _stream(self._to_unicode(), {}),
        }  # fmt: skip

    def _to_unicode(self) -> bytes:
        """The CMap from each code back to its text (a ligature's several characters, or none)."""
        entries = [
            f"<{code:04X}> <{text.encode('utf-16-be').hex().upper()}>"
            for (_, text), code in self.codes.items()
        ]
        chunks = [entries[i : i + 100] for i in range(0, len(entries), 100)]
        body = "".join(f"{len(c)} beginbfchar\n" + "\n".join(c) + "\nendbfchar\n" for c in chunks)
        return (
            "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
            "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
            "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
            "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
            f"{body}endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
        ).encode("ascii")


def _stream(data: bytes, extra: dict[Any, Any]) -> Any:
    result = stream()
    result[name("Bytes")] = zlib.compress(data, 6)
    result[name("Filter")] = name("FlateDecode")
    result[name("Length")] = len(result[name("Bytes")])
    result.update(extra)
    return result


class _Painter:
    """Paints one document's pages; the embedded fonts are shared by every page and written at the end."""

    def __init__(self) -> None:
        self.embedded: dict[str, _EmbeddedFont] = {}
        self.mono = Standard14Fonts.get(_MONO)  # borb names it per page
        self.colors = {key: HexColor(value) for key, value in _COLORS.items()}
        self.dictionaries: dict[str, dict[Any, Any]] = {}

    def page(self, page: Any, placed: list[tuple[float, Line]]) -> None:
        for x, y, w, h, color in _merged_boxes(placed):
            _Box(self.colors[color]).paint((MARGIN_X + x, round(y, 2), w, round(h, 2)), page)
        ops: list[str] = []
        used = set()
        for top, line in placed:
            for run in line.runs:
                x, y = round(MARGIN_X + run.x, 2), round(top - line.baseline, 2)
                if run.font == "mono":
                    self._flush(page, ops)  # the Chunk writes at once: what came before it goes first
                    chunk = Chunk(winansi(run.text), font=self.mono, font_size=run.size,
                                  font_color=self.colors[run.color])  # fmt: skip
                    chunk.paint((x, y, TEXT_WIDTH, run.size), page)
                    continue
                key = "/".join(run.font.split("/")[:2])  # slanted or not, one face at one weight
                font = self.embedded.get(key)
                if font is None:
                    font = self.embedded[key] = _EmbeddedFont(key, f"U{len(self.embedded) + 1}")
                    self.dictionaries[font.resource] = {}  # filled in by finish(), once all glyphs are known
                used.add(font.resource)
                ops.append(f"{_rgb(_COLORS[run.color])}\n{font.show(run, x, y)}")
        resources = page["Resources"].setdefault("Font", {}) if "Resources" in page else None
        if resources is None:
            page["Resources"] = {"Font": {}}
            resources = page["Resources"]["Font"]
        for resource in used:
            resources[resource] = self.dictionaries[resource]
        self._flush(page, ops)

    @staticmethod
    def _flush(page: Any, ops: list[str]) -> None:
        if ops:
            LayoutElement._append_to_content_stream(page=page, bytes_or_string="q\n" + "".join(ops) + "Q\n")
            ops.clear()

    def finish(self) -> None:
        for font in self.embedded.values():
            self.dictionaries[font.resource].update(font.dictionary())


def _merged_boxes(placed: list[tuple[float, Line]]) -> list[list[Any]]:
    boxes: list[list[Any]] = []
    for top, line in placed:
        for x, y, w, h, color in line.boxes:
            last = boxes[-1] if boxes else None
            if last and (last[0], last[2], last[4]) == (x, w, color) and abs(last[1] - (top - y)) < 0.01:
                last[1], last[3] = top - y - h, last[3] + h  # stack onto the box above: no seams, fewer ops
            else:
                boxes.append([x, top - y - h, w, h, color])
    return boxes


def _set_info(pdf: Any, document: ReportDocument) -> None:
    """Title and dates in the PDF's metadata; borb writes these strings unescaped, so ASCII without parens."""
    title = unicodedata.normalize("NFKD", document.title).encode("ascii", "ignore").decode()
    info = pdf["Trailer"]["Info"]
    info["Title"] = " ".join(re.sub(r"[()\\]", " ", title).split())
    info["CreationDate"] = info["ModDate"] = f"D:{utc(document.created_at):%Y%m%d%H%M%S}Z"


def clear_shaping_cache() -> None:
    """Forget every shaped run (for benchmarks and tests that time a render of text never seen before)."""
    fonts.shape.cache_clear()


def render_pdf(document: ReportDocument) -> bytes:
    """The report as PDF bytes. Pure and CPU-bound: call it through ``PdfRenderer`` from async code."""
    try:
        pages = _TYPESETTER.pages(document)
        pdf = Document()
        painter = _Painter()
        for number, placed in enumerate(pages, start=1):
            page = Page(width_in_points=PAGE_WIDTH, height_in_points=PAGE_HEIGHT)
            pdf.append_page(page)
            painter.page(page, [*placed, _TYPESETTER.footer(document, number, len(pages))])
        painter.finish()
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
