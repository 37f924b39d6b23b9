"""A bounded in-process cache whose entries expire: what an API process may remember of Redis."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """At most ``limit`` entries, each for ``seconds`` (0: remembers nothing). Past the limit the
    oldest entry goes first, so a flood of new keys costs memory up to the limit and no more."""

    def __init__(self, seconds: float, *, limit: int) -> None:
        self.seconds = seconds
        self._limit = limit
        self._entries: dict[K, tuple[float, V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        if self.seconds <= 0:
            return
        self._entries.pop(key, None)  # re-inserted last: dicts keep insertion order, oldest first
        if len(self._entries) >= self._limit:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (time.monotonic() + self.seconds, value)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)
