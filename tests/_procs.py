"""The daemon as a separate process, seen only through what it leaves behind.

Crash and fault tests drive `run` the way an operator does: a config file, a process that
can be killed (SIGKILL is not something an in-process daemon can receive), its JSON log
lines, the data tree and the health record. Nothing here imports the daemon's internals,
so the tests keep meaning the same thing while those are refactored.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Re-exported for the proof tests: the daemon's own names for its state folder and temp files.
from lyoncam_daemon.storage.atomic import TMP_MARK as TMP_MARK
from lyoncam_daemon.storage.state import STATE_DIR as STATE_DIR

#: Generous limits for a loaded 2-core machine: they only turn a hang into a failure.
WAIT_LIMIT_S = 60
EXIT_LIMIT_S = 30

#: `run` with the test context, which allows the sub-second intervals a real file may not
#: have (`parse_config(..., context={"min_interval": 0.05})`); the exit code is run's.
_RUNNER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from lyoncam_daemon.config import load_config\n"
    "from lyoncam_daemon.capture.daemon import run_daemon\n"
    "sys.exit(run_daemon(load_config(Path(sys.argv[1]), context={'min_interval': 0.05})))\n"
)


def health_path(data_dir: Path) -> Path:
    """The health record docs/monitoring.md documents under "health.json"."""
    return data_dir / STATE_DIR / "health.json"


def read_health(data_dir: Path) -> dict[str, Any]:
    data = json.loads(health_path(data_dir).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def log_events(log: Path) -> list[dict[str, Any]]:
    """The JSON log lines of one daemon run; a line cut by SIGKILL is left out."""
    events = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


class DaemonProcess:
    """One `run` of the daemon in its own process, its stderr (JSON lines) kept in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        #: time.monotonic() when the "started" line was seen (after recovery, polls begin).
        self.started_at = 0.0

    async def start(self) -> None:
        with self.log.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _RUNNER, str(self.config),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def events(self) -> list[dict[str, Any]]:
        return log_events(self.log)

    async def wait_started(self) -> None:
        """Until the daemon logs "started" (recovery may still run in camera tasks)."""
        await self.until(lambda: any(e.get("event") == "started" for e in self.events()),
                         'a "started" line')
        self.started_at = time.monotonic()

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Until `condition()` holds; fails with the log tail if the daemon exits or hangs."""
        proc = self._running()
        deadline = time.monotonic() + WAIT_LIMIT_S
        while not condition():
            if proc.returncode is not None:
                raise AssertionError(f"daemon exited {proc.returncode} before {what}:\n"
                                     + self.tail())
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {WAIT_LIMIT_S} s:\n" + self.tail())
            await asyncio.sleep(0.01)

    async def kill(self) -> None:
        """SIGKILL: no handler, no grace, no flush; what is on disk afterwards is final."""
        proc = self._running()
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), timeout=EXIT_LIMIT_S) == -signal.SIGKILL

    async def stop(self) -> int:
        """SIGTERM, as a supervisor stops it; the exit code."""
        proc = self._running()
        proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(proc.wait(), timeout=EXIT_LIMIT_S)

    async def ensure_dead(self) -> None:
        """For a `finally:` — never leave a daemon behind a failed test."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _running(self) -> asyncio.subprocess.Process:
        assert self.proc is not None, "daemon not started"
        return self.proc
