"""Local storage: all-or-nothing writes, safe keys, and the sweep of expired files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from service.storage.local import LocalStorage


async def test_put_then_get_round_trips_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    await storage.put("reports/rep_1.pdf", b"%PDF-1.7 data", "application/pdf")
    assert await storage.get("reports/rep_1.pdf") == b"%PDF-1.7 data"
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["rep_1.pdf"]
    assert await storage.get("reports/missing.pdf") is None


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs/path", "reports/../../x", "", "a//b"])
async def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="unsafe storage key"):
        await LocalStorage(tmp_path).put(key, b"x", "text/plain")


async def test_sweep_removes_only_expired_files_and_stale_partial_writes(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    for name in ("old.pdf", "new.pdf"):
        await storage.put(f"reports/{name}", b"x", "application/pdf")
    crashed_write = tmp_path / "reports" / ".partial-abc"
    crashed_write.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(tmp_path / "reports" / "old.pdf", (two_hours_ago, two_hours_ago))
    os.utime(crashed_write, (two_hours_ago, two_hours_ago))
    assert await storage.sweep("reports", older_than_seconds=86_400 / 24) == 2
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["new.pdf"]
    assert await storage.sweep("inputs", older_than_seconds=1) == 0  # a folder never written is fine
