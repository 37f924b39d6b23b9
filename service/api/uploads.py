"""``POST /api/inputs``: upload an input instead of hosting it somewhere the worker can fetch.

Each user may upload ``UPLOADS_PER_MINUTE_*`` times a minute and keep ``UPLOAD_QUOTA_BYTES_*`` bytes
of uploads at once (``service.store.upload_quota``). The upload is charged before its bytes are
stored and refunded if storing them or recording them fails; a refused upload stores nothing.
"""

from __future__ import annotations

import re

import structlog
from starlette.requests import Request
from starlette.responses import Response

from service.api.auth import require_caller
from service.api.bodies import read_body, require_media_type
from service.api.resources import ApiServices, services
from service.api.responses import JSONResponse
from service.core.clock import iso_from_ms, now_ms
from service.core.errors import BadRequest, InputRejected, QuotaExceeded, RateLimited
from service.inputs import text as input_text
from service.store.keys import Caller
from service.store.policies import upload_policy
from service.store.upload_quota import Admission
from service.store.uploads import Upload, new_upload_id, storage_key

log = structlog.get_logger(__name__)

UPLOAD_TYPES = ("text/csv", "text/plain", "application/json")
_DEFAULT_NAMES = {"text/csv": "upload.csv", "text/plain": "upload.txt", "application/json": "upload.json"}
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._ -]+")


def upload_name(request: Request, media_type: str) -> str:
    """The ``?name=`` the client gave (shown in the report), cleaned; or a default for the type."""
    cleaned = _UNSAFE_NAME_CHARACTERS.sub("_", request.query_params.get("name", "")).strip(" ._")[:100]
    return cleaned or _DEFAULT_NAMES[media_type]


def checked_text(body: bytes, media_type: str) -> None:
    if not body.strip():
        raise BadRequest("the upload is empty")
    try:
        input_text.decode_text(body, None)
    except InputRejected as exc:
        raise BadRequest(exc.reason) from exc


async def upload_input(request: Request) -> Response:
    svc = services(request)
    caller = await require_caller(request, svc)
    media_type = require_media_type(request, UPLOAD_TYPES)
    body = await read_body(request, svc.settings.input_max_bytes)
    checked_text(body, media_type)
    upload = Upload(
        input_id=new_upload_id(),
        user_id=caller.user_id,
        content_type=media_type,
        name=upload_name(request, media_type),
        size=len(body),
        created_ms=now_ms(),
    )
    await charge(svc, caller, upload)
    await keep(svc, upload, body)
    expires = iso_from_ms(upload.created_ms + svc.settings.input_retention_seconds * 1000)
    content = {
        "inputDataUrl": upload.url,
        "inputId": upload.input_id,
        "name": upload.name,
        "contentType": media_type,
        "size": upload.size,
        "expiresAt": expires,
    }
    return JSONResponse(content, status_code=201)


async def charge(svc: ApiServices, caller: Caller, upload: Upload) -> None:
    """Counts the upload against the user's rate and quota, or refuses it (429) charging nothing."""
    policy = upload_policy(svc.settings, caller.plan)
    admission = await svc.upload_quota.admit(caller.user_id, upload.input_id, upload.size, policy)
    if admission.kind == "rate_limited":
        wait = max(1, -(-admission.wait_ms // 1000))
        raise RateLimited(f"too many uploads; retry in {wait} s", retry_after=wait)
    if admission.kind == "over_quota":
        raise quota_refusal(admission, upload.size, policy.quota_bytes)


def quota_refusal(admission: Admission, size: int, quota: int) -> QuotaExceeded:
    used = f"{admission.used:,} of your {quota:,} bytes of uploads are in use (kept until they expire)"
    if admission.fits_at_ms == 0:
        return QuotaExceeded(f"{used}; this upload of {size:,} bytes is larger than the whole quota")
    fits_at = abs(admission.fits_at_ms)
    when = "at" if admission.fits_at_ms > 0 else "not before"
    wait = max(1, -(-(fits_at - now_ms()) // 1000))
    return QuotaExceeded(
        f"{used}; this upload of {size:,} bytes fits once older ones expire, {when} {iso_from_ms(fits_at)}",
        retry_after=wait,
    )


async def keep(svc: ApiServices, upload: Upload, body: bytes) -> None:
    """Bytes first, record second: a record never points at a file that is not there. Whatever
    fails undoes what came before it, so no bytes stay without a record and no charge without both."""
    key = storage_key(upload.input_id)
    try:
        await svc.storage.put(key, body, upload.content_type)
    except BaseException:
        await undo(svc, upload, stored=False)
        raise
    try:
        await svc.uploads.record(upload, ttl_seconds=svc.settings.input_retention_seconds)
    except BaseException:
        await undo(svc, upload, stored=True)
        raise


async def undo(svc: ApiServices, upload: Upload, *, stored: bool) -> None:
    """Best effort: if this fails too (Redis or the store down), the charge runs out with the
    upload's retention, and the sweeper removes the bytes then."""
    try:
        if stored:
            await svc.storage.delete(storage_key(upload.input_id))
        await svc.upload_quota.refund(upload.user_id, upload.input_id, upload.size)
    except Exception as exc:  # the original failure is what the client hears about
        log.warning("upload_undo_failed", input_id=upload.input_id, error_type=type(exc).__name__)
