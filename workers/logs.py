"""structlog routed through the stdlib, so vigil, Temporal and every library log alike."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

import structlog

from vigil.workers.telemetry import add_trace_ids


def configure(fmt: str = "console", level: str = "INFO") -> None:
    if not sys.stderr.isatty():
        # Temporal's core (Rust) writes its own log lines to stderr, coloured unless
        # NO_COLOR is set when its runtime starts: a log file stays plain.
        os.environ.setdefault("NO_COLOR", "1")
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
    ]
    # A traceback names where it failed, never the values of its frames' variables (the
    # renderers' default when ``rich`` is installed): a worker's frames hold task tokens,
    # session inputs and a connection's resolved key. Plain in a file, rich on a terminal;
    # in JSON, text under ``exception``.
    tty = sys.stderr.isatty()
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=tty,
            exception_formatter=(
                structlog.dev.RichTracebackFormatter(show_locals=False)
                if tty
                else structlog.dev.plain_traceback
            ),
        )
    )
    final: list[structlog.types.Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        *([structlog.processors.format_exc_info] if fmt == "json" else []),
        renderer,
        # JSON escapes them itself; on a terminal the renderer's colours are escapes too.
        *([] if fmt == "json" or tty else [_escape_controls]),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=final,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request's whole URL at INFO: a webhook's URL may hold its secret
    # (as chat services' hook URLs do), and a model provider's may too. Their failures
    # are logged by vigil, without the query and path.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def _escape_controls(_logger: object, _name: str, line: Any) -> Any:
    """The rendered line with each control character but a line break or a tab written
    as an escape (``\\x00``, ``\\r``, ``\\x1b``): a path or a model's text holding NUL
    made a log file binary to grep, and a carriage return or an escape sequence can hide
    or rewrite what a terminal shows of the line."""
    if not isinstance(line, str):
        return line
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1], line)


def get(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
