"""The batch lane across real processes: the worker that drives the fleet's batches is killed with
SIGKILL while its batch is being processed, or while its create call is on its way back; another
worker takes over its lease, follows (or finds) the same batch and finishes every job, without
sending any of them again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import InputFiles
from tests.e2e.support import api_and_worker
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.processes import ServiceProcess, start_worker

pytestmark = pytest.mark.slow

LANE_ENV = {
    "BATCH_WINDOW_SECONDS": "0.5",
    "BATCH_POLL_MIN_SECONDS": "0.1",
    "BATCH_POLL_MAX_SECONDS": "0.5",
    "BATCH_DRIVER_LEASE_SECONDS": "2",
}


@pytest.mark.parametrize("moment", ["processing", "creating"])
async def test_a_killed_driver_is_replaced_and_its_batch_finished_once(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic,
    tmp_path: Path, moment: str,
) -> None:  # fmt: skip
    if moment == "processing":
        fake_anthropic.batches.duration = 3.0  # recorded and still processing when its driver dies
    else:  # created at the provider, its id not yet back with the driver (nor recorded) when it dies
        fake_anthropic.batches.create_delay = 3.0
    # The create call's deadline: how long after its intent a batch may still appear.
    env = {**env, **LANE_ENV, "LLM_TIMEOUT_SECONDS": "4"}
    async with api_and_worker(env, processes, tmp_path / "logs", "lena", worker="doomed") as (client, doomed):
        source = inputs.add("a.csv", "region,revenue\nnorth,1\nsouth,2\n")
        job_ids = []
        for _ in range(3):
            answer = await client.http.post(
                "/api/reports", json={"inputDataUrl": source, "lane": "batch"}, headers=client.headers
            )
            assert answer.status_code == 202, answer.text
            job_ids.append(answer.json()["jobId"])
        deadline = asyncio.get_running_loop().time() + 20
        while not fake_anthropic.batches.created:
            assert asyncio.get_running_loop().time() < deadline, doomed.log()
            await asyncio.sleep(0.02)
        doomed.process.kill()
        survivor = start_worker(env, tmp_path / "logs", name="survivor")
        processes.append(survivor)
        for job_id in job_ids:
            done = await client.wait_for(job_id, "completed", timeout=40)
            assert isinstance(done["result"], dict) and done["result"]["lane"] == "batch"
            assert done["attempts"] == 1
        usage = await client.usage()
    if moment == "creating":  # the survivor found the batch from the intent the dead driver wrote
        assert "batch_intent_found" in survivor.log()
    (batch,) = fake_anthropic.batches.created
    assert sorted(custom_id for custom_id, _ in fake_anthropic.batches.requests(batch)) == sorted(job_ids)
    assert fake_anthropic.call_count == 0  # nothing went to the realtime lane
    assert (
        usage["reports"] == 3 and usage["outputTokens"] == fake_anthropic.bill.tokens("batch").output_tokens
    )
