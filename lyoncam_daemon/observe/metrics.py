"""`/metrics`: the daemon's counters in Prometheus text format, rendered at scrape time.

A custom collector reads one `Stats.snapshot()` per scrape instead of keeping its own
prometheus-client counters: the numbers are the very ones the summary and health.json show,
they survive a reload (Stats does), and a camera removed from the config simply stops
appearing, with nothing left behind in a registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from lyoncam_daemon import __version__
from lyoncam_daemon.frames.judge import Outcome
from lyoncam_daemon.observe.stats import (
    BUCKETS_S,
    CameraStats,
    Condition,
    ErrorKind,
    Snapshot,
    State,
    Timing,
)


@dataclass(frozen=True)
class DiskFigures:
    """Daemon-wide storage figures, read at scrape time."""

    free_bytes: int | None
    paused: bool
    paused_frames: int
    retention_freed_bytes: int
    retention_deleted_frames: int
    #: retention.min_free_bytes, the guard's threshold (None where no guard runs: S3).
    min_free_bytes: int | None = None


def last_stored_unix(cam: CameraStats) -> float | None:
    if cam.last_stored_at is None:
        return None
    try:
        return datetime.fromisoformat(cam.last_stored_at).timestamp()
    except ValueError:
        return None


def histogram_buckets(timing: Timing) -> list[tuple[str, float]]:
    """Cumulative `le` buckets of a Timing, `+Inf` last (equal to the count)."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(BUCKETS_S, timing.buckets, strict=True):
        running += n
        out.append((repr(bound), float(running)))
    out.append(("+Inf", float(timing.count)))
    return out


class LyoncamCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot], disk: Callable[[], DiskFigures],
                 per_camera: bool = True, holds: Mapping[str, Timing] | None = None) -> None:
        self._snapshot = snapshot
        self._disk = disk
        self._per_camera = per_camera
        self._holds = holds or {}

    def collect(self) -> Iterable[Metric]:
        snap = self._snapshot()
        yield from _daemon_metrics(snap)
        if self._per_camera:
            yield from _camera_metrics(snap)
        yield from _disk_metrics(self._disk(), snap)
        if snap.spool is not None:
            yield from _spool_metrics(snap)
        if self._holds:
            yield from _hold_metrics(self._holds)
        info = GaugeMetricFamily("lyoncam_build_info", "lyoncam version running",
                                 labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info


def _camera_metrics(snap: Snapshot) -> Iterable[Metric]:
    cam_label = ["camera"]
    frames = CounterMetricFamily("lyoncam_frames", "Frames fetched, by what became of them",
                                 labels=["camera", "outcome"])
    errors = CounterMetricFamily("lyoncam_poll_errors", "Failed polls, by kind",
                                 labels=["camera", "kind"])
    polls = CounterMetricFamily("lyoncam_polls", "Polls started", labels=cam_label)
    write_errors = CounterMetricFamily("lyoncam_write_errors",
                                       "Frames that could not be stored (disk full, paused, "
                                       "read-only)", labels=cam_label)
    fetched = CounterMetricFamily("lyoncam_fetched_bytes", "Bytes downloaded", labels=cam_label)
    stored = CounterMetricFamily("lyoncam_stored_bytes", "Bytes stored", labels=cam_label)
    last = GaugeMetricFamily("lyoncam_last_stored_timestamp_seconds",
                             "Unix time of the newest stored frame", labels=cam_label)
    up = GaugeMetricFamily("lyoncam_camera_up", "1 while the camera answers (state ok)",
                           labels=cam_label)
    state = GaugeMetricFamily("lyoncam_camera_state", "1 for the camera's current state",
                              labels=["camera", "state"])
    condition = GaugeMetricFamily("lyoncam_camera_condition",
                                  "1 for the camera's current condition",
                                  labels=["camera", "condition"])
    fetch_s = HistogramMetricFamily("lyoncam_fetch_seconds",
                                    "Request time, slot granted to last body byte",
                                    labels=cam_label)
    late_s = HistogramMetricFamily("lyoncam_schedule_lateness_seconds",
                                   "How late each poll started against its schedule",
                                   labels=cam_label)
    for cid, cam in sorted(snap.cameras.items()):
        for outcome in Outcome:
            frames.add_metric([cid, outcome.value], cam.outcomes.get(outcome.value, 0))
        for kind in ErrorKind:
            errors.add_metric([cid, kind.value], cam.errors.get(kind.value, 0))
        polls.add_metric([cid], cam.polls)
        write_errors.add_metric([cid], cam.write_errors)
        fetched.add_metric([cid], cam.fetched_bytes)
        stored.add_metric([cid], cam.stored_bytes)
        when = last_stored_unix(cam)
        if when is not None:
            last.add_metric([cid], when)
        up.add_metric([cid], 1.0 if cam.state is State.OK else 0.0)
        for s in State:
            state.add_metric([cid, s.value], 1.0 if cam.state is s else 0.0)
        for c in Condition:
            condition.add_metric([cid, c.value], 1.0 if cam.condition is c else 0.0)
        fetch_s.add_metric([cid], histogram_buckets(cam.fetch_s), cam.fetch_s.total)
        late_s.add_metric([cid], histogram_buckets(cam.lateness_s), cam.lateness_s.total)
    return [frames, errors, polls, write_errors, fetched, stored, last, up, state, condition,
            fetch_s, late_s]


def _daemon_metrics(snap: Snapshot) -> Iterable[Metric]:
    """Every camera together: what a daemon of 20,000 cameras is watched by, where 20,000
    series per family would be more than a Prometheus server wants (`status.camera_metrics`)."""
    every = snap.every  # removed cameras too: a counter never goes down
    yield GaugeMetricFamily("lyoncam_cameras", "Cameras polled by this daemon",
                            value=snap.camera_count)
    yield CounterMetricFamily("lyoncam_daemon_polls", "Polls started, every camera",
                              value=every.polls)
    yield CounterMetricFamily("lyoncam_daemon_polls_skipped",
                              "Polls not made: no room before the camera's next tick "
                              "(overload)", value=every.skipped)
    frames = CounterMetricFamily("lyoncam_daemon_frames",
                                 "Frames fetched by every camera, by what became of them",
                                 labels=["outcome"])
    for outcome in Outcome:
        frames.add_metric([outcome.value], every.outcomes.get(outcome.value, 0))
    yield frames
    for name, help_text, timing in (
        ("lyoncam_daemon_fetch_seconds",
         "Request time of every camera, slot granted to last byte", snap.fetch_s),
        ("lyoncam_daemon_lateness_seconds",
         "How late every camera's polls started against schedule", snap.lateness_s),
        ("lyoncam_daemon_slot_wait_seconds",
         "How long every camera's polls waited for a request turn (part of their lateness)",
         snap.slot_wait_s),
        ("lyoncam_daemon_pipeline_wait_seconds",
         "How long fetched frames waited, holding their request turn, for room among the "
         "frames being judged and stored: long waits mean the process is at its limit",
         snap.pipeline_wait_s),
        ("lyoncam_daemon_loop_lag_seconds",
         "How late the event loop woke a sleeper due every 50 ms: any work holding the loop "
         "(and so every camera due meanwhile) shows here", snap.loop_lag_s),
    ):
        family = HistogramMetricFamily(name, help_text)
        family.add_metric([], histogram_buckets(timing), timing.total)
        yield family
    yield GaugeMetricFamily("lyoncam_daemon_loop_lag_max_seconds",
                            "Longest event loop lag of the last minute",
                            value=snap.loop_lag_max_s)


#: (family, counter?, help, key of SpoolStats.as_dict)
_SPOOL = (
    ("lyoncam_spool_frames", False, "Frames waiting on local disk for upload", "frames"),
    ("lyoncam_spool_bytes", False, "Bytes waiting on local disk for upload", "bytes"),
    ("lyoncam_spool_lag_seconds", False,
     "Age of the oldest frame waiting for upload (0 when empty)", "lag_s"),
    ("lyoncam_spool_uploaded_frames", True,
     "Spooled frames uploaded once the store answered again", "uploaded"),
    ("lyoncam_spool_refused_frames", True, "Frames refused because the spool was full",
     "refused"),
    ("lyoncam_spool_lost_frames", True,
     "Spooled frames that could not be read back from local disk", "lost"),
)


#: The values of SpoolStats.store, each a series of lyoncam_object_store_state.
OBJECT_STORE_STATES = ("ok", "unreachable", "denied")


def _spool_metrics(snap: Snapshot) -> Iterable[Metric]:
    """The local spool in front of an object store (storage/spool.py)."""
    assert snap.spool is not None
    spool = snap.spool.as_dict(snap.taken_unix)
    for name, counter, text, key in _SPOOL:
        family = CounterMetricFamily if counter else GaugeMetricFamily
        yield family(name, text, value=spool[key])
    state = GaugeMetricFamily(
        "lyoncam_object_store_state", "1 for the object store's state: ok, unreachable (an "
        "outage the spool waits out) or denied (it refuses the credentials)", labels=["state"])
    for name in OBJECT_STORE_STATES:
        state.add_metric([name], 1.0 if spool["store"] == name else 0.0)
    yield state


def _disk_metrics(disk: DiskFigures, snap: Snapshot) -> Iterable[Metric]:
    if disk.free_bytes is not None:
        yield GaugeMetricFamily("lyoncam_disk_free_bytes", "Free bytes on the data disk",
                                value=disk.free_bytes)
    if disk.min_free_bytes is not None:
        # Beside the free bytes so an alert can compare the two (deploy/prometheus/alerts.yml).
        yield GaugeMetricFamily("lyoncam_disk_min_free_bytes",
                                "Storing pauses below this much free space "
                                "(retention.min_free_bytes)", value=disk.min_free_bytes)
    yield GaugeMetricFamily("lyoncam_storage_paused",
                            "1 while storing is paused below retention.min_free_bytes",
                            value=1.0 if disk.paused else 0.0)
    yield CounterMetricFamily("lyoncam_storage_paused_frames",
                              "Frames not stored because free space was below "
                              "retention.min_free_bytes", value=disk.paused_frames)
    yield GaugeMetricFamily("lyoncam_storage_ok", "1 while the last write succeeded",
                            value=0.0 if snap.storage_error else 1.0)
    yield CounterMetricFamily("lyoncam_retention_freed_bytes",
                              "Bytes deleted by retention passes", value=disk.retention_freed_bytes)
    yield CounterMetricFamily("lyoncam_retention_deleted_frames",
                              "Frames deleted by retention passes",
                              value=disk.retention_deleted_frames)


def _hold_metrics(holds: Mapping[str, Timing]) -> Iterable[Metric]:
    """How long the status endpoint's requests held the event loop at once (status.Stepped):
    what capture waited for while a request was served."""
    family = HistogramMetricFamily("lyoncam_status_loop_hold_seconds",
                                   "Longest single stretch each request held the event loop, "
                                   "by endpoint", labels=["endpoint"])
    most = GaugeMetricFamily("lyoncam_status_loop_hold_max_seconds",
                             "Longest the event loop was held at once by one request, by "
                             "endpoint, since the start", labels=["endpoint"])
    for endpoint, timing in holds.items():
        family.add_metric([endpoint], histogram_buckets(timing), timing.total)
        most.add_metric([endpoint], timing.max)
    yield family
    yield most


def build_registry(snapshot: Callable[[], Snapshot], disk: Callable[[], DiskFigures],
                   per_camera: bool = True, holds: Mapping[str, Timing] | None = None
                   ) -> CollectorRegistry:
    """A registry of our own (not the global one, so tests and reloads never collide), with
    the process figures (memory, CPU, open files) beside lyoncam's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LyoncamCollector(snapshot, disk, per_camera, holds))
    ProcessCollector(registry=registry)
    return registry


def render(snapshot: Snapshot, disk: DiskFigures, per_camera: bool = True,
           holds: Mapping[str, Timing] | None = None) -> bytes:
    """The `/metrics` body for one snapshot. Pure CPU (a few ms for a dozen cameras, and
    /proc reads): the endpoint calls it in a thread, with the snapshot taken on the loop."""
    return generate_latest(build_registry(lambda: snapshot, lambda: disk, per_camera, holds))
