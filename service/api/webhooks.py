"""The caller's webhook signing secret: ``GET /api/webhooks/secret``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from service.api.auth import require_caller
from service.api.resources import services
from service.api.responses import JSONResponse


async def webhook_secret(request: Request) -> Response:
    """``{"secret": "whsec_..."}``: the secret every webhook of the caller's jobs is signed with,
    created on first use and the same ever after. Never cached on the way (it is a secret)."""
    svc = services(request)
    caller = await require_caller(request, svc)
    secret = await svc.webhook_secrets.secret_for(caller.user_id)
    return JSONResponse({"secret": secret}, headers={"Cache-Control": "no-store"})
