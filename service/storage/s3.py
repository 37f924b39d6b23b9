"""S3-compatible object storage (AWS S3, Cloudflare R2, Tigris, MinIO) shared by every host.

boto3 is synchronous, so every call runs in a thread pool of this store's own, never on the event
loop and never in the loop's default executor: a stalled object store then cannot starve
``getaddrinfo`` and the rest of what runs there. The pool has as many threads as botocore's
connection pool has connections, so no thread waits for a connection. A cancelled await (job
timeout, shutdown) leaves its thread to finish that one request; a PUT that lands afterwards only
writes the same key the next attempt writes again.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from service.core.errors import TransientJobError, Unavailable
from service.core.settings import Settings
from service.storage.base import check_key

log = structlog.get_logger(__name__)

T = TypeVar("T")

POOL_SIZE = 16  # threads, and botocore connections
RETRY_AFTER_SECONDS = 5
DEFAULT_REGION = "us-east-1"  # what S3-compatible stores accept when no region is configured
_DELETE_CONCURRENCY = 8
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*\Z")
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


class ObjectStoreUnavailable(TransientJobError, Unavailable):
    """The object store failed or refused a request: never the user's doing, so never a permanent
    failure. A job retries with backoff (spending an attempt); an API request is answered 503 with
    Retry-After. ``misconfigured``: the store refused us (bucket, credentials, region, permissions),
    which another try fixes only once an operator has."""

    retry_after: int | None

    def __init__(self, reason: str, *, misconfigured: bool = False) -> None:
        # Cooperative: JobError's super().__init__ reaches ApiError's, so reason, message and
        # retry_after are all set.
        super().__init__(reason, retry_after=RETRY_AFTER_SECONDS)
        self.misconfigured = misconfigured


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def translate(exc: BotoCoreError | ClientError, action: str) -> ObjectStoreUnavailable:
    """botocore's exception as ours. The reason is shown to the job's owner: no bucket, no key."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        # Our requests are well-formed, so a 4xx is the store's configuration speaking; 5xx, 408,
        # 429 and SlowDown are the store having a bad moment.
        refused = 400 <= status < 500 and status not in (408, 429) and code != "SlowDown"
        reason = f"the object store {'refused' if refused else 'failed'} to {action} ({status} {code})"
        return ObjectStoreUnavailable(reason, misconfigured=refused)
    no_credentials = isinstance(exc, NoCredentialsError | PartialCredentialsError)
    reason = f"the object store could not be reached to {action} ({type(exc).__name__})"
    return ObjectStoreUnavailable(reason, misconfigured=no_credentials)


def normalized_prefix(prefix: str) -> str:
    cleaned = prefix.strip("/")
    if cleaned and (not _PREFIX.match(cleaned) or ".." in cleaned.split("/")):
        raise ValueError(f"S3_PREFIX must be path segments of letters, digits, '.', '_' and '-': {prefix!r}")
    return f"{cleaned}/" if cleaned else ""


@dataclass(frozen=True)
class S3Config:
    bucket: str
    endpoint_url: str | None = None  # None: AWS itself, or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
    region: str | None = None  # None: the AWS chain (AWS_REGION, ~/.aws/config), else DEFAULT_REGION
    access_key_id: str | None = None  # None: the AWS chain (AWS_ACCESS_KEY_ID, profiles, roles)
    secret_access_key: str | None = None
    prefix: str = ""
    attempts: int = 3  # botocore's tries per request (standard mode: jittered backoff), before ours
    page_size: int = 1000  # keys per listing page (S3's maximum)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Config:
        assert settings.s3_bucket, "S3Config needs S3_BUCKET"
        secret = settings.s3_secret_access_key
        return cls(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            prefix=settings.s3_prefix,
        )


