"""Rendering off the event loop: a pool of processes running the painter (borb is CPU-bound)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from types import TracebackType

from service.core.errors import TransientJobError
from service.report import painter
from service.report.document import ReportDocument
from service.report.painter import render_pdf


def _exit_with_owner(owner_pid: int, interval: float = 1.0) -> None:
    """Pool initializer: leave when the process that owns the pool is gone.

    ProcessPoolExecutor workers never notice their owner's death (each holds both ends of its call
    queue, so no end-of-file ever arrives), and with the fork server their parent is not the owner:
    after a ``kill -9`` of a worker they would live on, orphaned, for good.
    """

    def watch() -> None:
        while True:
            time.sleep(interval)
            try:
                os.kill(owner_pid, 0)
            except ProcessLookupError:
                os._exit(0)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


def _warm_up() -> None:
    markdown = "# Warm-up\n\n- item\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\ncode\n```\n"
    render_pdf(ReportDocument("warm-up", datetime.now(UTC), "offline", markdown, "", True))


class PdfRenderer:
    """Renders off the event loop in a process pool (borb is CPU-bound).

    The pool uses the "forkserver" context: the worker process runs asyncio and threads, and a plain fork
    would copy their locks in whatever state they are. The fork server preloads this module, so every pool
    process - including the replacement after a crash - starts with borb imported and its font tables
    built (a replacement renders a 4,000-token report in ~70 ms instead of ~170 ms). ``__init__`` also
    submits one warm-up render per process without waiting for it: the first real job then finds a started,
    warm process (~40 ms) instead of paying ~220 ms for process start-up, imports and the first render.
    The first ``PdfRenderer()`` in a process blocks ~150 ms while the fork server starts: create it at
    worker start-up, not per job.
    """

    def __init__(self, processes: int = 1) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self._processes = processes
        self._executor: ProcessPoolExecutor | None = self._start()

    def _start(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(
            [painter.__name__]
        )  # only takes effect if the fork server is not running yet
        executor = ProcessPoolExecutor(
            self._processes, mp_context=context, initializer=_exit_with_owner, initargs=(os.getpid(),)
        )
        for _ in range(self._processes):
            executor.submit(_warm_up)  # a failure here shows up, and is handled, at the first render
        return executor

    def _replace(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        if self._executor is broken:  # a concurrent render may have replaced it already
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()
        if self._executor is None:
            raise RuntimeError("the PdfRenderer is closed")
        return self._executor

    async def render(self, document: ReportDocument) -> bytes:
        """``render_pdf(document)`` in a pool process; a dead process becomes ``TransientJobError``."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("the PdfRenderer is closed")
        future: Future[bytes]
        try:
            future = executor.submit(render_pdf, document)
        except BrokenProcessPool:
            # the pool died between jobs (killed, out of memory): nothing of this job was lost
            executor = self._replace(executor)
            future = executor.submit(render_pdf, document)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool as exc:
            self._replace(executor)
            raise TransientJobError("the PDF renderer process died while rendering the report") from exc

    def close(self) -> None:
        """Stop the pool, waiting for a render in progress (a few hundred milliseconds at most)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    async def __aenter__(self) -> PdfRenderer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.close)
