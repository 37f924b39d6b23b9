"""Which jobs this worker process is running, and whether one of them is a suspect running alone:
what START needs to know to tell a job that kills its workers from its neighbours."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class RunningJobs:
    jobs: set[str] = field(default_factory=set)
    suspect: str | None = None  # the job running alone, if any
    # Starts are serialised: what one START was told (how many run here, whether a suspect does)
    # must still be true when the next one asks.
    _starting: asyncio.Lock = field(default_factory=asyncio.Lock)

    @asynccontextmanager
    async def starting(self) -> AsyncIterator[tuple[int, bool]]:
        """Holds the start lock; yields (jobs running here, whether a suspect runs alone here)."""
        async with self._starting:
            yield len(self.jobs), self.suspect is not None

    def began(self, job_id: str, *, alone: bool) -> None:
        self.jobs.add(job_id)
        if alone:
            self.suspect = job_id

    def ended(self, job_id: str) -> None:
        self.jobs.discard(job_id)
        if self.suspect == job_id:
            self.suspect = None
