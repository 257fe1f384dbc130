"""The enrich stage: extra sidecar fields for a frame about to be stored.

Daylight, weather and the like describe a frame for the dataset tools; none of them may cost
the frame. The enrichers are awaited in turn under one deadline: one that raises or
is late gives no fields (the failure is returned, for the caller to count and log once), and
the frame is stored all the same. Enrichers are given to the daemon (`Daemon(enrichers=...)`),
so tests and future features plug in without touching the camera loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from lyoncam_daemon.config import CameraConfig
from lyoncam_daemon.frames.judge import Verdict

#: Seconds an enricher may take before its fields are given up for this frame: the frame
#: waits that long at most before it is stored.
ENRICH_TIMEOUT_S = 2.0


class Enricher(Protocol):
    """Sidecar fields for one frame. `name` appears in logs when it fails."""

    name: str

    async def __call__(self, camera: CameraConfig, captured_at: datetime,
                       verdict: Verdict) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Enriched:
    fields: dict[str, Any]
    #: (enricher name, one-line reason) for each enricher that gave nothing.
    failures: list[tuple[str, str]]


async def enrich(enrichers: Sequence[Enricher], camera: CameraConfig, captured_at: datetime,
                 verdict: Verdict, limit_s: float = ENRICH_TIMEOUT_S) -> Enriched:
    """Run the enrichers one after another under one deadline; merge their fields in order.

    One after another, not gathered: a Task per enricher per frame was a measurable share
    of the event loop at 20,000 cameras, and every built-in enricher but `weather` (last)
    answers from memory. One deadline for all: the frame never waits more than `limit_s`;
    an enricher reached after it has passed is named as late.
    """
    if not enrichers:
        return Enriched({}, [])
    deadline = asyncio.get_running_loop().time() + limit_s
    fields: dict[str, Any] = {}
    failures: list[tuple[str, str]] = []
    for enricher in enrichers:
        try:
            async with asyncio.timeout_at(deadline):
                result = await enricher(camera, captured_at, verdict)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the camera is being stopped, not the enricher failing
            failures.append((enricher.name, "cancelled"))
        except TimeoutError:
            failures.append((enricher.name, f"no answer within {limit_s:g} s"))
        except Exception as exc:  # an enricher's bug costs its fields, never the frame
            failures.append((enricher.name, f"{type(exc).__name__}: {exc}"))
        else:
            if isinstance(result, Mapping):
                fields.update(result)
            else:
                failures.append(
                    (enricher.name, f"returned {type(result).__name__}, not a mapping"))
    return Enriched(fields, failures)
