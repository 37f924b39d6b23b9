"""``GET /``: the one-file web page, served with a strict Content-Security-Policy."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

PAGE = Path(__file__).resolve().parent / "static" / "index.html"


def inline_hashes(html: str, tag: str) -> str:
    """The CSP sources that let exactly the page's own inline ``<tag>`` blocks run."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    digests = (base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() for block in blocks)
    return " ".join(f"'sha256-{digest}'" for digest in digests)


def content_security_policy(html: str) -> str:
    """Only the page's own inline script and style run (by hash, so nothing injected can), it talks
    only to this origin, and it cannot be framed; no innerHTML-style sinks (Trusted Types)."""
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {inline_hashes(html, 'script')}",
            f"style-src {inline_hashes(html, 'style')}",
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
        ]
    )


class HtmlPage:
    """One HTML file of the service's, read once and served with the headers every page gets: its
    Content-Security-Policy (made from the file, for its inline hashes), no sniffing, no Referer
    (eventsUrl carries a token in its query string: it must never leave in one) and revalidation."""

    def __init__(self, path: Path, policy: Callable[[str], str]) -> None:
        self._path = path
        self._policy = policy

    @functools.cached_property
    def _loaded(self) -> tuple[bytes, dict[str, str]]:
        html = self._path.read_text(encoding="utf-8")
        headers = {
            "Content-Security-Policy": self._policy(html),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }
        return html.encode(), headers

    def response(self) -> Response:
        body, headers = self._loaded
        return Response(body, media_type="text/html; charset=utf-8", headers=headers)


_INDEX = HtmlPage(PAGE, content_security_policy)


async def index(request: Request) -> Response:
    return _INDEX.response()
