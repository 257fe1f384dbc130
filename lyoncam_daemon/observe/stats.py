"""What the daemon has done, per camera: counters, timings, state and condition.

The camera tasks write these (one event loop: no locks); the periodic summary and
`health.json` read one `Snapshot`, taken synchronously so its numbers add up. Counters live
for the daemon's lifetime, across reloads; a camera removed from the config is dropped with
`Stats.remove`.

What `/healthz`, the status page's header and the daemon-wide `/metrics` families need is
kept as running figures (`Stats.every`, `states`, `problems`, `fresh`), updated as things
change through `Stats`' methods: reading them costs the same at 20 cameras as at 20,000,
where adding every camera up took 200-500 ms of the event loop per request.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import dataclasses
import heapq
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog

from lyoncam_daemon.observe.lag import RecentMax
from lyoncam_daemon.storage.spool import SpoolStats


class State(StrEnum):
    """Reachability of a camera: starting → ok ⇄ failing → down."""

    STARTING = "starting"
    OK = "ok"
    FAILING = "failing"
    DOWN = "down"


class Condition(StrEnum):
    """What the camera's answers look like, or why its frames are not being kept."""

    NORMAL = "normal"
    PLACEHOLDER = "placeholder"
    TRUNCATED = "truncated"
    NOT_IMAGE = "not_image"
    CORRUPT = "corrupt"
    TOO_LARGE = "too_large"
    STALE = "stale"
    #: Frames arrive but cannot be stored (full or read-only disk): nothing is being kept.
    WRITE_FAILING = "write_failing"


def severity(state: State, condition: Condition) -> int:
    """0 worst: down, failing, an abnormal condition, starting, then 4 for a healthy camera.
    The status page lists cameras in this order."""
    if state is State.DOWN:
        return 0
    if state is State.FAILING:
        return 1
    if condition is not Condition.NORMAL:
        return 2
    if state is State.STARTING:
        return 3
    return HEALTHY


HEALTHY = 4


#: Upper bounds (seconds) of the histogram buckets every Timing keeps, for `/metrics`.
#: 1.5 and 2 resolve a p99 near the 2 s lateness target of `bench/capacity.py`.
BUCKETS_S: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0,
                                 10.0, 20.0, 30.0, 60.0)


class ErrorKind(StrEnum):
    """Why a poll failed; counted per camera and kind."""

    TIMEOUT = "timeout"
    DNS = "dns"
    CONNECTION = "connection"
    HTTP = "http"
    #: A redirect to another scheme, host or port (or any, with http.follow_redirects off).
    REDIRECT_REFUSED = "redirect_refused"
    TOO_LARGE = "too_large"
    #: A bug in lyoncam (a crashing check), not the camera's fault.
    INTERNAL = "internal"


@dataclass(slots=True)
class Timing:
    """Observations of one duration: a summary, and bucket counts for a histogram.

    Slots, here and in CameraStats: every camera keeps a CameraStats and three Timings,
    and an instance dict each cost more than the values in it (about 0.5 KB a camera)."""

    count: int = 0
    total: float = 0.0
    max: float = 0.0
    last: float | None = None
    #: Observations per bound of BUCKETS_S (not cumulative); those above the last bound are
    #: `count - sum(buckets)`.
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_S))

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)
        self.last = seconds
        i = bisect.bisect_left(BUCKETS_S, seconds)
        if i < len(BUCKETS_S):
            self.buckets[i] += 1

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def copy(self) -> Timing:
        new = object.__new__(Timing)
        new.count, new.total, new.max, new.last = self.count, self.total, self.max, self.last
        new.buckets = self.buckets.copy()
        return new


