"""`health`: is the daemon writing to this data_dir alive? For Docker's HEALTHCHECK and
scripts; the answer comes from the heartbeat in `<data_dir>/.lyoncam/health.json`.

The report loop rewrites the heartbeat from the event loop every `log.summary_interval`,
so a stale heartbeat means a dead or stalled daemon, whatever the cameras are doing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lyoncam_daemon.state import StateDir

#: Missed heartbeats tolerated, plus slack for a busy machine, before "stale".
_MISSED = 2
_SLACK_S = 30.0


def read_health(data_dir: Path) -> Mapping[str, Any] | str:
    """The health record, or a one-line reason it cannot be read."""
    path = StateDir(data_dir).health_path
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{path}: no health record (has the daemon started with this data_dir?)"
    except (OSError, ValueError) as exc:
        return f"{path}: unreadable: {exc}"
    return record if isinstance(record, dict) else f"{path}: not a health record"


def judge_health(record: Mapping[str, Any], now: float) -> str | None:
    """None when the heartbeat is fresh; else a one-line reason."""
    if record.get("stopping"):
        return "the daemon is stopping"
    beat, every = record.get("heartbeat_unix"), record.get("heartbeat_every_s", 300.0)
    if not isinstance(beat, int | float) or not isinstance(every, int | float):
        return "the health record has no heartbeat"
    limit = _MISSED * every + _SLACK_S
    age = now - beat
    if age > limit:
        return f"heartbeat {age:.0f} s old (limit {limit:.0f} s): the daemon is stalled or dead"
    return None
