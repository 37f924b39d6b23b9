"""CPU-bound calls in processes a deadline can kill: the PDF render pool and the offline summary use it.

A thread cannot be stopped, and a process stuck in C code (borb, a regex, json) heeds nothing gentler
than SIGKILL. So every call has a deadline; a call past it has the pool's processes killed, the pool is
replaced, and the call raises ``JobTimedOut``. Calls wait in line here, in order, until a process is
free, and their deadline starts when they are handed one: a call is never charged for the time another
held the process, and the pool only ever kills a call that is running. The other calls running on a
killed pool (``processes`` > 1) are innocent: they run again, first in line, with a fresh deadline, at
most ``MAX_RERUNS`` times. A cancelled call (the job's own deadline, a shutdown) leaves the line, or, if
it is running, is killed the same way. Waiting in line is bounded by the job's own deadline.

The pool uses the "forkserver" context: the worker process runs asyncio and threads, and a plain fork
would copy their locks in whatever state they are. The fork server preloads the modules the pools name,
so every process - replacements included - starts with them imported.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from service.core.errors import JobTimedOut, TransientJobError

T = TypeVar("T")
R = TypeVar("R")

MAX_RERUNS = 2  # times an innocent call runs again after its pool was killed for another call's deadline
_PRELOAD: set[str] = set()  # one fork server per process: the modules every pool asked it to preload


def _exit_with_owner(owner_pid: int, interval: float = 1.0) -> None:
    """Pool initializer: leave when the process that owns the pool is gone.

    ProcessPoolExecutor workers never notice their owner's death (each holds both ends of its call
    queue, so no end-of-file ever arrives), and with the fork server their parent is not the owner:
    after a ``kill -9`` of the owner they would live on, orphaned, for good.
    """

    def watch() -> None:
        while True:
            time.sleep(interval)
            try:
                os.kill(owner_pid, 0)
            except ProcessLookupError:
                os._exit(0)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


@dataclass
class _Pool:
    executor: ProcessPoolExecutor
    killed: bool = False  # by us, for a call past its deadline: the calls it breaks are innocent
    calls: set[Future[Any]] = field(default_factory=set)  # submitted and not done
    lock: threading.Lock = field(default_factory=threading.Lock)  # futures end in the executor's thread

    def submit(self, fn: Callable[[T], R], arg: T) -> Future[R]:
        future = self.executor.submit(fn, arg)
        with self.lock:
            self.calls.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[Any]) -> None:
        with self.lock:
            self.calls.discard(future)

    def pending(self) -> list[Future[Any]]:
        with self.lock:
            return list(self.calls)

    def kill(self) -> None:
        """SIGKILL every process: ProcessPoolExecutor cannot stop a busy one (``kill_workers()`` comes with
        Python 3.14), and a call stuck in C code would ignore SIGTERM."""
        self.killed = True
        for process in list((self.executor._processes or {}).values()):
            process.kill()


class DeadlinePool:
    """``await pool.run(fn, arg)``: ``fn(arg)`` in one of ``processes`` processes, within ``timeout`` seconds.

    ``fn`` and ``arg`` must pickle (``fn`` a module-level function). ``timed_out`` and ``died`` are the
    reasons given to the job's owner when a call passes its deadline or its process dies by itself.
    """

    def __init__(
        self,
        *,
        timeout: float,
        timed_out: str,
        died: str,
        processes: int = 1,
        preload: Iterable[str] = (),
        warm_up: Callable[[], object] | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._timeout, self._timed_out, self._died = timeout, timed_out, died
        self._processes = processes
        self._free = processes  # processes no call holds
        self._line: deque[asyncio.Future[None]] = deque()  # calls waiting for one, in order
        _PRELOAD.update(preload)
        self._pool: _Pool | None = _Pool(self._executor())
        if warm_up is not None:
            # a failure here shows up, and is handled, at the first call
            for _ in range(processes):
                self._pool.executor.submit(warm_up)

    def _executor(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(sorted(_PRELOAD))  # only until the fork server has started
        return ProcessPoolExecutor(
            self._processes, mp_context=context, initializer=_exit_with_owner, initargs=(os.getpid(),)
        )

    def pids(self) -> list[int]:
        """The ids of the pool's processes now (for tests and diagnostics)."""
        return list(self._pool.executor._processes or {}) if self._pool is not None else []

    async def run(self, fn: Callable[[T], R], arg: T) -> R:
        """``fn(arg)`` in a process: ``JobTimedOut`` past the deadline, ``TransientJobError`` if it dies."""
        for rerun in range(MAX_RERUNS + 1):
            await self._take_process(first=rerun > 0)
            try:
                pool = self._current()
                return await self._attempt(pool, fn, arg)
            except BrokenProcessPool as exc:
                if not pool.killed:  # died by itself (killed from outside, out of memory)
                    self._replace(pool)
                    raise TransientJobError(self._died) from exc
                # innocent: the pool was killed for another call's deadline; this call runs again
            finally:
                self._give_process()
        raise JobTimedOut(f"{self._timed_out}: its process was restarted {MAX_RERUNS} times for other work")

    async def _take_process(self, first: bool) -> None:
        """Wait for a free process, in line (``first``: at its head); the caller then holds it."""
        if self._free and not self._line:
            self._free -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        if first:
            self._line.appendleft(turn)
        else:
            self._line.append(turn)
        try:
            await turn
        except asyncio.CancelledError:  # the turn is cancelled too, and skipped, unless it had come
            if not turn.cancelled():
                self._give_process()  # handed over just as the call was cancelled: pass it on
            raise

    def _give_process(self) -> None:
        while self._line:
            turn = self._line.popleft()
            if not turn.done() and not turn.get_loop().is_closed():
                turn.set_result(None)  # the process passes to the next in line, without a gap
                return
        self._free += 1

    async def _attempt(self, pool: _Pool, fn: Callable[[T], R], arg: T) -> R:
        pool, future = self._submit(pool, fn, arg)
        timer = asyncio.timeout(self._timeout)
        try:
            async with timer:
                return await asyncio.wrap_future(future)
        except TimeoutError:
            if not timer.expired():
                raise  # fn's own TimeoutError, raised in the process
            self._abandon(pool, future)
            raise JobTimedOut(self._timed_out) from None
        except asyncio.CancelledError:
            self._abandon(pool, future)
            raise

    def _submit(self, pool: _Pool, fn: Callable[[T], R], arg: T) -> tuple[_Pool, Future[R]]:
        try:
            return pool, pool.submit(fn, arg)
        except BrokenProcessPool:
            # the pool died between calls (killed, out of memory): nothing of this call was lost
            self._replace(pool)
            pool = self._current()
            return pool, pool.submit(fn, arg)

    def _abandon(self, pool: _Pool, future: Future[R]) -> None:
        """Nobody waits for ``future`` any more: drop it if it has not started, else kill its process."""
        if not (future.cancel() or future.done()):
            pool.kill()
            self._replace(pool)

    def _current(self) -> _Pool:
        if self._pool is None:
            raise RuntimeError("the pool is closed")
        return self._pool

    def _replace(self, broken: _Pool) -> None:
        if self._pool is broken:  # a concurrent call may have replaced it already
            broken.executor.shutdown(wait=False, cancel_futures=True)
            self._pool = _Pool(self._executor())

    def close(self, wait: bool = True) -> None:
        """Stop the pool; ``wait``: for the calls in progress, until the deadline, then kill what is left."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        started = [future for future in pool.pending() if not future.cancel()]
        if wait and wait_for_futures(started, timeout=self._timeout).not_done:
            pool.kill()  # a call stuck past its deadline must not hold the shutdown
        pool.executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> DeadlinePool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.close)
