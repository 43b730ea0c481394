"""structlog set-up shared by every process: JSON lines (console renderer on a TTY), with the ids
that matter bound as context (lesson, worker, fence, session)."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def setup_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream=None,
) -> None:
    """Configure structlog and the stdlib root logger (so library logs come out as JSON too)."""
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and getattr(stream, "isatty", lambda: False)())
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level.lower(), logging.INFO))


def get_logger(name: str | None = None, **ids: object) -> structlog.stdlib.BoundLogger:
    """A logger with ids bound (``get_logger(__name__, worker_id=...)``)."""
    log = structlog.get_logger(name)
    return log.bind(**ids) if ids else log


bind_ids = structlog.contextvars.bind_contextvars
"""Bind ids (lesson_id=..., session_id=...) to every log line of the current task/context."""
unbind_ids = structlog.contextvars.unbind_contextvars
