"""Logging set-up and the capture counters behind the periodic summary and health record."""

from __future__ import annotations

import logging
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
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


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    structlog.get_logger("lyoncam.warnings").warning(
        "python warning", category=category.__name__, message=str(message),
        where=f"{filename}:{lineno}")


@dataclass
class CameraStats:
    """What happened to one camera's polls since start-up."""

    polls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    stored_bytes: int = 0
    write_errors: int = 0
    state: str = "starting"
    condition: str = "normal"
    last_stored_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "polls": self.polls,
            "outcomes": dict(self.outcomes),
            "errors": dict(self.errors),
            "stored_bytes": self.stored_bytes,
            "write_errors": self.write_errors,
            "state": self.state,
            "condition": self.condition,
            "last_stored_at": self.last_stored_at,
        }


@dataclass
class Stats:
    """Counters for every camera, shared by the camera tasks (one event loop: no locks)."""

    cameras: dict[str, CameraStats] = field(default_factory=dict)

    def camera(self, camera_id: str) -> CameraStats:
        return self.cameras.setdefault(camera_id, CameraStats())

    def totals(self) -> dict[str, Any]:
        outcomes: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        states: Counter[str] = Counter()
        for cam in self.cameras.values():
            outcomes.update(cam.outcomes)
            errors.update(cam.errors)
            states[cam.state] += 1
        return {
            "cameras": len(self.cameras),
            "states": dict(states),
            "polls": sum(c.polls for c in self.cameras.values()),
            "stored": outcomes.get("stored", 0),
            "stored_bytes": sum(c.stored_bytes for c in self.cameras.values()),
            "write_errors": sum(c.write_errors for c in self.cameras.values()),
            "outcomes": dict(outcomes),
            "errors": dict(errors),
        }
