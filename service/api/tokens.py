"""Signed, expiring events tokens: how a browser's EventSource proves it may watch one job."""

from __future__ import annotations

import base64
import hashlib
import hmac


def _signature(secret: bytes, job_id: str, expires_at: int) -> str:
    mac = hmac.new(secret, f"events\x00{job_id}\x00{expires_at}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def sign_events_token(secret: bytes, job_id: str, *, expires_at: int) -> str:
    """``<expiry unix seconds>.<HMAC>``: bound to one job, useless for any other request."""
    return f"{expires_at}.{_signature(secret, job_id, expires_at)}"


def verify_events_token(secret: bytes, token: str, job_id: str, *, now: float) -> bool:
    expires_text, _, signature = token.partition(".")
    if not expires_text.isdigit() or not signature:
        return False
    expires_at = int(expires_text)
    if expires_at < now:
        return False
    return hmac.compare_digest(signature, _signature(secret, job_id, expires_at))