@dataclass(slots=True)
class CameraStats:
    """What happened to one camera's polls since the daemon started."""

    polls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    fetched_bytes: int = 0
    stored_bytes: int = 0
    write_errors: int = 0
    #: Polls not made because the daemon had no room for them before the next tick.
    skipped: int = 0
    #: Enrichers or post-store hooks that failed: the frame was kept without their part.
    enrich_errors: int = 0
    hook_errors: int = 0
    state: State = State.STARTING
    condition: Condition = Condition.NORMAL
    last_stored_at: str | None = None
    #: Wall-clock time (Unix seconds) the last poll started.
    last_poll_unix: float | None = None
    #: Request time, from the moment a connection slot was granted to the last body byte.
    fetch_s: Timing = field(default_factory=Timing)
    #: Time waiting for a connection slot (other cameras' requests in flight).
    slot_wait_s: Timing = field(default_factory=Timing)
    #: How late each poll started against its schedule.
    lateness_s: Timing = field(default_factory=Timing)

    def copy(self) -> CameraStats:
        """A deep copy by hand: `copy.deepcopy` took 1 s on the loop for 20,000 cameras,
        `dataclasses.replace` 0.5 s."""
        new = object.__new__(CameraStats)
        for name in _PLAIN:
            setattr(new, name, getattr(self, name))
        new.outcomes, new.errors = _counter_copy(self.outcomes), _counter_copy(self.errors)
        new.fetch_s, new.slot_wait_s = self.fetch_s.copy(), self.slot_wait_s.copy()
        new.lateness_s = self.lateness_s.copy()
        return new

    def as_dict(self) -> dict[str, Any]:
        """For health.json; by hand, as `dataclasses.asdict` took 3.6 s for 20,000 cameras.
        Histogram buckets are for /metrics, not health.json."""
        d: dict[str, Any] = {name: getattr(self, name) for name in _FIELDS}
        d["outcomes"], d["errors"] = dict(self.outcomes), dict(self.errors)
        d["state"], d["condition"] = self.state.value, self.condition.value
        for name in _TIMINGS:
            t: Timing = d[name]
            d[name] = {"count": t.count, "total": t.total, "max": t.max, "last": t.last}
        return d


_FIELDS = tuple(f.name for f in dataclasses.fields(CameraStats))
_TIMINGS = tuple(f.name for f in dataclasses.fields(CameraStats) if f.type == "Timing")
#: Fields copied as they are: numbers, strings, enums.
_PLAIN = tuple(name for name in _FIELDS if name not in {*_TIMINGS, "outcomes", "errors"})

#: Cameras copied between two turns of the event loop by `Stats.snapshot_in_steps`: about
#: 2 ms of the loop at a time. One go over 10,000 cameras held it 0.2-0.5 s (py-spy and a
#: callback probe in bench/capacity.py's run), and every camera due meanwhile started late.
SNAPSHOT_STEP = 250


def _counter_copy(counter: Counter[str]) -> Counter[str]:
    # `Counter(c)` goes through Counter.update's Python code; dict.update is one C call.
    # Measured: a third of CameraStats.copy.
    new: Counter[str] = Counter()
    dict.update(new, counter)
    return new


@dataclass(frozen=True)
class Snapshot:
    """A consistent copy of every camera's stats at one moment."""

    taken_unix: float
    cameras: Mapping[str, CameraStats]
    #: Why the store refuses frames right now (the latest write error), None while it works.
    storage_error: str | None = None
    spool: SpoolStats | None = None
    #: Every camera's polls together, for daemons with too many cameras to watch one by one.
    fetch_s: Timing = field(default_factory=Timing)
    lateness_s: Timing = field(default_factory=Timing)
    #: Polls, skips and outcomes of every camera since the start, removed ones included:
    #: what the daemon-wide counters of `/metrics` show, which must never go down.
    every: CameraStats = field(default_factory=CameraStats)
    #: Cameras polled now (`cameras` is left empty by `Stats.snapshot(cameras=False)`).
    camera_count: int = 0
    #: How late the event loop woke its sleeper (lag.py), since the start; and the
    #: longest such lag of the last minute.
    loop_lag_s: Timing = field(default_factory=Timing)
    loop_lag_max_s: float = 0.0
    #: Where lateness comes from: a poll's wait for a request turn, and a fetched frame's
    #: wait (holding its turn) for room in the pipeline of frames being judged and stored.
    slot_wait_s: Timing = field(default_factory=Timing)
    pipeline_wait_s: Timing = field(default_factory=Timing)

    def totals(self) -> dict[str, Any]:
        totals = Totals()
        for cam in self.cameras.values():
            totals.add(cam)
        return totals.as_dict()

    def storage(self) -> dict[str, Any]:
        """The store's part of health.json: does it take frames, and the spool's figures."""
        storage: dict[str, Any] = {"ok": self.storage_error is None, "error": self.storage_error}
        if self.spool is not None:
            storage["spool"] = self.spool.as_dict(self.taken_unix)
        return storage

    def as_dict(self) -> dict[str, Any]:
        return {
            "totals": self.totals(),
            "storage": self.storage(),
            "cameras": {cid: cam.as_dict() for cid, cam in self.cameras.items()},
        }


class Totals:
    """Every camera's counters added up, one camera at a time (for health.json and the
    summary line)."""

    __slots__ = ("cameras", "errors", "outcomes", "polls", "skipped", "states", "stored_bytes",
                 "write_errors")

    def __init__(self) -> None:
        self.cameras = self.polls = self.stored_bytes = self.write_errors = self.skipped = 0
        self.outcomes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.states: Counter[str] = Counter()

    def add(self, cam: CameraStats) -> None:
        self.cameras += 1
        self.polls += cam.polls
        self.stored_bytes += cam.stored_bytes
        self.write_errors += cam.write_errors
        self.skipped += cam.skipped
        self.outcomes.update(cam.outcomes)
        self.errors.update(cam.errors)
        self.states[cam.state.value] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "cameras": self.cameras,
            "states": dict(self.states),
            "polls": self.polls,
            "stored": self.outcomes.get("stored", 0),
            "stored_bytes": self.stored_bytes,
            "write_errors": self.write_errors,
            "skipped": self.skipped,
            "outcomes": dict(self.outcomes),
            "errors": dict(self.errors),
        }


