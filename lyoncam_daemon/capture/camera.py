"""One camera's task: on its schedule, fetch → check and dedup → enrich → store → hooks.

Everything a camera task knows about its own camera (validators, last stored frame,
health, condition) lives here, so one failing camera can never slow or stop another:
they share only the HTTP session, the request slots and the decode pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from lyoncam_daemon import __version__
from lyoncam_daemon.capture.fetch import (
    Fetched,
    FetchError,
    NoTurn,
    Slots,
    Standing,
    Validators,
    fast_limit,
    fetch_frame,
)
from lyoncam_daemon.capture.schedule import backoff_delay, next_due
from lyoncam_daemon.config import CameraConfig, Config, host_port, public_url
from lyoncam_daemon.enrich.stage import Enricher, enrich
from lyoncam_daemon.frames.fingerprint import CorruptFrame
from lyoncam_daemon.frames.judge import Judge, LastFrame, Outcome, Verdict
from lyoncam_daemon.observe.stats import CameraStats, Condition, ErrorKind, State, Stats
from lyoncam_daemon.storage import Frame, Storage, StoredFrame, StoreError, StoreHook, iso_utc

#: Outcomes that, repeated, say something is wrong with the camera rather than the scene.
_ABNORMAL = {
    Outcome.PLACEHOLDER: Condition.PLACEHOLDER, Outcome.TRUNCATED: Condition.TRUNCATED,
    Outcome.NOT_IMAGE: Condition.NOT_IMAGE, Outcome.CORRUPT: Condition.CORRUPT,
    Outcome.TOO_LARGE: Condition.TOO_LARGE,
}
_HINTS = {
    Condition.TRUNCATED: "this camera serves truncated JPEGs; set `truncated: keep` for it "
                         "in the config to store them flagged",
    Condition.PLACEHOLDER: "the camera is off and serves its 'unavailable' image",
    Condition.NOT_IMAGE: "the server answers with something that is not a JPEG (an error "
                         "page?); check the camera's url",
    Condition.CORRUPT: "the camera's JPEGs do not decode; nothing is stored until they do",
    Condition.TOO_LARGE: "the camera's frames are over dedup.max_pixels; raise it if they are "
                         "genuine",
    Condition.WRITE_FAILING: "frames arrive but cannot be written (disk full or read-only?); "
                             "nothing is lost that was stored, storing resumes by itself",
}


class StopSignal:
    """Set once to stop a camera; waited on with a deadline by that camera alone.

    Like `asyncio.Event`, without the Task that `asyncio.wait_for(event.wait(), t)` creates
    for every wait: a camera waits once per poll, and at 20,000 cameras those Tasks (and
    the garbage they leave) were a measurable share of the event loop's time.
    """

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def is_set(self) -> bool:
        return self._set

    async def wait(self, at_most: float | None = None) -> bool:
        """Until set or `at_most` seconds passed; whether it is set."""
        if self._set:
            return True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(at_most, _wake, waiter) if at_most is not None else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
        return self._set


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


#: Cameras started together take turns to read their newest frame back (`CameraTask.recover`).
RECOVERIES_AT_ONCE = 8


@dataclass
class Runtime:
    """What all camera tasks share."""

    config: Config
    session: aiohttp.ClientSession
    slots: Slots
    judge: Judge
    storage: Storage
    stats: Stats
    #: Fetched frames being judged and stored: bounds the frames held in memory. A frame
    #: waits for room here while its request slot is still held (camera.poll_once).
    pipeline: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(pipeline_size(workers=2)))
    #: Start-up recoveries running at once: 20,000 cameras starting together would
    #: otherwise queue 40,000 thread jobs (and their futures) in one burst.
    recovering: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(RECOVERIES_AT_ONCE))
    enrichers: Sequence[Enricher] = ()
    hooks: Sequence[StoreHook] = ()
    rng: random.Random = field(default_factory=random.Random)
    #: Wall-clock Unix seconds: each frame's `captured_at` and the heartbeat (keep_every).
    clock: Callable[[], float] = time.time


def pipeline_size(workers: int) -> int:
    """Frames judged or stored at once: enough to keep every decode thread busy while
    others are written, few enough that memory stays flat under overload.

    A frame spends its decode (~4 ms) in the pool and then tens of milliseconds writing
    (fsyncs, the index thread) on a busy machine: at 2 * workers + 2 = 6, `bench/capacity.py`
    capped at ~100 frames a second with a core idle. At 32 frames of a few hundred KB (the
    request slots may hold as many bodies again) the CPU is what limits it (~195 a second).
    """
    return max(32, 8 * workers)


@dataclass
class Reachability:
    """Reachability: starting → ok ⇄ failing → down. Changes are logged, not polls."""

    state: State = State.STARTING
    failures: int = 0
    failing_since: float | None = None

    def succeeded(self) -> State | None:
        """Record a success; return the previous state if this is a change."""
        previous = self.state
        self.state, self.failures, self.failing_since = State.OK, 0, None
        return previous if previous is not State.OK else None

    def failed(self, now: float, down_after: float) -> State | None:
        previous = self.state
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = now
        self.state = State.FAILING
        self.expire(now, down_after)
        return previous if previous is not self.state else None

    def down_at(self, down_after: float) -> float | None:
        """When a failing camera becomes `down` if nothing succeeds before."""
        if self.state is not State.FAILING or self.failing_since is None:
            return None
        return self.failing_since + down_after

    def expire(self, now: float, down_after: float) -> bool:
        """Failing for `down_after` seconds means down, whether or not a poll is due then."""
        at = self.down_at(down_after)
        if at is None or now < at:
            return False
        self.state = State.DOWN
        return True


def build_sidecar(camera: CameraConfig, fetched: Fetched, verdict: Verdict,
                  captured_at: datetime) -> dict[str, Any]:
    """The metadata stored beside each frame; the dataset tools read nothing else."""
    return {
        "camera_id": camera.id,
        "camera_name": camera.name,
        "lat": camera.lat,
        "lon": camera.lon,
        "captured_at": iso_utc(captured_at),
        "url": public_url(camera.url),
        "sha256": verdict.sha256,
        "bytes": len(fetched.body),
        "width": verdict.width,
        "height": verdict.height,
        "etag": fetched.etag,
        "last_modified": fetched.last_modified,
        "exif_datetime": verdict.exif_datetime,
        "fingerprint": verdict.fingerprint.to_json() if verdict.fingerprint else None,
        "distance": verdict.distance,
        "change": verdict.decision.to_json() if verdict.decision is not None else None,
        "truncated": verdict.truncated,
        "fetch_ms": round(fetched.elapsed_s * 1000, 1),
        "lyoncam_version": __version__,
    }


class CameraTask:
    """Polls one camera until its own `stop` is set (by the registry or the daemon)."""

    def __init__(self, camera: CameraConfig, rt: Runtime, phase: float = 0.0,
                 anchor: float | None = None) -> None:
        self.camera = camera
        self.rt = rt
        self.phase = phase
        #: The first poll's due time (monotonic): `phase` after an `anchor` shared by every
        #: camera started together, not after this camera's own recovery, which at start
        #: waits its turn behind thousands of others. Anchored on the recovery's end, the
        #: phases of 10,000 cameras stretched over 60 s plus the whole start-up, and for as
        #: long as the daemon ran about 25 s of every minute were due at 1.4 times the rate
        #: of the rest.
        self.first_due = (time.monotonic() if anchor is None else anchor) + phase
        self.stop = StopSignal()
        self.reach = Reachability()
        self.validators: Validators | None = None
        self.last: LastFrame | None = None
        self.write_error: str | None = None
        self._recovered = False
        # Host and port only: the slots' key never holds a camera's `user:password@`.
        self._host = host_port(urlsplit(camera.url).netloc)
        #: How long the last answer took; None before the first.
        self._last_fetch_s: float | None = None
        #: Parts (enrichers, hooks) failing now → the kind of their failure (`_failing`).
        self._failures: dict[str, str] = {}
        self._crash: str | None = None
        self.log = structlog.get_logger("lyoncam.camera").bind(camera=camera.id)
        rt.stats.camera(camera.id)  # listed in summaries before its first poll ends
        self._changed_at = time.monotonic()

    @property
    def stats(self) -> CameraStats:
        return self.rt.stats.camera(self.camera.id)

    def inherit(self, previous: CameraTask) -> None:
        """Take over a replaced task's memory (same camera, same URL, new settings), so a
        reload stores no duplicate and forgets no failure."""
        self.reach = previous.reach
        self.validators = previous.validators
        self.last = previous.last
        self.write_error = previous.write_error
        self._recovered = previous._recovered
        self._last_fetch_s = previous._last_fetch_s
        self._changed_at = previous._changed_at

    async def recover(self) -> None:
        """Repair what a killed run left, then reload the newest stored frame's facts so a
        restart stores no duplicate. Done once, before the first poll."""
        if self._recovered:
            return
        self._recovered = True
        try:
            async with self.rt.recovering:
                removed = await self.rt.storage.recover(self.camera.id)
                found = await self.rt.storage.latest(self.camera.id)
                last = LastFrame.from_sidecar(found.sidecar) if found is not None else None
                if found is not None and last is not None:
                    # In the same turn: thousands of cameras starting together must not
                    # each hold a whole frame's bytes while they wait for the decode pool.
                    last = await self._with_reference(found, last)
        except StoreError as exc:
            # An unreachable bucket must not keep the camera from capturing; the cost is at
            # most one frame stored again.
            self.log.warning("newest stored frame not read back; the next one may repeat it",
                             error=str(exc))
            return
        if removed:
            self.log.info("removed incomplete files from an interrupted run", files=removed)
        if found is None:
            return
        meta = found.sidecar
        self.last = last
        if meta.get("etag") or meta.get("last_modified"):
            self.validators = Validators(meta.get("etag"), meta.get("last_modified"))
        captured_at = meta.get("captured_at")
        try:
            when = datetime.fromisoformat(captured_at).timestamp() if captured_at else None
        except (TypeError, ValueError):
            when = None
        if when is not None:
            self._stored_at(str(captured_at), when)

    def _stored_at(self, captured_at: str, when: float) -> None:
        """The newest stored frame's capture time: the status page's, and /healthz's."""
        self.rt.stats.stored(self.camera.id, captured_at, when,
                             self.camera.stale_after * self.camera.interval)

    async def _with_reference(self, found: StoredFrame, last: LastFrame) -> LastFrame:
        """The local test's reference rebuilt from the newest stored frame's bytes. Without
        it the next frame is stored (at most one extra frame), never wrongly dropped."""
        try:
            data = await self.rt.storage.read(found.key)
            return await self.rt.judge.remember(data, last)
        except (StoreError, CorruptFrame) as exc:
            self.log.warning("newest stored frame not decoded again; the next one is stored",
                             key=found.key, error=str(exc))
            return last

    async def run(self) -> None:
        await self.recover()
        due = self.first_due  # past already if recovery took longer: polled now, then on grid
        now = time.monotonic()
        if now - due >= self.camera.interval:
            # Late by more than an interval: due at the grid's latest tick, so the poll still
            # has until the next one to get a turn (not a poll skipped as if overloaded).
            due = next_due(due, self.camera.interval, now) - self.camera.interval
        while await self._wait_until(due):
            ok = await self._poll_guarded(due)
            now = time.monotonic()
            due = next_due(due, self.camera.interval, now) if ok else now + self._retry_delay()

    async def _poll_guarded(self, due: float) -> bool:
        try:
            ok = await self.poll_once(due)
            self._crash = None
            return ok
        except Exception as exc:  # a bug must cost one poll, not the camera for months
            self._crashed(exc)
            return True

    async def _wait_until(self, due: float) -> bool:
        """Sleep until `due`; False as soon as this camera is told to stop.

        Wakes early at the moment a failing camera turns `down`, so the state says so
        after `down_after` as documented, not at whatever backed-off poll comes next.
        """
        down_after = self.rt.config.retry.down_after
        while True:
            down_at = self.reach.down_at(down_after)
            wake = min(due, down_at) if down_at is not None else due
            delay = wake - time.monotonic()
            if delay > 0:
                await self.stop.wait(delay)
            if self.stop.is_set():
                return False
            if self.reach.expire(time.monotonic(), down_after):
                self._state_changed(State.FAILING, None)
            if time.monotonic() >= due:
                return True

    def _retry_delay(self) -> float:
        retry = self.rt.config.retry
        if self.reach.state is State.DOWN:
            return retry.down_probe_interval
        return backoff_delay(self.reach.failures, retry.backoff_initial, retry.backoff_max,
                             self.rt.rng.random())

    def _standing(self) -> Standing:
        """Which request turns this camera may take (fetch.Slots): failing, or slower than
        half its timeout last time, only part of them; a camera with a fast answer last
        time, or not polled yet, the kept turn too (cut at its fast limit there)."""
        last = self._last_fetch_s
        if self.reach.state in (State.FAILING, State.DOWN) or (
                last is not None and last > self.camera.timeout / 2):
            return Standing.SUSPECT
        if last is None or last <= fast_limit(self.camera.timeout, self.camera.interval):
            return Standing.FAST
        return Standing.SLOW

    async def poll_once(self, due: float | None = None) -> bool:
        """One poll. False when the camera failed and should back off.

        A poll that gets no request slot before its next tick is skipped (counted), and a
        fetched frame waits for room in the pipeline while still holding its slot: a daemon
        that cannot keep up slows its own fetching and skips polls, rather than piling
        frames up in memory or bunching late polls together.
        """
        asked = time.monotonic()
        due = asked if due is None else due
        try:
            async with self.rt.slots.hold(self._host, self._standing(),
                                          within=due + self.camera.interval - asked) as turn:
                started = time.monotonic()
                self.rt.stats.polled(self.stats)
                self.stats.last_poll_unix = time.time()
                self.stats.slot_wait_s.observe(started - asked)
                self.rt.stats.slot_wait_s.observe(started - asked)
                late = max(0.0, started - due)
                self.stats.lateness_s.observe(late)
                self.rt.stats.lateness_s.observe(late)
                limit = self.camera.timeout
                if turn.kept:  # the turn kept for fast cameras is held briefly, or cut
                    limit = min(limit, fast_limit(self.camera.timeout, self.camera.interval))
                fetched = await fetch_frame(
                    self.rt.session, self.camera.url, time_limit=limit,
                    max_bytes=self.rt.config.http.max_frame_bytes, validators=self.validators,
                    connect_timeout=self.rt.config.http.connect_timeout,
                    follow_redirects=self.rt.config.http.follow_redirects,
                )
                if not fetched.not_modified:
                    waiting = time.monotonic()
                    await self.rt.pipeline.acquire()  # released by _judge_and_store
                    self.rt.stats.pipeline_wait_s.observe(time.monotonic() - waiting)
        except NoTurn:
            self.rt.stats.skipped_poll(self.stats)
            return True
        except FetchError as exc:
            self._failed(exc)
            return False
        if fetched.not_modified:
            self._answered(fetched)
            self._counted(Outcome.UNCHANGED, fetched)
            return True
        try:
            self._answered(fetched)
            await self._judge_and_store(fetched)
        finally:
            self.rt.pipeline.release()
        return True

    def _answered(self, fetched: Fetched) -> None:
        self._last_fetch_s = fetched.elapsed_s
        self.stats.fetch_s.observe(fetched.elapsed_s)
        self.rt.stats.fetch_s.observe(fetched.elapsed_s)
        self.stats.fetched_bytes += len(fetched.body)
        self._reachable()

    async def _judge_and_store(self, fetched: Fetched) -> None:
        verdict = await self.rt.judge.judge(self.camera, fetched.body, self.last,
                                            now=self.rt.clock())
        if verdict.outcome is Outcome.STORED and not await self._store(fetched, verdict):
            return  # validators kept: the next poll fetches this frame again
        if (verdict.outcome is Outcome.NEAR_DUPLICATE and self.last is not None
                and verdict.decision is not None):
            self.last.noise = verdict.decision.noise  # what this same frame taught
        self.validators = fetched.validators
        self._counted(verdict.outcome, fetched, verdict)

    async def _store(self, fetched: Fetched, verdict: Verdict) -> bool:
        captured_at = datetime.fromtimestamp(self.rt.clock(), UTC)
        extra = await enrich(self.rt.enrichers, self.camera, captured_at, verdict)
        failed = set()
        for name, reason in extra.failures:
            failed.add(name)
            self.stats.enrich_errors += 1
            if self._failing(f"enricher {name}", reason):
                self.log.warning("enricher failed; frame stored without it", enricher=name,
                                 error=reason)
        for enricher in self.rt.enrichers:
            if enricher.name not in failed and self._working(f"enricher {enricher.name}"):
                self.log.info("enricher works again", enricher=enricher.name)
        # The core fields win: an enricher can add to a sidecar, never rewrite its facts.
        sidecar = {**extra.fields, **build_sidecar(self.camera, fetched, verdict, captured_at)}
        # Saved and recorded (last frame, hooks) as one, even if this task is cancelled
        # meanwhile (a reload's grace ran out): the frame may be on disk already, and a task
        # that forgot it would store it again and the index would never hear of it.
        recording = asyncio.ensure_future(self._save_and_record(
            Frame(self.camera.id, captured_at, fetched.body, sidecar), verdict))
        try:
            return await asyncio.shield(recording)
        except asyncio.CancelledError:
            if not recording.done():
                with contextlib.suppress(Exception):
                    await recording  # a second cancel (a second Ctrl-C) ends this at once
            raise

    async def _save_and_record(self, frame: Frame, verdict: Verdict) -> bool:
        sidecar = frame.sidecar
        try:
            stored = await self.rt.storage.save(frame)
        except StoreError as exc:
            self._write_failed(str(exc))
            return False
        if self.write_error is not None:
            self.log.info("writes recovered", key=stored.key)
            self.write_error = None
        # Any stored frame proves the store works again, whichever camera saw it fail.
        self.rt.stats.storage_error = None
        self.last = LastFrame(
            sha256=verdict.sha256, fingerprint=verdict.fingerprint,
            reference=verdict.reference, stored_at=frame.captured_at.timestamp(),
            noise=verdict.decision.noise if verdict.decision is not None else None)
        self.stats.stored_bytes += stored.size
        self._stored_at(sidecar["captured_at"], frame.captured_at.timestamp())
        self.log.debug("stored", key=stored.key, bytes=stored.size, distance=verdict.distance,
                       reason=sidecar["change"]["reason"] if sidecar["change"] else None)
        await self._after_store(stored)
        return True

    async def _after_store(self, stored: StoredFrame) -> None:
        for hook in self.rt.hooks:
            name = getattr(hook, "__qualname__", type(hook).__name__)
            try:
                await hook(stored)
            except Exception as exc:  # the frame is stored: a hook's bug costs only its part
                self.stats.hook_errors += 1
                error = f"{type(exc).__name__}: {exc}"
                if self._failing(f"hook {name}", error):
                    self.log.warning("post-store hook failed", hook=name, error=error)
            else:
                if self._working(f"hook {name}"):
                    self.log.info("post-store hook works again", hook=name)

    def _write_failed(self, error: str) -> None:
        self.stats.write_errors += 1
        self.rt.stats.storage_error = error
        if error != self.write_error:
            self.log.error("write failed", error=error)
        self.write_error = error
        self._set_condition(Condition.WRITE_FAILING)

    def _failing(self, part: str, error: str) -> bool:
        """Record a failure of `part` (an enricher, a hook); whether to log it: when it
        starts, or when its kind changes (the exception's type, not its text, which may
        differ every frame). One entry per part, so the memory stays as small as the list
        of parts, and `_working` forgets it: a failure that returns is logged again."""
        kind = error.partition(":")[0]
        if self._failures.get(part) == kind:
            return False
        self._failures[part] = kind
        return True

    def _working(self, part: str) -> bool:
        """`part` worked: whether it was failing until now (then say so once)."""
        return self._failures.pop(part, None) is not None

    def _counted(self, outcome: Outcome, fetched: Fetched, verdict: Verdict | None = None) -> None:
        self.rt.stats.counted(self.stats, outcome.value)
        if outcome is not Outcome.STORED:
            self.log.debug("skipped", outcome=outcome.value, bytes=len(fetched.body),
                           distance=verdict.distance if verdict else None)
        now = time.monotonic()
        if outcome is Outcome.STORED:
            self._changed_at = now
        current = self.stats.condition
        if outcome in _ABNORMAL:
            self._set_condition(_ABNORMAL[outcome])
        elif current is Condition.WRITE_FAILING:
            pass  # only a stored frame proves the disk takes frames again
        elif outcome is Outcome.UNCHANGED and current not in (Condition.NORMAL, Condition.STALE):
            pass  # the same bytes as before: a placeholder camera is still showing it
        elif now - self._changed_at > self.camera.stale_after * self.camera.interval:
            self._set_condition(Condition.STALE)
        else:
            self._set_condition(Condition.NORMAL)

    def _set_condition(self, condition: Condition) -> None:
        previous = self.stats.condition
        if condition is previous:
            return
        self.rt.stats.set_condition(self.camera.id, condition)
        hint = _HINTS.get(condition)
        if condition is Condition.STALE:
            hint = (f"no new frame for {self.camera.stale_after:g} intervals; "
                    "the camera may be frozen")
        log = self.log.info if condition is Condition.NORMAL else self.log.warning
        log("camera condition", condition=condition.value, previous=previous.value,
            **({"hint": hint} if hint else {}))

    def _crashed(self, exc: Exception) -> None:
        """Log a crashing poll with its traceback once per distinct error, not every poll."""
        self.rt.stats.failed(self.stats, ErrorKind.INTERNAL.value)
        key = f"{type(exc).__name__}: {exc}"
        if key != self._crash:
            self.log.exception("poll crashed", error=key)
        self._crash = key

    def _reachable(self) -> None:
        previous = self.reach.succeeded()
        self.rt.stats.set_state(self.camera.id, self.reach.state)
        if previous is State.STARTING:
            self.log.debug("camera state", state=State.OK.value, previous=previous.value)
        elif previous is not None:
            self.log.info("camera state", state=State.OK.value, previous=previous.value)

    def _failed(self, exc: FetchError) -> None:
        self.rt.stats.failed(self.stats, exc.kind.value)
        previous = self.reach.failed(time.monotonic(), self.rt.config.retry.down_after)
        if previous is not None:
            self._state_changed(previous, exc)
        else:
            self.log.debug("poll failed", error=str(exc), failures=self.reach.failures)

    def _state_changed(self, previous: State, exc: FetchError | None) -> None:
        self.rt.stats.set_state(self.camera.id, self.reach.state)
        self.log.warning("camera state", state=self.reach.state.value, previous=previous.value,
                         failures=self.reach.failures,
                         **({"error": str(exc)} if exc is not None else {}))
