"""SIGHUP before the daemon is ready: remembered, never fatal.

A SIGHUP's default action ends the process (exit 129). `systemctl reload` right after a
start, or a config tool that signals every lyoncam it finds, would kill a daemon still
loading its libraries and config. So `run` installs this handler before anything else
(`__main__.py` and `cli.main`, before the parser is built); the daemon takes the pending
reload once every camera is scheduled (`take`) and replaces the handler with its own.
Only the signal module here: importing it costs nothing.
"""

from __future__ import annotations

import contextlib
import signal
from types import FrameType

_pending = False


def _remember(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = True


def hold() -> None:
    """From now on a SIGHUP is remembered instead of ending the process (main thread only:
    elsewhere, as in a test calling `main` from a thread, nothing is installed)."""
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGHUP, _remember)


def take() -> bool:
    """Whether a SIGHUP came since `hold` (or the last `take`); forgets it."""
    global _pending
    was, _pending = _pending, False
    return was