class Freshness:
    """Cameras that stored a frame within their horizon (`stale_after` intervals), counted as
    frames are stored: one entry per fresh camera, expired lazily when counted."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        #: (until, camera) of every camera in `_until`, earliest first; an entry whose camera
        #: has stored since is put back with its new time when it comes up.
        self._heap: list[tuple[float, str]] = []

    def mark(self, camera_id: str, until: float) -> None:
        """`camera_id` stored a frame: fresh until `until` (Unix seconds)."""
        current = self._until.get(camera_id)
        if current is None:
            heapq.heappush(self._heap, (until, camera_id))
        if current is None or until > current:
            self._until[camera_id] = until

    def forget(self, camera_id: str) -> None:
        self._until.pop(camera_id, None)

    def count(self, now: float) -> int:
        """Cameras fresh at `now`. Amortised O(log n) per stored frame, whoever asks."""
        heap, until = self._heap, self._until
        while heap and heap[0][0] < now:
            _, cid = heapq.heappop(heap)
            latest = until.get(cid)
            if latest is None:
                continue  # forgotten, or counted out by an earlier entry
            if latest < now:
                del until[cid]
            else:
                heapq.heappush(heap, (latest, cid))
        return len(until)


@dataclass
class Stats:
    """Counters of every camera, shared by the camera tasks.

    Counts that feed a daemon-wide figure go through the methods here (`polled`, `counted`,
    `failed`, `skipped_poll`, `set_state`, `set_condition`, `stored`), which keep the
    running figures true; the rest (bytes, timings) are written on `CameraStats` directly.
    """

    _overload_logged: bool = field(default=False, repr=False)

    cameras: dict[str, CameraStats] = field(default_factory=dict)
    storage_error: str | None = None
    #: Set when frames go to an object store through a spool.
    spool: SpoolStats | None = None
    #: Skipped polls not yet reported (see `overloaded`).
    unreported_skips: int = 0
    #: Every camera's fetch and lateness timings together (CameraStats has each one's),
    #: and the two waits lateness is made of besides the event loop's lag (Snapshot).
    fetch_s: Timing = field(default_factory=Timing)
    lateness_s: Timing = field(default_factory=Timing)
    slot_wait_s: Timing = field(default_factory=Timing)
    pipeline_wait_s: Timing = field(default_factory=Timing)
    #: Polls, skips, outcomes and errors of every camera since the start, removed ones
    #: included: the daemon-wide counters, which must never go down.
    every: CameraStats = field(default_factory=CameraStats)
    #: Cameras polled now, by state.
    states: Counter[State] = field(default_factory=Counter)
    #: Cameras that are not healthy (state ok, condition normal), with their `severity`.
    problems: dict[str, int] = field(default_factory=dict)
    #: Cameras that stored within their `stale_after` horizon (`stored`).
    fresh: Freshness = field(default_factory=Freshness)
    _sorted_ids: list[str] | None = field(default=None, repr=False)
    #: How late the event loop ran what was due (`loop_lagged`, fed by lag.watch_loop).
    loop_lag_s: Timing = field(default_factory=Timing)
    loop_lag_recent: RecentMax = field(default_factory=RecentMax)

    def overloaded(self) -> None:
        """A poll was skipped. The first of an episode is logged at once, the rest are
        summed up by the next summary: twenty thousand cameras never log twenty thousand
        lines."""
        if self.unreported_skips == 0 and not self._overload_logged:
            self._overload_logged = True
            structlog.get_logger("lyoncam.daemon").warning(
                "overloaded: skipping polls", hint="fewer cameras per daemon (shard), longer "
                "intervals, more dedup.workers, or a faster disk")
        self.unreported_skips += 1

    def take_skips(self) -> int:
        """Skips since the last call; an episode ends with a summary that saw none."""
        n, self.unreported_skips = self.unreported_skips, 0
        if n == 0:
            self._overload_logged = False
        return n

    def camera(self, camera_id: str) -> CameraStats:
        # Not setdefault: that builds a CameraStats (two Counters, three Timings) on every
        # call, several times per poll, only to throw it away.
        cam = self.cameras.get(camera_id)
        if cam is None:
            cam = self.cameras[camera_id] = CameraStats()
            self.states[cam.state] += 1
            self._rank(camera_id, cam)
            self._sorted_ids = None
        return cam

    def remove(self, camera_id: str) -> None:
        """A camera left the config: its series disappear from reports; its counts stay in
        the daemon-wide ones (`every`)."""
        cam = self.cameras.pop(camera_id, None)
        if cam is not None:
            self.states[cam.state] -= 1
            self.problems.pop(camera_id, None)
            self.fresh.forget(camera_id)
            self._sorted_ids = None

    # -- counting, with the running figures -----------------------------------------------

    def polled(self, cam: CameraStats) -> None:
        cam.polls += 1
        self.every.polls += 1

    def skipped_poll(self, cam: CameraStats) -> None:
        cam.skipped += 1
        self.every.skipped += 1
        self.overloaded()

    def counted(self, cam: CameraStats, outcome: str) -> None:
        cam.outcomes[outcome] += 1
        self.every.outcomes[outcome] += 1

    def failed(self, cam: CameraStats, kind: str) -> None:
        cam.errors[kind] += 1
        self.every.errors[kind] += 1

    def set_state(self, camera_id: str, state: State) -> None:
        cam = self.camera(camera_id)
        if cam.state is not state:
            self.states[cam.state] -= 1
            self.states[state] += 1
            cam.state = state
            self._rank(camera_id, cam)

    def set_condition(self, camera_id: str, condition: Condition) -> None:
        cam = self.camera(camera_id)
        if cam.condition is not condition:
            cam.condition = condition
            self._rank(camera_id, cam)

    def stored(self, camera_id: str, captured_at: str | None, when_unix: float,
               horizon_s: float) -> None:
        """A frame of `camera_id` captured at `when_unix` is stored (or was, before a
        restart): it is fresh for `horizon_s` (its `stale_after` intervals)."""
        self.camera(camera_id).last_stored_at = captured_at
        self.fresh.mark(camera_id, when_unix + horizon_s)

    def loop_lagged(self, seconds: float, now: float | None = None) -> None:
        """The event loop woke a sleeper `seconds` late (lag.watch_loop)."""
        self.loop_lag_s.observe(seconds)
        self.loop_lag_recent.observe(seconds, time.monotonic() if now is None else now)

    def _rank(self, camera_id: str, cam: CameraStats) -> None:
        level = severity(cam.state, cam.condition)
        if level == HEALTHY:
            self.problems.pop(camera_id, None)
        else:
            self.problems[camera_id] = level

    def ordered_ids(self) -> list[str]:
        """Every camera's id, sorted; kept until a camera is added or removed."""
        if self._sorted_ids is None:
            self._sorted_ids = sorted(self.cameras)
        return self._sorted_ids

    def snapshot(self, cameras: bool = True) -> Snapshot:
        """A consistent copy, taken on the loop. Without `cameras` only the daemon-wide
        figures, which cost the same whatever the number of cameras."""
        copies = {cid: cam.copy() for cid, cam in self.cameras.items()} if cameras else {}
        return self._snapshot_with(copies)

    async def in_steps(self, step: int = SNAPSHOT_STEP) -> AsyncIterator[tuple[str, CameraStats]]:
        """Every camera now, `step` per turn of the event loop: work over every camera
        that holds the loop no longer than `step` cameras' worth. Whoever iterates must not
        await between two cameras (a camera's stats must not move while it is read). A
        camera removed meanwhile is left out, one added meanwhile is not reached."""
        ids = list(self.cameras)
        for start in range(0, len(ids), step):
            if start:
                await asyncio.sleep(0)
            for cid in ids[start:start + step]:
                cam = self.cameras.get(cid)
                if cam is not None:
                    yield cid, cam

    async def snapshot_in_steps(self, step: int = SNAPSHOT_STEP) -> Snapshot:
        """`snapshot()`, copying `step` cameras per turn of the event loop (`in_steps`):
        what `/metrics` with per-camera series takes, so no camera's poll waits for the
        whole copy. Each camera's copy is consistent in itself; cameras are copied a few
        milliseconds apart."""
        copies = {cid: cam.copy() async for cid, cam in self.in_steps(step)}
        return self._snapshot_with(copies)

    def _snapshot_with(self, copies: dict[str, CameraStats]) -> Snapshot:
        return Snapshot(time.time(), copies, self.storage_error, copy.copy(self.spool),
                        self.fetch_s.copy(), self.lateness_s.copy(), self.every.copy(),
                        len(self.cameras), self.loop_lag_s.copy(),
                        self.loop_lag_recent.value(time.monotonic()),
                        self.slot_wait_s.copy(), self.pipeline_wait_s.copy())
