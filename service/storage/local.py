"""Local storage: a directory on this host (one machine, or a volume shared by API and workers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path

from service.storage.base import check_key


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
