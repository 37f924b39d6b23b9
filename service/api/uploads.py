"""``POST /api/inputs``: upload an input instead of hosting it somewhere the worker can fetch."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from service.api.auth import require_caller
from service.api.bodies import read_body, require_media_type
from service.api.resources import services
from service.api.responses import JSONResponse
from service.core.clock import iso_from_ms, now_ms
from service.core.errors import BadRequest, InputRejected
from service.inputs import text as input_text
from service.store.uploads import Upload, new_upload_id, storage_key

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
    # Bytes first, record second: a record never points at a file that is not there.
    await svc.storage.put(storage_key(upload.input_id), body, media_type)
    await svc.uploads.record(upload, ttl_seconds=svc.settings.input_retention_seconds)
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
