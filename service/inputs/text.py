"""Turning a fetched input's bytes into text: media types, binary sniffing, charsets, bounded gunzip."""

from __future__ import annotations

import codecs
import json
import re
import zlib

from service.core.errors import InputRejected

CSV, JSON, PLAIN = "text/csv", "application/json", "text/plain"

# Served for "I don't know": the URL's extension and the bytes decide instead.
_UNKNOWN_TYPES = {
    "",
    "application/octet-stream",
    "binary/octet-stream",
    "application/unknown",
    "application/download",
    "application/force-download",
    "application/x-download",
    "application/vnd.ms-excel",  # what many servers send for .csv (and for real .xls, caught by sniffing)
}
_CSV_TYPES = {"text/csv", "application/csv", "text/comma-separated-values", "text/x-csv"}
_JSON_TYPES = {"application/json", "text/json", "application/x-json"}
_OTHER_TEXT_TYPES = {
    "application/xml",
    "application/javascript",
    "application/x-ndjson",
    "application/jsonl",
    "application/yaml",
    "application/x-yaml",
    "application/sql",
}
_EXTENSIONS = {"csv": CSV, "json": JSON, "geojson": JSON}
_MAGIC = (b"%PDF-", b"PK\x03\x04", b"\x1f\x8b", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"BZh", b"\xfd7zXZ")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Labels that old servers attach by default whatever the bytes are; decoded as browsers do.
_WESTERN_DEFAULTS = {"ascii", "iso8859-1", "cp1252"}
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}\Z")
_NOT_TEXT = "the input is not text ({}); use a URL that serves CSV, JSON or plain text"


def parse_content_type(header: str | None) -> tuple[str, str | None]:
    """``("text/csv", "utf-8")`` from ``text/csv; charset="UTF-8"``; ``("", None)`` when absent."""
    if not header:
        return "", None
    media_type, *params = header.split(";")
    charset = None
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'") or None
    return media_type.strip().lower(), charset


def declared_kind(media_type: str) -> str | None:
    """The normalised type a server declared, None when it declared nothing useful; refuses binaries."""
    if media_type in _UNKNOWN_TYPES:
        return None
    if media_type in _CSV_TYPES:
        return CSV
    if media_type in _JSON_TYPES or (media_type.startswith("application/") and media_type.endswith("+json")):
        return JSON
    if media_type.startswith("text/") or media_type in _OTHER_TEXT_TYPES or media_type.endswith("+xml"):
        return PLAIN
    shown = f"it was served as {media_type}" if _MEDIA_TYPE.match(media_type) else "unsupported type"
    raise InputRejected(_NOT_TEXT.format(shown))


def decode_text(body: bytes, charset: str | None) -> str:
    """Text from bytes: a BOM wins, then a declared charset, then UTF-8, then Windows-1252."""
    if body.startswith(_MAGIC):
        raise InputRejected(_NOT_TEXT.format("it looks like a PDF, image or archive"))
    text = _decode(body, charset)
    # A NUL character never occurs in real text, but in nearly every binary format.
    if "\x00" in text:
        raise InputRejected(_NOT_TEXT.format("it contains binary data"))
    return text


def _decode(body: bytes, charset: str | None) -> str:
    for bom, codec in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(codec, errors="replace")
    declared = _codec_name(charset)
    if declared is not None and declared not in _WESTERN_DEFAULTS:
        return _decode_as(body, declared)
    try:
        # Valid UTF-8 with non-ASCII bytes is almost never meant as Latin-1, whatever an old default says.
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("cp1252", errors="replace")


def _codec_name(charset: str | None) -> str | None:
    if charset is None:
        return None
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return None  # an unknown label is ignored, as browsers do


def _decode_as(body: bytes, codec: str) -> str:
    try:
        return body.decode(codec, errors="replace")
    except LookupError:  # a codec that is not a text encoding (e.g. "base64"): fall back
        return _decode(body, None)


def name_from_path(path: str) -> str:
    """The last segment of a (decoded) URL path, printable and without separators, or "input"."""
    segment = path.rstrip("/").rsplit("/", 1)[-1]
    cleaned = "".join(c for c in segment if c.isprintable() and c not in "\\/")[:200].strip()
    return cleaned or "input"


def human_size(size: int) -> str:
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f} MB"
    if size >= 1_000:
        return f"{size / 1_000:.1f} kB"
    return f"{size} bytes"


def guess_kind(declared: str | None, name: str, text: str) -> str:
    """The final type: the declared one, unless it is missing or generic text and the name says more."""
    if declared not in (None, PLAIN):
        return declared
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    guessed = _EXTENSIONS.get(extension)
    if guessed == JSON or (guessed is None and declared is None and text.lstrip()[:1] in ("{", "[")):
        return JSON if _is_json(text) else PLAIN
    return guessed or PLAIN


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class BoundedDecoder:
    """Undoes a Content-Encoding while never producing more than the caller still accepts.

    ``zlib``'s ``max_length`` keeps a decompression bomb from expanding past the byte cap in memory:
    a 50 kB gzip of zeros stops after cap + 1 decoded bytes instead of inflating to 50 MB first.
    """

    def __init__(self, content_encoding: str | None) -> None:
        encoding = (content_encoding or "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            # 32 + MAX_WBITS: accept a gzip or a zlib header, whichever the server actually sent.
            self._inflater: zlib._Decompress | None = zlib.decompressobj(32 + zlib.MAX_WBITS)
        elif encoding in ("identity", ""):
            self._inflater = None
        else:
            shown = encoding if _MEDIA_TYPE.match(f"x/{encoding}") else "an unknown scheme"
            raise InputRejected(
                f"the input is compressed with {shown}, which is not supported; serve it plain or gzipped"
            )

    def feed(self, data: bytes, limit: int) -> bytes:
        """Decoded bytes for ``data``; at most ``limit`` of them (the caller treats ``limit`` as too many)."""
        if self._inflater is None:
            return data
        try:
            return self._inflater.decompress(data, limit)
        except zlib.error as exc:
            raise InputRejected("the input's compressed data is corrupt") from exc

    def finish(self) -> None:
        if self._inflater is not None and not self._inflater.eof:
            raise InputRejected("the input's compressed data is truncated or corrupt")
