"""Signed, expiring events tokens: how a browser's EventSource proves it may watch one job.

``<expiry unix seconds>.<key id>.<HMAC>``: bound to one job and to the API key that asked for it,
so the token stops working when that key is revoked (``service.api.auth`` checks the key). The
parts are checked against ASCII patterns before anything else: a token is whatever a client put
in a query string, and ``str.isdigit`` (which takes "²") or ``hmac.compare_digest`` on text (which
raises on non-ASCII) must never see one raw.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from dataclasses import dataclass

_TOKEN = re.compile(r"(?P<expires>[0-9]{1,12})\.(?P<key>[A-Za-z0-9_-]{1,64})\.(?P<mac>[A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class EventsToken:
    expires_at: int
    key_id: str
    signature: str


def _signature(secret: bytes, job_id: str, key_id: str, expires_at: int) -> str:
    # NUL separates the fields: none of them can contain one, so no two tokens sign the same text.
    message = f"events\x00{job_id}\x00{key_id}\x00{expires_at}".encode(errors="surrogatepass")
    mac = _keyed(secret).copy()
    mac.update(message)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


@functools.lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    """The HMAC already keyed with the secret, to copy: keying it anew on every token (what
    ``hmac.digest`` does, with a digest lookup) took half of a signature's 3 us. The secrets are
    the few current signing secrets (``service.api.signing``)."""
    return hmac.new(secret, digestmod=hashlib.sha256)


def sign_events_token(secret: bytes, job_id: str, *, key_id: str, expires_at: int) -> str:
    return f"{expires_at}.{key_id}.{_signature(secret, job_id, key_id, expires_at)}"


def parse_events_token(token: str) -> EventsToken | None:
    """The token's parts, or None when it is not shaped like a token at all."""
    found = _TOKEN.fullmatch(token)
    if found is None:
        return None
    return EventsToken(int(found["expires"]), found["key"], found["mac"])


def signed_for(secret: bytes, token: EventsToken, job_id: str) -> bool:
    """Whether ``secret`` signed this token for this job (its expiry is the caller's to check)."""
    expected = _signature(secret, job_id, token.key_id, token.expires_at)
    return hmac.compare_digest(token.signature.encode(), expected.encode())
