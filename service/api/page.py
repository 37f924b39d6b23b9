"""``GET /``: the one-file web page, served with a strict Content-Security-Policy."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
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


@functools.cache
def _page() -> tuple[bytes, dict[str, str]]:
    html = PAGE.read_text(encoding="utf-8")
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        # eventsUrl carries a token in its query string: never let it leave in a Referer.
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return html.encode(), headers


async def index(request: Request) -> Response:
    body, headers = _page()
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)
