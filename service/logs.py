"""Structured logging: configured once per process, JSON lines when not on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from service.settings import Settings

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
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]


def configure_logging(settings: Settings, *, process: str) -> None:
    """Routes structlog and the stdlib loggers (uvicorn, arq) through one renderer on stdout."""
    use_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stdout.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared = _shared_processors(process)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
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
    root.setLevel(settings.log_level.upper())
    # uvicorn and arq install handlers of their own; route them through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "arq", "arq.worker", "arq.jobs"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # One line per request comes from our own middleware, with the fields dashboards need.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
