"""Structured logging: configured once per process, JSON lines when not on a terminal."""

from __future__ import annotations

import logging
import sys
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


def _shared_processors(process: str) -> list[structlog.typing.Processor]:
    def add_process(_: Any, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        event.setdefault("process", process)
        return event

    return [
        add_process,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]


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
