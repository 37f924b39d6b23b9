"""Which jobs this worker process is running (their tasks, so a cancel or a drain can stop them),
and whether one of them is a suspect running alone: what START needs to know to tell a job that
kills its workers from its neighbours."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class RunningJobs:
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # job id -> its task
    suspect: str | None = None  # the job running alone, if any
    stopped: set[str] = field(default_factory=set)  # jobs told to stop (cancelled by their user)
    # Starts are serialised: what one START was told (how many run here, whether a suspect does)
    # must still be true when the next one asks.
    _starting: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __len__(self) -> int:
        return len(self.tasks)

    @asynccontextmanager
    async def starting(self) -> AsyncIterator[tuple[int, bool]]:
        """Holds the start lock; yields (jobs running here, whether a suspect runs alone here)."""
        async with self._starting:
            yield len(self.tasks), self.suspect is not None

    def began(self, job_id: str, task: asyncio.Task[None], *, alone: bool) -> None:
        self.tasks[job_id] = task
        if alone:
            self.suspect = job_id
        task.add_done_callback(lambda _: self.ended(job_id))

    def ended(self, job_id: str) -> None:
        self.tasks.pop(job_id, None)
        self.stopped.discard(job_id)
        if self.suspect == job_id:
            self.suspect = None

    def stop(self, job_id: str) -> bool:
        """Stops a job this process runs (its user cancelled it); False when it runs elsewhere."""
        task = self.tasks.get(job_id)
        if task is None or task.done():
            return False
        self.stopped.add(job_id)
        task.cancel()
        return True
