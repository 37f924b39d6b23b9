"""The storage interface every backend implements, and the one rule on keys they all share."""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,3}\Z")


def check_key(key: str) -> str:
    """Keys are ours (report ids), but a path check costs nothing and stops traversal for good."""
    if not _SAFE_KEY.match(key) or ".." in key:
        raise ValueError(f"unsafe storage key: {key!r}")
    return key


class Storage(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Stores all of ``data`` or nothing: a reader never sees a partial object."""

    async def get(self, key: str) -> bytes | None: ...

    async def delete(self, key: str) -> None: ...

    async def sweep(self, prefix: str, older_than_seconds: float) -> int:
        """Deletes objects under ``prefix`` older than that; returns how many went."""

    async def aclose(self) -> None:
        """Releases connections and threads, once the process is done with the store."""


@runtime_checkable
class DirectDownloads(Protocol):
    """A store a client can download from itself, through a link that expires (S3's pre-signed URLs)."""

    async def download_url(self, key: str, expires_in: int) -> str: ...
