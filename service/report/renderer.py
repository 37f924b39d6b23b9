"""Rendering off the event loop: the painter in a pool of processes (borb is CPU-bound), under a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType

from service.core.process_pool import DeadlinePool
from service.report import painter
from service.report.document import ReportDocument
from service.report.painter import render_pdf


def _warm_up() -> None:
    markdown = "# Warm-up\n\n- item\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\ncode\n```\n"
    render_pdf(ReportDocument("warm-up", datetime.now(UTC), "offline", markdown, "", True))


class PdfRenderer:
    """Renders in a ``DeadlinePool`` of processes (``service.core.process_pool``): a render still running
    ``timeout`` seconds after a process took it - parsing, layout and painting, the whole render - has its
    process killed and raises ``JobTimedOut``; renders waiting for a process are not charged for the wait
    (the job's own deadline bounds it), and renders running beside it run again on the replacement.

    The fork server preloads the painter, so every pool process - including a replacement - starts with
    borb imported and its font tables built (a replacement renders a 4,000-token report in ~70 ms instead
    of ~170 ms). ``__init__`` also submits one warm-up render per process without waiting for it: the first
    real job then finds a started, warm process (~40 ms) instead of paying ~220 ms for process start-up,
    imports and the first render. The first ``PdfRenderer()`` in a process blocks ~150 ms while the fork
    server starts: create it at worker start-up, not per job.

    ``render`` is what runs in the pool, ``painter.render_pdf`` unless a test needs a render that hangs; it
    must be a module-level function, so that it pickles.
    """

    def __init__(
        self,
        processes: int = 1,
        *,
        timeout: float,
        render: Callable[[ReportDocument], bytes] = render_pdf,
    ) -> None:
        self._render = render
        self._pool = DeadlinePool(
            timeout=timeout,
            timed_out=f"the PDF render took longer than RENDER_TIMEOUT_SECONDS ({timeout:g}s)",
            died="the PDF renderer process died while rendering the report",
            processes=processes,
            preload=[painter.__name__],
            warm_up=_warm_up,
        )

    async def render(self, document: ReportDocument) -> bytes:
        """``render(document)`` in a pool process: ``JobTimedOut`` past the deadline, ``TransientJobError``
        if its process dies by itself, ``PermanentJobError`` if the document cannot be rendered."""
        return await self._pool.run(self._render, document)

    def pids(self) -> list[int]:
        """The ids of the pool's processes (for tests and diagnostics)."""
        return self._pool.pids()

    def close(self) -> None:
        """Stop the pool, waiting for a render in progress (killed if it is still running at its deadline)."""
        self._pool.close()

    async def __aenter__(self) -> PdfRenderer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.close)
