"""arq's wire format, written without importing arq: the API process writes queue entries in its
submit script and must not load arq (``tests/store/test_arq_wire.py`` pins this to arq's own code).

Queue entries are JSON, not arq's default pickle, so a Lua script can write them and the worker
can read them with the serializer pair below (``job_serializer``/``job_deserializer``).
"""

from __future__ import annotations

import json
from typing import Any, cast

import orjson

JOB_FUNCTION = "generate_report"  # the worker's job function, as arq knows it by name


def dumps_job(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)


def loads_job(raw: bytes) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(raw))


def queue_entry(job_id: str, enqueue_ms: int) -> bytes:
    """What ``arq.jobs.serialize_job(JOB_FUNCTION, (job_id,), {}, None, enqueue_ms)`` writes."""
    return dumps_job({"t": None, "f": JOB_FUNCTION, "a": [job_id], "k": {}, "et": enqueue_ms})
