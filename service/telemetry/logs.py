"""Structured logging: configured once per process, JSON lines when not on a terminal."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from service.core.settings import Settings

# Field names that must never reach a log line, whatever a caller binds by mistake.
_REDACTED_FIELDS = frozenset({"api_key", "authorization", "token", "input_text", "prompt", "secret"})


def _redact(_: Any, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    for name in _REDACTED_FIELDS.intersection(event):
        event[name] = "[redacted]"
    return event


class _UtcStamper:
    """``"timestamp"`` as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it
    (``2026-12-01T16:13:32.099640Z``), with the date and time of day formatted once per second:
    ``datetime.isoformat`` costs more than the rest of a request's access line together."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: Any, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event


def _shared_processors(
    process: str, stamper: structlog.typing.Processor | None = None
) -> list[structlog.typing.Processor]:
    def add_process(_: Any, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        event.setdefault("process", process)
        return event

    return [
        add_process,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        stamper or _UtcStamper(),
        _redact,
    ]


AccessWriter = Callable[[str, str, int, float], None]
_access_log = structlog.get_logger("service.access")


def _through_structlog(method: str, path: str, status: int, duration_ms: float) -> None:
    _access_log.info("http_request", method=method, path=path, status=status, duration_ms=duration_ms)


_access_writer: AccessWriter = _through_structlog


def _no_access_line(method: str, path: str, status: int, duration_ms: float) -> None:
    return None  # LOG_LEVEL is above info


def log_request(method: str, path: str, status: int, duration_ms: float) -> None:
    """The access line of one answered request (the path only: query strings may carry tokens)."""
    _access_writer(method, path, status, duration_ms)


def _json_access_writer(
    process: str, stamper: structlog.typing.Processor, out: structlog.BytesLogger
) -> AccessWriter:
    """The access line as the JSON chain renders it (the same keys, in the same order, through the
    same locked stream) without the chain: it is the one line on every request's path, and the
    chain's generic steps cost more than the line's own work."""

    def write(method: str, path: str, status: int, duration_ms: float) -> None:
        event: structlog.typing.EventDict = {"method": method, "path": path, "status": status}
        event["duration_ms"], event["event"], event["process"] = duration_ms, "http_request", process
        structlog.contextvars.merge_contextvars(None, "info", event)
        event["level"] = "info"
        stamper(None, "info", event)
        out.msg(orjson.dumps(_redact(None, "info", event)))

    return write


def configure_logging(settings: Settings, *, process: str) -> None:
    """Our own events go straight to stdout (structlog's fast path, no stdlib logging on the way);
    the stdlib loggers of uvicorn and arq are routed through the same processors and renderer."""
    use_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stdout.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared = _shared_processors(process)
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    # Our own lines are on every request's path: orjson and raw bytes to stdout keep them cheap.
    if use_json:
        fast_renderer: structlog.typing.Processor = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory: Any = structlog.BytesLoggerFactory(sys.stdout.buffer)
    else:
        fast_renderer, factory = renderer, structlog.WriteLoggerFactory(sys.stdout)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, fast_renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    global _access_writer
    _access_writer = _through_structlog
    if use_json and level <= logging.INFO:
        _access_writer = _json_access_writer(process, _UtcStamper(), factory())
    elif level > logging.INFO:
        _access_writer = _no_access_line
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn and arq install handlers of their own; route them through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "arq", "arq.worker", "arq.jobs"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # One line per request comes from our own middleware, with the fields dashboards need.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # Vendor clients log request bodies (anthropic, at debug) and full URLs with query strings (httpx,
    # at info): user data that must not reach our logs, whatever LOG_LEVEL says.
    for name in ("anthropic", "httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.WARNING)
