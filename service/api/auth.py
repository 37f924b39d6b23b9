"""Who is calling: bearer API keys for every endpoint, signed tokens for browsers' EventSource."""

from __future__ import annotations

import time

from starlette.requests import Request

from service.api.headers import header
from service.api.resources import ApiServices
from service.api.tokens import parse_events_token, sign_events_token, signed_for
from service.core.errors import Unauthorized
from service.store.keys import Caller


def bearer_key(request: Request) -> str | None:
    scheme, _, credentials = header(request, b"authorization").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


async def require_caller(request: Request, svc: ApiServices) -> Caller:
    api_key = bearer_key(request)
    if api_key is None:
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>'")
    caller = await svc.keys.authenticate(api_key)
    if caller is None:
        raise Unauthorized("the API key is unknown or revoked")
    return caller


async def events_token(svc: ApiServices, caller: Caller, job_id: str) -> str:
    """A token for ``eventsUrl``, bound to this job and to the key that asked for it."""
    expires_at = int(time.time()) + svc.settings.events_token_ttl_seconds
    return sign_events_token(await svc.signing.current(), job_id, key_id=caller.key_id, expires_at=expires_at)


async def token_caller(svc: ApiServices, token: str, job_id: str) -> Caller | None:
    """The caller whose key minted this token for this job; None when the token is malformed,
    expired, for another job, or its key is revoked. A revoked key's tokens stop within
    ``AUTH_CACHE_SECONDS``, as its bearer requests do (both read the key through the same cache)."""
    parsed = parse_events_token(token)
    if parsed is None or parsed.expires_at < time.time():
        return None
    if not await svc.signing.verify(lambda secret: signed_for(secret, parsed, job_id)):
        return None
    return await svc.keys.by_key_id(parsed.key_id)
