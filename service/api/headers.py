"""Request headers by name, read once per request.

Starlette's ``request.headers.get`` walks the header list and encodes the name on every call; a
submission asks for four headers, so they are put in a dict on the first ask (the first value of a
repeated header wins, as ``Headers.get`` answers) and looked up from there.
"""

from __future__ import annotations

from starlette.requests import Request

_SCOPE_KEY = "rs.headers"


def header(request: Request, name: bytes, default: str = "") -> str:
    """The header's value (``name`` in lower case, as ASGI servers give names), else ``default``."""
    value = _headers(request).get(name)
    return default if value is None else value.decode("latin-1")


def optional_header(request: Request, name: bytes) -> str | None:
    value = _headers(request).get(name)
    return None if value is None else value.decode("latin-1")


def _headers(request: Request) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] | None = request.scope.get(_SCOPE_KEY)
    if found is None:
        found = {}
        for key, value in request.scope["headers"]:
            found.setdefault(key, value)
        request.scope[_SCOPE_KEY] = found
    return found