def build_client(config: S3Config) -> Any:
    """A botocore S3 client (thread-safe; the session that makes it is not, and is dropped)."""
    session = boto3.session.Session(
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        region_name=config.region,
    )
    options = Config(
        region_name=session.region_name or DEFAULT_REGION,
        signature_version="s3v4",  # R2 and Tigris take only SigV4, pre-signed links included
        # Path-style on a custom endpoint: MinIO needs it, R2 and Tigris accept it, and it needs no
        # wildcard DNS for the bucket's name.
        s3={"addressing_style": "path" if config.endpoint_url else "auto"},
        connect_timeout=3,
        read_timeout=20,
        retries={"mode": "standard", "total_max_attempts": config.attempts},
        max_pool_connections=POOL_SIZE,
        # botocore >= 1.36 adds CRC32 checksums (aws-chunked trailers) that several S3-compatible
        # stores refuse; we send Content-MD5 ourselves, which every one of them checks.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return session.client("s3", endpoint_url=config.endpoint_url, config=options)


class S3Storage:
    """``Storage`` on a bucket. A PUT is atomic on S3 and every compatible store: a reader sees the
    old object or all of the new one, never part of it."""

    def __init__(self, config: S3Config) -> None:
        self._bucket = config.bucket
        self._prefix = normalized_prefix(config.prefix)
        self._page_size = config.page_size
        self._client = build_client(config)
        self._executor = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="s3")

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        return cls(S3Config.from_settings(settings))

    def _name(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def _run(self, action: str, work: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except (BotoCoreError, ClientError) as exc:
            error = translate(exc, action)
            report = log.error if error.misconfigured else log.warning
            report(
                "object_store_error", action=action, reason=error.reason, misconfigured=error.misconfigured
            )
            raise error from exc

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        # Content-MD5: a body damaged on the way is refused (BadDigest), never stored.
        digest = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        call = functools.partial(
            self._client.put_object,
            Bucket=self._bucket,
            Key=self._name(key),
            Body=data,
            ContentType=content_type,
            ContentMD5=digest,
        )
        await self._run("store an object", call)

    async def get(self, key: str) -> bytes | None:
        return await self._run("read an object", functools.partial(self._read, self._name(key)))

    def _read(self, name: str) -> bytes | None:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=name)
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                return None
            raise
        body = response["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        await self._delete_names([self._name(key)])

    async def _delete_names(self, names: list[str]) -> None:
        # One DeleteObject each, a few at a time: DeleteObjects must carry a checksum, and botocore
        # now sends CRC32 where several S3-compatible stores still insist on Content-MD5.
        delete = functools.partial(self._client.delete_object, Bucket=self._bucket)
        for start in range(0, len(names), _DELETE_CONCURRENCY):
            chunk = names[start : start + _DELETE_CONCURRENCY]
            await asyncio.gather(
                *(self._run("delete an object", functools.partial(delete, Key=n)) for n in chunk)
            )

    async def sweep(self, prefix: str, older_than_seconds: float) -> int:
        """Lists the prefix page by page and deletes what is older as it goes: a cancelled sweep
        (the cron's timeout) stops between pages, and the next one carries on."""
        folder = self._name(prefix) + "/"
        cutoff = time.time() - older_than_seconds
        removed = 0
        token: str | None = None
        while True:
            page = await self._run("list objects", functools.partial(self._list_page, folder, token))
            contents: list[dict[str, Any]] = page.get("Contents", [])
            expired = [item["Key"] for item in contents if item["LastModified"].timestamp() < cutoff]
            await self._delete_names(expired)
            removed += len(expired)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return removed

    def _list_page(self, folder: str, token: str | None) -> dict[str, Any]:
        extra = {"ContinuationToken": token} if token else {}
        page: dict[str, Any] = self._client.list_objects_v2(
            Bucket=self._bucket, Prefix=folder, MaxKeys=self._page_size, **extra
        )
        return page

    def presigned_url(self, key: str, expires_in: int) -> str:
        """A link that downloads the object without credentials until it expires. Signed locally, but
        refreshing credentials from an instance role can block: ``download_url`` runs it in the pool."""
        name = self._name(key)
        params = {
            "Bucket": self._bucket,
            "Key": name,
            "ResponseContentDisposition": f'inline; filename="{name.rsplit("/", 1)[-1]}"',
        }
        return str(self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in))

    async def download_url(self, key: str, expires_in: int) -> str:
        return await self._run("sign a download link", functools.partial(self.presigned_url, key, expires_in))

    async def aclose(self) -> None:
        """Lets running requests finish, then closes the pooled connections."""
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        self._client.close()
