"""The render deadline, in real pool processes: a hung render is killed, others re-run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from service.core.errors import JobTimedOut
from service.report.document import ReportDocument
from service.report.renderer import PdfRenderer
from tests.fakes.stuck import process_is_gone, runs, scripted_render
from tests.report.support import document, page_texts

TIMEOUT = 2.0
MARGIN = 1.0  # the deadline fires on time; killing and reaping a process takes a few milliseconds


def scripted(title: str, log: Path | None = None) -> ReportDocument:
    """A document for ``scripted_render``: "hang", "slow <seconds>" or any title for a real render."""
    return replace(document(), title=title, source=str(log or ""))


async def wait_for_runs(log: Path, count: int) -> list[int]:
    """The process ids in ``log`` once it holds ``count`` runs (fails after 10 s)."""
    deadline = time.monotonic() + 10
    while len(runs(log)) < count:
        assert time.monotonic() < deadline, f"{log.name}: {len(runs(log))} runs, expected {count}"
        await asyncio.sleep(0.02)
    return runs(log)


@pytest.fixture
async def renderer() -> AsyncIterator[PdfRenderer]:
    async with PdfRenderer(timeout=TIMEOUT, render=scripted_render) as pool:
        await pool.render(document())  # started and warm: the deadline measures the render alone
        yield pool


async def test_a_hanging_render_is_killed_at_its_deadline_and_the_next_render_works(
    renderer: PdfRenderer, tmp_path: Path
) -> None:
    log = tmp_path / "hang"
    start = time.monotonic()
    with pytest.raises(JobTimedOut, match=r"RENDER_TIMEOUT_SECONDS \(2s\)") as caught:
        await renderer.render(scripted("hang", log))
    elapsed = time.monotonic() - start
    assert caught.value.error_code == "timed_out"
    assert TIMEOUT - 0.05 <= elapsed < TIMEOUT + MARGIN
    (pid,) = runs(log)
    assert process_is_gone(pid), "the hung process must be killed, not left running"
    assert pid not in renderer.pids()
    assert page_texts(await renderer.render(document())) == page_texts(scripted_render(document()))


async def test_a_render_queued_behind_a_hanging_one_runs_on_the_new_process_and_returns_its_pdf(
    renderer: PdfRenderer, tmp_path: Path
) -> None:
    hang = asyncio.create_task(renderer.render(scripted("hang", tmp_path / "hang")))
    (hung,) = await wait_for_runs(tmp_path / "hang", 1)
    innocent_log = tmp_path / "innocent"
    pdf = await renderer.render(scripted("Sales review", innocent_log))  # waits behind the hang
    with pytest.raises(JobTimedOut):
        await hang
    assert pdf.startswith(b"%PDF-")
    assert runs(innocent_log) != [hung] and len(runs(innocent_log)) == 1  # on the replacement process
    assert process_is_gone(hung)


async def test_a_render_running_beside_a_hanging_one_runs_again_when_the_pool_is_killed(
    tmp_path: Path,
) -> None:
    async with PdfRenderer(2, timeout=TIMEOUT, render=scripted_render) as pool:
        await asyncio.gather(pool.render(document()), pool.render(document()))  # both processes warm
        hang = asyncio.create_task(pool.render(scripted("hang", tmp_path / "hang")))
        await wait_for_runs(tmp_path / "hang", 1)
        await asyncio.sleep(TIMEOUT - 0.6)
        innocent_log = tmp_path / "innocent"
        # started 0.6 s before the hang's deadline, it takes 1 s: the kill stops it halfway
        pdf = await pool.render(scripted("slow 1.0", innocent_log))
        with pytest.raises(JobTimedOut):
            await hang
        first, second = runs(innocent_log)
        assert first != second, "the innocent render ran again, in a new process"
        assert process_is_gone(first)
        assert "Sales review" not in page_texts(pdf)[0] and "slow 1.0" in page_texts(pdf)[0]


async def test_a_cancelled_render_has_its_process_killed(renderer: PdfRenderer, tmp_path: Path) -> None:
    """The job's own deadline cancels the render: the process must not keep working for nobody."""
    task = asyncio.create_task(renderer.render(scripted("hang", tmp_path / "hang")))
    (pid,) = await wait_for_runs(tmp_path / "hang", 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert process_is_gone(pid, within=MARGIN)
    assert (await renderer.render(document())).startswith(b"%PDF-")


async def test_a_slow_render_within_its_deadline_is_left_alone(renderer: PdfRenderer, tmp_path: Path) -> None:
    log = tmp_path / "slow"
    pdf = await renderer.render(scripted(f"slow {TIMEOUT / 2}", log))
    assert pdf.startswith(b"%PDF-")
    assert runs(log) == renderer.pids()  # one run, in the process that is still there


async def test_a_render_queued_behind_two_hanging_ones_still_returns_its_pdf(
    renderer: PdfRenderer, tmp_path: Path
) -> None:
    """Each hung render gets the process for its own deadline; the wait is no render's fault."""
    hangs = [asyncio.create_task(renderer.render(scripted("hang", tmp_path / f"hang{n}"))) for n in range(2)]
    await wait_for_runs(tmp_path / "hang0", 1)
    start = time.monotonic()
    pdf = await renderer.render(scripted("Sales review", tmp_path / "innocent"))
    assert 2 * TIMEOUT - 0.3 <= time.monotonic() - start < 2 * TIMEOUT + 2 * MARGIN
    assert pdf.startswith(b"%PDF-")
    for hang in hangs:
        with pytest.raises(JobTimedOut):
            await hang
    pids = [*runs(tmp_path / "hang0"), *runs(tmp_path / "hang1"), *runs(tmp_path / "innocent")]
    assert len(set(pids)) == 3, "each hung render was killed, and the innocent ran in a third process"
