"""What a reload (SIGHUP) changes: the running config and the new one → a plan. Pure.

Cameras are compared by id: a camera only in the new file is added, one gone (or now
`enabled: false`) is removed, one whose settings differ is changed (restarted by the
daemon, keeping its dedup memory when its URL is the same), the rest are untouched and keep
their schedule. Settings that the running pieces took at start-up cannot change live:
they are kept at their running value and reported as needing a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from lyoncam_daemon.config import CameraConfig, Config

#: Top-level settings the running daemon reads afresh, so a reload applies them at once.
#: Every other one was taken at start-up (the data folder and its lock, the HTTP session and
#: request slots, the Judge and its placeholder images, ...) and waits for a restart: a
#: setting added later is thus safe by default, until someone makes it live on purpose.
LIVE = ("retry", "log", "shutdown_grace", "retention")

#: Merged into each camera by the loader: compared through the cameras, never by itself.
_NOT_COMPARED = ("cameras", "defaults")


def restart_only() -> tuple[str, ...]:
    return tuple(n for n in Config.model_fields if n not in LIVE and n not in _NOT_COMPARED)


@dataclass(frozen=True)
class ReloadPlan:
    #: The config to run from now on: the new file, but restart-only settings as running.
    config: Config
    added: tuple[CameraConfig, ...]
    removed: tuple[str, ...]
    changed: tuple[CameraConfig, ...]
    untouched: tuple[str, ...]
    #: Dotted names of settings that changed in the file, applied now ("retry.down_after").
    applied: tuple[str, ...]
    #: Dotted names of settings that changed in the file but wait for a restart.
    needs_restart: tuple[str, ...]

    @property
    def is_noop(self) -> bool:
        return not (self.added or self.removed or self.changed or self.applied
                    or self.needs_restart)

    def summary(self) -> dict[str, Any]:
        """The fields of the one log line saying what a reload did."""
        return {
            "added": [c.id for c in self.added],
            "removed": list(self.removed),
            "changed": [c.id for c in self.changed],
            "untouched": len(self.untouched),
            "applied": list(self.applied),
            "needs_restart": list(self.needs_restart),
        }


def plan_reload(running: Config, new: Config) -> ReloadPlan:
    """Compare the running config with a freshly loaded, valid one."""
    fixed = restart_only()
    effective = new.model_copy(update={name: getattr(running, name) for name in fixed})
    old_cams = {c.id: c for c in running.enabled_cameras}
    # From `effective`: a setting that selects cameras but waits for a restart selects as before.
    new_cams = {c.id: c for c in effective.enabled_cameras}
    settings = _changed_settings(running, new)
    needs_restart = tuple(s for s in settings if s.split(".")[0] in fixed)
    applied = tuple(s for s in settings if s not in needs_restart)
    return ReloadPlan(
        config=effective,
        added=tuple(c for i, c in new_cams.items() if i not in old_cams),
        removed=tuple(i for i in old_cams if i not in new_cams),
        changed=tuple(c for i, c in new_cams.items() if i in old_cams and old_cams[i] != c),
        untouched=tuple(i for i, c in new_cams.items() if old_cams.get(i) == c),
        applied=applied,
        needs_restart=needs_restart,
    )


def _changed_settings(old: Config, new: Config) -> list[str]:
    """Dotted names of the non-camera settings that differ, one level into sections."""
    changed: list[str] = []
    for name in Config.model_fields:
        if name in _NOT_COMPARED:
            continue
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if isinstance(a, BaseModel) and isinstance(b, BaseModel):
            changed += [f"{name}.{sub}" for sub in type(a).model_fields
                        if getattr(a, sub) != getattr(b, sub)]
        else:
            changed.append(name)
    return changed
