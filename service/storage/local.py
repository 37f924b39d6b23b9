"""Where PDFs and uploads live: the interface, a local-directory backend, and the factory choosing one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from service.core.settings import Settings

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,3}$")


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


class LocalStorage:
    """A directory on this host: right for one machine, or a volume shared by API and workers."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, key: str) -> Path:
        return self._root / check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write_atomically, self._path(key), data)

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._read, self._path(key))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def aclose(self) -> None:
        return None  # nothing held open

    async def sweep(self, prefix: str, older_than_seconds: float) -> int:
        return await asyncio.to_thread(self._sweep, self._root / check_key(prefix), older_than_seconds)

    @staticmethod
    def _sweep(folder: Path, older_than_seconds: float) -> int:
        # Leftover ".partial-" files from a crash mid-write go too, once they are an hour old.
        now = time.time()
        removed = 0
        for path in folder.glob("*") if folder.is_dir() else ():
            limit = min(older_than_seconds, 3600) if path.name.startswith(".partial-") else older_than_seconds
            with contextlib.suppress(FileNotFoundError):
                if now - path.stat().st_mtime > limit:
                    path.unlink()
                    removed += 1
        return removed

    @staticmethod
    def _write_atomically(path: Path, data: bytes) -> None:
        # Write beside the target, flush to disk, then rename: a crash leaves the old file or none.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None


def storage_from(settings: Settings) -> Storage:
    """The object store when ``S3_BUCKET`` is set (hosts share nothing else), else a local directory."""
    if settings.s3_bucket:
        from service.storage.s3 import S3Storage  # boto3 costs ~0.2 s to import: only when it is used

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.storage_root)
