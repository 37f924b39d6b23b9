"""``GET /docs``: Swagger UI rendering ``/openapi.json``, its files served by the service itself from
the ``swagger-ui-bundle-v2`` wheel (no CDN), under a strict Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from swagger_ui_bundle import swagger_ui_path

from service.api.page import HtmlPage, inline_hashes
from service.core.errors import NotFound

PAGE = Path(__file__).resolve().parent / "static" / "docs.html"
# The only files of the bundle the page loads; nothing else of the wheel is served.
ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}


def content_security_policy(html: str) -> str:
    """Scripts and styles from this origin only, plus the page's own inline script by hash; no
    eval, no inline styles, no frames, no other origin. Not Trusted Types: Swagger UI renders the
    descriptions' Markdown as HTML (sanitized by its DOMPurify)."""
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' {inline_hashes(html, 'script')}",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


_DOCS = HtmlPage(PAGE, content_security_policy)


async def docs(request: Request) -> Response:
    return _DOCS.response()


async def docs_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        raise NotFound("no such file")
    # Revalidated by ETag: the path has no version in it, and an upgrade must not serve stale files.
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return FileResponse(Path(swagger_ui_path) / name, media_type=ASSETS[name], headers=headers)
