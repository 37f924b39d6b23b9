"""Talking to the API from outside: a typed client (``AsyncReportClient``, ``ReportClient``), the
Server-Sent Events reader, and the submit command line.

The answers are the contract's objects as pydantic models (``service.core.schemas``), re-exported
here so a program needs one import.
"""

from service.client.aio import AsyncReportClient
from service.client.calls import ApiUnreachable, ReportApiError, ReportClientError, Submission
from service.client.sse import SseEvent
from service.client.sync import ReportClient
from service.core.schemas import InputUploaded, JobFailure, JobResult, JobStatus, ReportPage, Usage

__all__ = [
    "ApiUnreachable",
    "AsyncReportClient",
    "InputUploaded",
    "JobFailure",
    "JobResult",
    "JobStatus",
    "ReportApiError",
    "ReportClient",
    "ReportClientError",
    "ReportPage",
    "SseEvent",
    "Submission",
    "Usage",
]
