"""`health`: is the daemon writing to this data_dir alive? For Docker's HEALTHCHECK and
scripts; the answer comes from the heartbeat in `<data_dir>/.lyoncam/health.json` and from
the daemon's own `/healthz` (is it capturing, can it write), at the address the daemon
recorded there (`status_url`: a free port, a shard's own) or `--url`.

The report loop rewrites the heartbeat from the event loop every `log.summary_interval`,
so a stale heartbeat means a dead or stalled daemon, whatever the cameras are doing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lyoncam_daemon.storage.state import StateDir

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


def healthz_url(record: Mapping[str, Any]) -> str | None:
    """The `/healthz` of the daemon that wrote `record` (its `status_url`), None when its
    endpoint is off."""
    base = record.get("status_url")
    return f"{base.rstrip('/')}/healthz" if isinstance(base, str) and base else None


def ask_healthz(url: str, timeout: float = 5.0) -> str | None:
    """None when `/healthz` answers 200; else a one-line reason (its own when it gives one).

    urllib, not aiohttp: the health check is a short-lived process run every few seconds.
    """
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            return None
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace")
        try:
            reasons = json.loads(body).get("reasons")
        except (ValueError, AttributeError):
            reasons = None
        why = "; ".join(map(str, reasons)) if isinstance(reasons, list) and reasons else body
        return f"{url}: HTTP {exc.code}: {why.strip()[:300]}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url}: not answering: {reason}"
