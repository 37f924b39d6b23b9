"""``make run``'s runner: a Ctrl-C in its terminal (SIGINT to the whole foreground process group)
stops the API, then the worker, then Redis, in that order: nothing dies under a worker that is
still handing its jobs back, no traceback, nothing left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.dev.embedded_redis import free_port
from tests.fakes.processes import ROOT

pytestmark = pytest.mark.slow


def descendants_alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def command_of(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            if parent == pid:
                found.add(int(entry.name))
    return found


def test_ctrl_c_stops_everything_in_order_without_a_traceback(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108 (a fallback for a missing HOME only)
        "DATA_DIR": str(tmp_path / "data"),
        "PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        runner = subprocess.Popen(
            [sys.executable, "-m", "service", "dev"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, as a terminal's foreground job is
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "Demo API keys" not in log.read_text(errors="replace"):
                assert runner.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.2)
            children = children_of(runner.pid)  # Redis, the API, the worker
            assert len(children) >= 3, children
            redis = next(pid for pid in children if b"redis-server" in command_of(pid))
            worker = next(pid for pid in children if b"worker_settings" in command_of(pid))
            os.killpg(runner.pid, signal.SIGINT)  # what Ctrl-C does: the whole group
            ended: dict[int, float] = {}
            while runner.poll() is None or len(ended) < 2:
                for pid in (redis, worker):
                    if pid not in ended and not descendants_alive({pid}):
                        ended[pid] = time.monotonic()
                assert time.monotonic() < deadline + 60, "the runner did not stop"
                time.sleep(0.005)
            assert runner.wait() == 0
            assert ended[redis] > ended[worker]  # Redis outlived the worker that needed it to stop
        finally:
            if runner.poll() is None:
                os.killpg(runner.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    assert "stopped." in text
    assert "Traceback" not in text, text[-3000:]
    assert not descendants_alive(children)
