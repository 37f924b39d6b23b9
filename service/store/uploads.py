"""Uploaded inputs: who owns them and what they are. The bytes live in storage, never in Redis."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from service.core.clock import now_ms
from service.store import names
from service.store.connection import RedisStore, translate_redis_errors

UPLOAD_SCHEME = "input://"
_UPLOAD_ID = re.compile(r"^inp_[0-9a-f]{32}\Z")


def storage_key(input_id: str) -> str:
    return f"inputs/{input_id}"


def upload_id_from_url(url: str) -> str | None:
    """``input://inp_…`` → ``inp_…``; None for any other URL or a malformed id."""
    if not url.startswith(UPLOAD_SCHEME):
        return None
    input_id = url[len(UPLOAD_SCHEME) :]
    return input_id if _UPLOAD_ID.match(input_id) else None


@dataclass(frozen=True)
class Upload:
    input_id: str
    user_id: str
    content_type: str
    name: str
    size: int
    created_ms: int

    @property
    def url(self) -> str:
        return UPLOAD_SCHEME + self.input_id


def new_upload_id() -> str:
    return "inp_" + secrets.token_hex(16)


class UploadStore(RedisStore):
    @translate_redis_errors
    async def record(self, upload: Upload, *, ttl_seconds: int) -> None:
        fields = {
            "user_id": upload.user_id,
            "content_type": upload.content_type,
            "name": upload.name,
            "size": upload.size,
            "created_ms": upload.created_ms,
        }
        # One transaction: a record written without its expiry would outlive its bytes for good.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(names.upload(upload.input_id), mapping=fields)
            pipe.expire(names.upload(upload.input_id), ttl_seconds)
            await pipe.execute()

    @translate_redis_errors
    async def owned(self, input_id: str, user_id: str) -> Upload | None:
        """The upload if it exists and belongs to ``user_id``; None otherwise (indistinguishably)."""
        fields: dict[str, str] = await self._redis.hgetall(names.upload(input_id))  # type: ignore[misc]
        if not fields or fields.get("user_id") != user_id:
            return None
        return Upload(
            input_id=input_id,
            user_id=fields["user_id"],
            content_type=fields["content_type"],
            name=fields["name"],
            size=int(fields["size"]),
            created_ms=int(fields.get("created_ms", now_ms())),
        )
