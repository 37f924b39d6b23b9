"""Who is calling: bearer API keys for every endpoint, signed tokens for browsers' EventSource."""

from __future__ import annotations

import time

from starlette.requests import Request

from service.api.resources import ApiServices
from service.api.tokens import sign_events_token, verify_events_token
from service.core.errors import Unauthorized
from service.store.keys import Caller


def bearer_key(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
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


async def events_token(svc: ApiServices, job_id: str) -> str:
    expires_at = int(time.time()) + svc.settings.events_token_ttl_seconds
    return sign_events_token(await svc.signing_secret(), job_id, expires_at=expires_at)


async def token_allows(svc: ApiServices, token: str, job_id: str) -> bool:
    return verify_events_token(await svc.signing_secret(), token, job_id, now=time.time())
