"""The queue entries and key names we write for arq without importing it are the ones arq reads."""

from __future__ import annotations

import arq.constants
from arq.jobs import deserialize_job, serialize_job

from service.core.settings import Settings
from service.store import names
from service.store.arq_wire import JOB_FUNCTION, dumps_job, loads_job, queue_entry
from service.worker.options import worker_options


def test_a_queue_entry_is_what_arq_would_serialize_and_arq_reads_it_back() -> None:
    ours = queue_entry("abc123", 1_700_000_000_000)
    theirs = serialize_job(JOB_FUNCTION, ("abc123",), {}, None, 1_700_000_000_000, serializer=dumps_job)
    assert ours == theirs
    job = deserialize_job(ours, deserializer=loads_job)
    assert (job.function, list(job.args), job.kwargs) == (JOB_FUNCTION, ["abc123"], {})
    assert job.job_try is None  # arq counts tries itself; the entry carries none


def test_arq_key_names_match_arq_constants() -> None:
    assert arq.constants.default_queue_name == names.ARQ_QUEUE
    assert arq.constants.job_key_prefix == names.ARQ_JOB_PREFIX
    assert arq.constants.in_progress_key_prefix == names.ARQ_IN_PROGRESS_PREFIX
    assert arq.constants.result_key_prefix == names.ARQ_RESULT_PREFIX
    assert arq.constants.retry_key_prefix == names.ARQ_RETRY_PREFIX
    assert arq.constants.abort_jobs_ss == names.ARQ_ABORT


def test_the_worker_runs_the_function_the_entries_name() -> None:
    options = worker_options(Settings(_env_file=None))
    assert [function.__name__ for function in options["functions"]] == [JOB_FUNCTION]
    assert (options["job_serializer"], options["job_deserializer"]) == (dumps_job, loads_job)
