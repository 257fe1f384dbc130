"""One camera's task: on its schedule, fetch → check and dedup → enrich → store.

Everything a camera task knows about its own camera (validators, last stored frame,
health, condition) lives here, so one failing camera can never slow or stop another:
they share only the HTTP session, the request semaphore and the decode pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from lyoncam_daemon import __version__
from lyoncam_daemon.config import CameraConfig, Config
from lyoncam_daemon.dedup import Judge, LastFrame, Outcome, Verdict
from lyoncam_daemon.fetch import Fetched, FetchError, Validators, fetch_frame
from lyoncam_daemon.observe import CameraStats, Stats
from lyoncam_daemon.schedule import backoff_delay, next_due
from lyoncam_daemon.store import FrameStore, StoreError, iso_utc

#: Extra sidecar fields for a stored frame (daylight, weather...): the enrich stage's seam.
Enricher = Callable[[CameraConfig, datetime, Verdict], Mapping[str, Any]]

#: Outcomes that, repeated, say something is wrong with the camera rather than the scene.
_ABNORMAL = frozenset({
    Outcome.PLACEHOLDER, Outcome.TRUNCATED, Outcome.NOT_IMAGE, Outcome.CORRUPT,
    Outcome.TOO_LARGE,
})
_HINTS = {
    Outcome.TRUNCATED: "this camera serves truncated JPEGs; set `truncated: keep` for it "
                       "in the config to store them flagged",
    Outcome.PLACEHOLDER: "the camera is off and serves its 'unavailable' image",
    Outcome.NOT_IMAGE: "the server answers with something that is not a JPEG (an error "
                       "page?); check the camera's url",
    Outcome.CORRUPT: "the camera's JPEGs do not decode; nothing is stored until they do",
    Outcome.TOO_LARGE: "the camera's frames are over dedup.max_pixels; raise it if they are "
                       "genuine",
}


@dataclass
class Runtime:
    """What all camera tasks share."""

    config: Config
    session: aiohttp.ClientSession
    semaphore: asyncio.Semaphore
    judge: Judge
    store: FrameStore
    stats: Stats
    stop: asyncio.Event
    enrichers: list[Enricher] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)


@dataclass
class Health:
    """Reachability: starting → ok ⇄ failing → down. Changes are logged, not polls."""

    state: str = "starting"
    failures: int = 0
    failing_since: float | None = None

    def succeeded(self) -> str | None:
        """Record a success; return the previous state if this is a change."""
        previous = self.state
        self.state, self.failures, self.failing_since = "ok", 0, None
        return previous if previous != "ok" else None

    def failed(self, now: float, down_after: float) -> str | None:
        previous = self.state
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = now
        self.state = "down" if now - self.failing_since >= down_after else "failing"
        return previous if previous != self.state else None


def build_sidecar(camera: CameraConfig, fetched: Fetched, verdict: Verdict,
                  captured_at: datetime) -> dict[str, Any]:
    """The metadata stored beside each frame; the dataset tools read nothing else."""
    return {
        "camera_id": camera.id,
        "camera_name": camera.name,
        "lat": camera.lat,
        "lon": camera.lon,
        "captured_at": iso_utc(captured_at),
        "url": camera.url,
        "sha256": verdict.sha256,
        "bytes": len(fetched.body),
        "width": verdict.width,
        "height": verdict.height,
        "etag": fetched.etag,
        "last_modified": fetched.last_modified,
        "exif_datetime": verdict.exif_datetime,
        "fingerprint": verdict.fingerprint.to_json() if verdict.fingerprint else None,
        "distance": verdict.distance,
        "truncated": verdict.truncated,
        "fetch_ms": round(fetched.elapsed_s * 1000, 1),
        "lyoncam_version": __version__,
    }


class CameraTask:
    """Polls one camera until the runtime's stop event is set."""

    def __init__(self, camera: CameraConfig, rt: Runtime, phase: float = 0.0) -> None:
        self.camera = camera
        self.rt = rt
        self.phase = phase
        self.health = Health()
        self.validators: Validators | None = None
        self.last: LastFrame | None = None
        self.write_error: str | None = None
        self._crash: str | None = None
        self.log = structlog.get_logger("lyoncam.camera").bind(camera=camera.id)
        rt.stats.camera(camera.id)  # listed in summaries before its first poll ends
        self._changed_at = time.monotonic()

    @property
    def stats(self) -> CameraStats:
        return self.rt.stats.camera(self.camera.id)

    def recover(self) -> None:
        """Reload the newest stored frame's facts so a restart stores no duplicate.

        Blocking (a few directory listings): call it through a thread at start-up.
        """
        removed = self.rt.store.remove_incomplete(self.camera.id)
        if removed:
            self.log.info("removed incomplete files from an interrupted run", files=removed)
        found = self.rt.store.latest(self.camera.id)
        if found is None:
            return
        _, meta = found
        self.last = LastFrame.from_sidecar(meta)
        if meta.get("etag") or meta.get("last_modified"):
            self.validators = Validators(meta.get("etag"), meta.get("last_modified"))
        self.stats.last_stored_at = meta.get("captured_at")

    async def run(self) -> None:
        self._changed_at = time.monotonic()
        due = time.monotonic() + self.phase
        while not await self._stopped_before(due):
            try:
                ok = await self.poll_once()
                self._crash = None
            except Exception as exc:  # a bug must cost one poll, not the camera for months
                self._crashed(exc)
                ok = True
            now = time.monotonic()
            due = next_due(due, self.camera.interval, now) if ok else now + self._retry_delay()

    async def _stopped_before(self, due: float) -> bool:
        """Sleep until `due`; True as soon as the daemon is stopping."""
        delay = due - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.rt.stop.wait(), timeout=delay)
        return self.rt.stop.is_set()

    def _retry_delay(self) -> float:
        retry = self.rt.config.retry
        if self.health.state == "down":
            return retry.down_probe_interval
        return backoff_delay(self.health.failures, retry.backoff_initial, retry.backoff_max,
                             self.rt.rng.random())

    async def poll_once(self) -> bool:
        """One poll. False when the camera failed and should back off."""
        self.stats.polls += 1
        try:
            async with self.rt.semaphore:
                fetched = await fetch_frame(
                    self.rt.session, self.camera.url, time_limit=self.camera.timeout,
                    max_bytes=self.rt.config.http.max_frame_bytes, validators=self.validators,
                )
        except FetchError as exc:
            self._failed(exc)
            return False
        self._reachable()
        if fetched.not_modified:
            self._counted(Outcome.UNCHANGED, fetched)
            return True
        verdict = await self.rt.judge.judge(self.camera, fetched.body, self.last)
        if verdict.outcome is Outcome.STORED and not await self._store(fetched, verdict):
            return True  # validators kept: the next poll fetches this frame again
        self.validators = fetched.validators
        self._counted(verdict.outcome, fetched, verdict)
        return True

    async def _store(self, fetched: Fetched, verdict: Verdict) -> bool:
        captured_at = datetime.now(UTC)
        sidecar = build_sidecar(self.camera, fetched, verdict, captured_at)
        for enrich in self.rt.enrichers:
            sidecar.update(enrich(self.camera, captured_at, verdict))
        try:
            path = await asyncio.to_thread(
                self.rt.store.save, self.camera.id, captured_at, fetched.body, sidecar
            )
        except StoreError as exc:
            self.stats.write_errors += 1
            if str(exc) != self.write_error:
                self.log.error("write failed", error=str(exc))
            self.write_error = str(exc)
            return False
        if self.write_error is not None:
            self.log.info("writes recovered", path=str(path))
            self.write_error = None
        self.last = LastFrame(sha256=verdict.sha256, fingerprint=verdict.fingerprint)
        self.stats.stored_bytes += len(fetched.body)
        self.stats.last_stored_at = sidecar["captured_at"]
        self.log.debug("stored", path=str(path), bytes=len(fetched.body),
                       distance=verdict.distance)
        return True

    def _counted(self, outcome: Outcome, fetched: Fetched, verdict: Verdict | None = None) -> None:
        self.stats.outcomes[outcome.value] += 1
        if outcome is not Outcome.STORED:
            self.log.debug("skipped", outcome=outcome.value, bytes=len(fetched.body),
                           distance=verdict.distance if verdict else None)
        now = time.monotonic()
        if outcome is Outcome.STORED:
            self._changed_at = now
        if outcome in _ABNORMAL:
            self._set_condition(outcome.value, _HINTS.get(outcome))
        elif outcome is Outcome.UNCHANGED and self.stats.condition not in ("normal", "stale"):
            pass  # the same bytes as before: a placeholder camera is still showing it
        elif now - self._changed_at > self.camera.stale_after * self.camera.interval:
            self._set_condition("stale", "no new frame for "
                                f"{self.camera.stale_after:g} intervals; the camera may be frozen")
        else:
            self._set_condition("normal", None)

    def _set_condition(self, condition: str, hint: str | None) -> None:
        previous = self.stats.condition
        if condition == previous:
            return
        self.stats.condition = condition
        log = self.log.info if condition == "normal" else self.log.warning
        log("camera condition", condition=condition, previous=previous,
            **({"hint": hint} if hint else {}))

    def _crashed(self, exc: Exception) -> None:
        """Log a crashing poll with its traceback once per distinct error, not every poll."""
        self.stats.errors["internal"] += 1
        key = f"{type(exc).__name__}: {exc}"
        if key != self._crash:
            self.log.exception("poll crashed", error=key)
        self._crash = key

    def _reachable(self) -> None:
        previous = self.health.succeeded()
        self.stats.state = self.health.state
        if previous is not None and previous != "starting":
            self.log.info("camera state", state="ok", previous=previous)
        elif previous == "starting":
            self.log.debug("camera state", state="ok", previous=previous)

    def _failed(self, exc: FetchError) -> None:
        self.stats.errors[exc.kind] += 1
        previous = self.health.failed(time.monotonic(), self.rt.config.retry.down_after)
        self.stats.state = self.health.state
        if previous is not None:
            self.log.warning("camera state", state=self.health.state, previous=previous,
                             error=str(exc), failures=self.health.failures)
        else:
            self.log.debug("poll failed", error=str(exc), failures=self.health.failures)
