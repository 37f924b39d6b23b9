"""Work that hangs, for the deadline tests: module-level functions, so a process pool can pickle them.

Each records the id of the process it runs in, one line per run, in the file its input names, so a test
can count the runs and check that a killed process is really gone.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from service.providers.base import ReportRequest
from service.report.document import ReportDocument
from service.report.painter import render_pdf


def _record_run(log: str) -> None:
    """Appends this process's id to ``log`` if it is an absolute path (a test's ``tmp_path``): a real
    document's source ("sales.csv (12.3 kB)") names no log, and nothing may be written where tests run."""
    if log.startswith("/"):
        with Path(log).open("a") as file:
            file.write(f"{os.getpid()}\n")


def hang(log: str) -> None:
    """Records its run in ``log``, ignores SIGTERM and never returns, like work stuck in C code."""
    _record_run(log)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.05)


def raise_timeout(message: str) -> None:
    """Work that fails with its own ``TimeoutError`` (a socket's, say), long before any deadline."""
    raise TimeoutError(message)


def scripted_render(document: ReportDocument) -> bytes:
    """The title says what to do: "hang" never returns, "slow <seconds>" sleeps first; else a real render.

    The document's ``source`` is the log file's absolute path (anything else: no log).
    """
    if document.title == "hang":
        hang(document.source)
    _record_run(document.source)
    if document.title.startswith("slow "):
        time.sleep(float(document.title.split()[1]))
    return render_pdf(document)


def hanging_summary(request: ReportRequest) -> str:
    """An offline summary that never ends; the request's ``input_name`` is the log file's path."""
    hang(request.input_name)
    return ""


def runs(log: Path) -> list[int]:
    """The process ids of the runs recorded in ``log``, in order."""
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def process_is_gone(pid: int, within: float = 5.0) -> bool:
    """Whether process ``pid`` has exited (and been reaped) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False
