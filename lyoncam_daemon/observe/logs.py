"""Logging set-up: JSON lines for machines, colours for a person at a terminal.

One place configures structlog for every command (`run`, `pull`), so their lines look alike.
Libraries that log through the standard `logging` module (aiohttp's server, above all) go
through the same pipeline: one line each, never a plain-text traceback in a JSON log. A
client's malformed request (a 5 KB header, a bad Content-Length, TLS on the plain port) is
one line naming it, without a traceback: it is not lyoncam's error.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines for machines (journald, docker logs), colours for a person at a terminal."""
    out = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Library warnings (Pillow: "Corrupt EXIF data") would print raw text into a JSON log.
    warnings.showwarning = _log_warning
    unroute_stdlib()
    # Warnings and errors only: below that, aiohttp's access log and debug lines, which
    # lyoncam neither wants nor turns on. The root logger's own level is left alone.
    handler = _ToStructlog(logging.WARNING)
    logging.getLogger().addHandler(handler)


def unroute_stdlib() -> None:
    """Take the standard-library route out again (a process that configures twice, tests)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ToStructlog)]:
        root.removeHandler(handler)


class _ToStructlog(logging.Handler):
    """A standard-library record as a structlog line, with the logger's name."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name}
            level = record.levelno
            error = record.exc_info[1] if record.exc_info else None
            if error is not None and _client_mistake(error):
                # aiohttp logs these with a traceback; the fault is the client's.
                fields["error"] = _one_line(error)
                level = min(level, logging.INFO)
            elif record.exc_info:
                fields["exc_info"] = record.exc_info
            log = structlog.get_logger(record.name)
            log.log(level, record.getMessage(), **fields)
        except Exception:  # logging must never raise into the code that logs
            self.handleError(record)


def _client_mistake(error: BaseException) -> bool:
    """A malformed request (aiohttp's HttpProcessingError: bad header, bad length, TLS on
    the plain port). Checked by module, so logging never imports aiohttp."""
    http_errors = sys.modules.get("aiohttp.http_exceptions")
    base = getattr(http_errors, "HttpProcessingError", None)
    return base is not None and isinstance(error, base)


def _one_line(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error)
    first = " ".join(str(message).split())[:200]
    return f"{type(error).__name__}: {first}"


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    structlog.get_logger("lyoncam.warnings").warning(
        "python warning", category=category.__name__, message=str(message),
        where=f"{filename}:{lineno}")
