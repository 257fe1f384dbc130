"""The status endpoint: /metrics, /healthz, the status page and thumbnails, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from PIL import Image, ImageStat
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from lyoncam_daemon.capture.daemon import Daemon, StartupError
from lyoncam_daemon.cli import main
from lyoncam_daemon.config import Config
from lyoncam_daemon.config.shard import parse_shard
from lyoncam_daemon.devtools.simulator import CriterSimulator, camera_ids
from lyoncam_daemon.observe import metrics
from lyoncam_daemon.observe.metrics import DiskFigures, build_registry
from lyoncam_daemon.observe.page import PAGE_SIZE, Card, Header, ordered, render
from lyoncam_daemon.observe.recent import RecentFrames
from lyoncam_daemon.observe.stats import CameraStats, Condition, Snapshot, State, Stats
from lyoncam_daemon.observe.status import (
    MAX_CONNECTIONS,
    Sources,
    StatusServer,
    Thumbnails,
    health_verdict,
    make_thumbnail,
)
from lyoncam_daemon.storage import Frame, StoredFrame
from lyoncam_daemon.storage.filesystem import FilesystemStorage
from lyoncam_daemon.storage.spool import SpoolStats
from tests.conftest import FIXTURES, make_config

STATUS_ON = "status:\n  port: 0"
NO_DISK = DiskFigures(free_bytes=10**9, paused=False, paused_frames=0,
                      retention_freed_bytes=0, retention_deleted_frames=0)


def samples(text: str) -> list[Sample]:
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def value(text: str, name: str, **labels: str) -> float | None:
    for s in samples(text):
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[tuple[Daemon, str]]:
    """A daemon with its endpoint on a free loopback port; yields it and the base URL."""
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    while daemon.registry is None:  # set once the endpoint is up and cameras start
        assert not task.done(), task.result()
        await asyncio.sleep(0.02)
    assert daemon.status is not None
    try:
        yield daemon, f"http://127.0.0.1:{daemon.status.port}"
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, timeout=15) == 0


async def until(predicate: object, limit: int = 500) -> None:
    """Wait (bounded) until predicate() holds: counters, not clocks."""
    assert callable(predicate)
    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


# -- /metrics -------------------------------------------------------------------------------


def test_metrics_render_every_counter_histogram_and_drop_a_removed_camera() -> None:
    stats = Stats()
    a = stats.camera("CAM_A")
    stats.camera("CAM_B")
    a.polls, a.fetched_bytes, a.stored_bytes = 5, 1000, 600
    a.outcomes.update({"stored": 3, "near_duplicate": 2})
    a.errors["timeout"] = 1
    stats.set_state("CAM_A", State.OK)
    stats.set_condition("CAM_A", Condition.STALE)
    a.last_stored_at = "2026-11-26T00:15:03.000Z"
    for seconds in (0.03, 0.2, 0.2, 7.0, 120.0):
        a.fetch_s.observe(seconds)
    stats.set_state("CAM_B", State.DOWN)
    registry = build_registry(stats.snapshot, lambda: NO_DISK)
    text = generate_latest(registry).decode()

    assert value(text, "lyoncam_frames_total", camera="CAM_A", outcome="stored") == 3
    assert value(text, "lyoncam_frames_total", camera="CAM_A", outcome="placeholder") == 0
    assert value(text, "lyoncam_poll_errors_total", camera="CAM_A", kind="timeout") == 1
    assert value(text, "lyoncam_polls_total", camera="CAM_A") == 5
    assert value(text, "lyoncam_fetched_bytes_total", camera="CAM_A") == 1000
    assert value(text, "lyoncam_stored_bytes_total", camera="CAM_A") == 600
    assert value(text, "lyoncam_last_stored_timestamp_seconds", camera="CAM_A") == 1795652103
    assert value(text, "lyoncam_last_stored_timestamp_seconds", camera="CAM_B") is None
    assert value(text, "lyoncam_camera_up", camera="CAM_A") == 1
    assert value(text, "lyoncam_camera_up", camera="CAM_B") == 0
    assert value(text, "lyoncam_camera_condition", camera="CAM_A", condition="stale") == 1
    assert value(text, "lyoncam_camera_condition", camera="CAM_A", condition="normal") == 0
    # cumulative buckets: 0.03 <= 0.05, two 0.2 <= 0.25, 7 <= 10, 120 only in +Inf
    bucket = "lyoncam_fetch_seconds_bucket"
    assert value(text, bucket, camera="CAM_A", le="0.025") == 0
    assert value(text, bucket, camera="CAM_A", le="0.05") == 1
    assert value(text, bucket, camera="CAM_A", le="0.25") == 3
    assert value(text, bucket, camera="CAM_A", le="10.0") == 4
    assert value(text, bucket, camera="CAM_A", le="60.0") == 4
    assert value(text, bucket, camera="CAM_A", le="+Inf") == 5
    assert value(text, "lyoncam_fetch_seconds_count", camera="CAM_A") == 5
    assert value(text, "lyoncam_fetch_seconds_sum", camera="CAM_A") == pytest.approx(127.43)
    assert value(text, "lyoncam_schedule_lateness_seconds_count", camera="CAM_B") == 0
    assert value(text, "lyoncam_disk_free_bytes") == 10**9
    assert value(text, "lyoncam_build_info", version=__import__("lyoncam_daemon").__version__) == 1

    stats.remove("CAM_B")
    text = generate_latest(registry).decode()
    assert not [s for s in samples(text) if s.labels.get("camera") == "CAM_B"]
    assert value(text, "lyoncam_polls_total", camera="CAM_A") == 5


def _count(stats: Stats, cam: CameraStats, polls: int = 0, skipped: int = 0,
           **outcomes: int) -> None:
    """Count as a camera task does, through Stats (which keeps the daemon-wide totals)."""
    for _ in range(polls):
        stats.polled(cam)
    for _ in range(skipped):
        stats.skipped_poll(cam)
    for outcome, n in outcomes.items():
        for _ in range(n):
            stats.counted(cam, outcome)


def test_daemon_wide_families_add_every_camera_up_with_or_without_camera_series() -> None:
    stats = Stats()
    a, b = stats.camera("CAM_A"), stats.camera("CAM_B")
    _count(stats, a, polls=5, skipped=1, stored=3, unchanged=1)
    _count(stats, b, polls=7, skipped=2, stored=2, placeholder=4)
    for seconds in (0.2, 1.2, 1.8):
        stats.fetch_s.observe(seconds)
    for seconds in (0.0, 2.2):
        stats.lateness_s.observe(seconds)
    stats.slot_wait_s.observe(0.3)
    for seconds in (0.02, 0.7, 4.0):
        stats.pipeline_wait_s.observe(seconds)
    snap = stats.snapshot()
    per_camera = metrics.render(snap, NO_DISK, per_camera=True).decode()
    daemon_only = metrics.render(snap, NO_DISK, per_camera=False).decode()
    assert {s.labels["camera"] for s in samples(per_camera) if "camera" in s.labels} == {
        "CAM_A", "CAM_B"}
    assert not [s for s in samples(daemon_only) if "camera" in s.labels]
    for text in (per_camera, daemon_only):
        assert value(text, "lyoncam_cameras") == 2
        assert value(text, "lyoncam_daemon_polls_total") == 12
        assert value(text, "lyoncam_daemon_polls_skipped_total") == 3
        assert value(text, "lyoncam_daemon_frames_total", outcome="stored") == 5
        assert value(text, "lyoncam_daemon_frames_total", outcome="placeholder") == 4
        assert value(text, "lyoncam_daemon_frames_total", outcome="unchanged") == 1
        assert value(text, "lyoncam_daemon_frames_total", outcome="near_duplicate") == 0
        # the 1.5 and 2.0 buckets tell 1.2 from 1.8 s apart
        fetch = "lyoncam_daemon_fetch_seconds_bucket"
        assert [value(text, fetch, le=le) for le in ("1.0", "1.5", "2.0", "+Inf")] == [
            1, 2, 3, 3]
        assert value(text, "lyoncam_daemon_fetch_seconds_sum") == pytest.approx(3.2)
        late = "lyoncam_daemon_lateness_seconds_bucket"
        assert [value(text, late, le=le) for le in ("0.01", "2.0", "2.5")] == [1, 1, 2]
        assert value(text, "lyoncam_daemon_lateness_seconds_count") == 2
        assert value(text, "lyoncam_daemon_slot_wait_seconds_count") == 1
        pipe = "lyoncam_daemon_pipeline_wait_seconds_bucket"
        assert [value(text, pipe, le=le) for le in ("0.025", "1.0", "+Inf")] == [1, 2, 3]
        assert value(text, "lyoncam_disk_free_bytes") == 10**9


def test_daemon_wide_counters_keep_a_removed_cameras_counts() -> None:
    """A reload that drops a camera must not make a counter go down: Prometheus would read
    it as a restart and `rate()` would jump."""
    stats = Stats()
    a, b = stats.camera("CAM_A"), stats.camera("CAM_B")
    _count(stats, a, polls=5)
    _count(stats, b, polls=7, skipped=2, stored=6)
    stats.remove("CAM_B")
    text = metrics.render(stats.snapshot(), NO_DISK, per_camera=True).decode()
    assert value(text, "lyoncam_cameras") == 1
    assert value(text, "lyoncam_daemon_polls_total") == 12
    assert value(text, "lyoncam_daemon_polls_skipped_total") == 2
    assert value(text, "lyoncam_daemon_frames_total", outcome="stored") == 6
    assert not [s for s in samples(text) if s.labels.get("camera") == "CAM_B"]


def test_spool_families_appear_only_when_frames_go_through_a_spool() -> None:
    text = metrics.render(Snapshot(1000.0, {}), NO_DISK).decode()
    assert not [s for s in samples(text) if s.name.startswith("lyoncam_spool")]
    spool = SpoolStats(frames=3, bytes=1500, oldest_unix=940.0, uploaded=7, refused=2, lost=1)
    text = metrics.render(Snapshot(1000.0, {}, spool=spool), NO_DISK).decode()
    assert value(text, "lyoncam_spool_frames") == 3
    assert value(text, "lyoncam_spool_bytes") == 1500
    assert value(text, "lyoncam_spool_lag_seconds") == 60
    assert value(text, "lyoncam_spool_uploaded_frames_total") == 7
    assert value(text, "lyoncam_spool_refused_frames_total") == 2
    assert value(text, "lyoncam_spool_lost_frames_total") == 1
    empty = metrics.render(Snapshot(1000.0, {}, spool=SpoolStats()), NO_DISK).decode()
    assert value(empty, "lyoncam_spool_lag_seconds") == 0


async def test_a_running_daemon_serves_metrics_and_a_removed_camera_vanishes(
    tmp_path: Path,
) -> None:
    ids = camera_ids(2)
    async with CriterSimulator(ids, period=0.3) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=0.2,
                             status=STATUS_ON)
        async with running(config) as (daemon, base), aiohttp.ClientSession() as http:
            await until(lambda: all(daemon.stats.cameras[i].outcomes["stored"] >= 2
                                    for i in ids))
            async with http.get(f"{base}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                text = await resp.text()
            for cam in ids:
                assert (value(text, "lyoncam_frames_total", camera=cam, outcome="stored")
                        or 0) >= 2
                assert (value(text, "lyoncam_fetch_seconds_count", camera=cam) or 0) >= 2
                assert (value(text, "lyoncam_last_stored_timestamp_seconds", camera=cam)
                        or 0) > 0
            assert (value(text, "lyoncam_disk_free_bytes") or 0) > 0
            assert value(text, "lyoncam_disk_min_free_bytes") == \
                config.retention.min_free_bytes  # the guard, beside the free space
            assert value(text, "process_resident_memory_bytes") is not None
            # the daemon-wide histograms hear every camera's polls, in the same snapshot
            for wide, each in (("lyoncam_daemon_fetch_seconds_count",
                                "lyoncam_fetch_seconds_count"),
                               ("lyoncam_daemon_lateness_seconds_count",
                                "lyoncam_schedule_lateness_seconds_count")):
                assert value(text, wide) == sum(value(text, each, camera=c) or 0 for c in ids)

            assert daemon.registry is not None
            await daemon.registry.remove(ids[1], grace=1)
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            assert not [s for s in samples(text) if s.labels.get("camera") == ids[1]]
            assert value(text, "lyoncam_polls_total", camera=ids[0]) is not None


async def test_camera_metrics_off_serves_only_the_daemon_wide_series(tmp_path: Path) -> None:
    ids = camera_ids(2)
    async with CriterSimulator(ids, period=0.3) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=0.2,
                             status=STATUS_ON + "\n  camera_metrics: false")
        async with running(config) as (daemon, base), aiohttp.ClientSession() as http:
            await until(lambda: all(daemon.stats.cameras[i].outcomes["stored"] >= 2
                                    for i in ids))
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
    assert not [s for s in samples(text) if "camera" in s.labels]
    assert value(text, "lyoncam_cameras") == 2
    assert (value(text, "lyoncam_daemon_frames_total", outcome="stored") or 0) >= 4
    assert (value(text, "lyoncam_daemon_fetch_seconds_count") or 0) >= 4
    assert (value(text, "lyoncam_daemon_polls_total") or 0) >= 4


async def test_metrics_are_rendered_off_the_loop_and_concurrent_scrapes_share_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[str] = []
    release = threading.Event()

    def render(snapshot: object, disk: DiskFigures, per_camera: bool = True,
               holds: object = None) -> bytes:
        threads.append(threading.current_thread().name)
        release.wait(10)  # hold the render until every scrape has arrived
        return b"lyoncam_test 1\n"

    monkeypatch.setattr(metrics, "render", render)
    config = make_config(tmp_path, {"CAM_A": "http://127.0.0.1:9/a.jpg"}, status=STATUS_ON)
    async with running(config) as (daemon, base), aiohttp.ClientSession() as http:
        assert daemon.status is not None
        status = daemon.status

        async def scrape() -> str:
            async with http.get(f"{base}/metrics") as resp:
                return await resp.text()

        scrapes = [asyncio.create_task(scrape()) for _ in range(10)]
        await until(lambda: status.in_flight == 10)  # all waiting on the one render
        release.set()
        assert await asyncio.gather(*scrapes) == ["lyoncam_test 1\n"] * 10
        assert await scrape() == "lyoncam_test 1\n"  # a later scrape renders afresh
    assert len(threads) == 2
    assert all(name.startswith("lyoncam-status") for name in threads)


# -- /healthz -------------------------------------------------------------------------------


def _config_with(tmp_path: Path, interval: float = 1.0) -> Config:
    return make_config(tmp_path, {"CAM_A": "http://127.0.0.1:9/a.jpg",
                                  "CAM_B": "http://127.0.0.1:9/b.jpg"}, interval=interval)


def test_health_is_ok_while_one_camera_stores_and_fails_when_none_does(tmp_path: Path) -> None:
    stats = Stats()
    stats.camera("CAM_B")
    at = 1795651200.0  # 2026-11-26T00:00:00Z
    stats.stored("CAM_A", "2026-11-26T00:00:00.000Z", at, horizon_s=10.0)

    def verdict(now: float, up_s: float = 100.0) -> tuple[bool, list[str]]:
        return health_verdict(writable=True, disk=NO_DISK, storage_error=None,
                              cameras=len(stats.cameras), fresh=stats.fresh.count(now),
                              up_s=up_s, grace_s=10.0)

    assert verdict(at + 5) == (True, [])
    assert verdict(at + 11) == (
        False, ["no camera stored a frame within its last stale_after intervals"])
    # just started: nothing stored yet is no failure within the horizon
    assert verdict(at + 11, up_s=5.0) == (True, [])


def test_health_fails_on_a_paused_store_a_write_error_or_a_read_only_data_dir() -> None:
    paused = DiskFigures(10, True, 3, 0, 0)
    ok, reasons = health_verdict(writable=True, disk=paused, storage_error=None, cameras=1,
                                 fresh=1, up_s=100, grace_s=10)
    assert not ok and reasons == ["storing paused: free space below retention.min_free_bytes"]
    error = "cannot write frame of CAM_A under /x: Read-only file system"
    ok, reasons = health_verdict(writable=False, disk=NO_DISK, storage_error=error, cameras=1,
                                 fresh=1, up_s=100, grace_s=10)
    assert not ok
    assert reasons == ["data_dir is not writable", f"writes failing: {error}"]


def _many_cameras(n: int) -> Stats:
    """`n` cameras as a capturing daemon would count them: most ok, a few with problems."""
    stats = Stats()
    at = time.time()
    for i in range(n):
        cid = f"CAM{i:05d}"
        cam = stats.camera(cid)
        stats.polled(cam)
        stats.counted(cam, "stored")
        stats.set_state(cid, State.DOWN if i % 1000 == 7 else State.OK)
        stats.stored(cid, "2026-11-26T00:00:00.000Z", at, horizon_s=600)
    return stats


async def test_healthz_and_the_page_never_copy_every_camera(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At 20,000 cameras a copy of every camera's stats per request held the event loop
    200-500 ms. /healthz, / and /metrics (daemon-wide series) read running figures: not one
    camera's stats is copied, and the page renders one page of cards, problems first."""
    n = 20_000
    stats = _many_cameras(n)
    copies: list[int] = []
    real_copy = CameraStats.copy

    def counted_copy(self: CameraStats) -> CameraStats:
        copies.append(1)
        return real_copy(self)

    monkeypatch.setattr(CameraStats, "copy", counted_copy)
    config = make_config(tmp_path, {"CAM00000": "http://127.0.0.1:9/a.jpg"},
                         status=STATUS_ON + "\n  camera_metrics: false")
    sources = Sources(config=lambda: config, stats=stats, recent=RecentFrames(),
                      disk=lambda: NO_DISK, started_unix=time.time(), frame_file=None)
    server = StatusServer(sources, "127.0.0.1", 0)
    port = await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            async with http.get(f"{base}/healthz") as resp:
                health = await resp.json()
            async with http.get(f"{base}/") as resp:
                html = await resp.text()
            async with http.get(f"{base}/?show=problems&page=1") as resp:
                problems = await resp.text()
            async with http.get(f"{base}/?page=3") as resp:
                third = await resp.text()
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
    finally:
        await server.close()
    # `every` is one copy: the daemon-wide counters, not a camera's
    assert len(copies) <= 1
    assert health["status"] == "ok"
    assert (health["cameras"], health["cameras_ok"], health["cameras_recent"]) == (n, n - 20, n)
    assert html.count('<section class="card') == PAGE_SIZE
    down = [f"CAM{i:05d}" for i in range(n) if i % 1000 == 7]
    positions = [html.index(f'data-camera="{c}"') for c in down]
    assert positions == sorted(positions) and positions[-1] < html.index('data-camera="CAM00000"')
    assert problems.count('<section class="card') == 20
    assert "page 1 of 1" in problems and f"page 3 of {-(-n // PAGE_SIZE)}" in third
    # page 3: after the 20 problem cameras and 100 healthy ones, in id order
    assert 'data-camera="CAM00102"' in third or 'data-camera="CAM00101"' in third
    assert value(text, "lyoncam_cameras") == n
    assert value(text, "lyoncam_daemon_polls_total") == n
    for endpoint in ("/", "/healthz"):
        assert (value(text, "lyoncam_status_loop_hold_seconds_count", endpoint=endpoint)
                or 0) >= 1


def test_the_thumbnail_cache_is_bounded_in_bytes() -> None:
    from concurrent.futures import ThreadPoolExecutor

    async def fill() -> Thumbnails:
        with ThreadPoolExecutor(1) as pool:
            thumbs = Thumbnails(pool, lambda path: b"x" * 1000, max_bytes=10_000)
            for i in range(50):
                await thumbs.get(f"CAM{i}", "k", Path("a.jpg"))
            return thumbs

    thumbs = asyncio.run(fill())
    assert thumbs.built == 50
    assert 9_000 <= thumbs.cached_bytes <= 10_000


async def test_healthz_answers_200_while_capturing_and_503_with_the_reason_when_not(
    tmp_path: Path,
) -> None:
    ids = camera_ids(2)
    async with CriterSimulator(ids, period=0.3) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=0.1,
                             per_camera={i: "stale_after: 4" for i in ids}, status=STATUS_ON)
        async with running(config) as (daemon, base), aiohttp.ClientSession() as http:
            await until(lambda: daemon.stats.cameras[ids[0]].outcomes["stored"] >= 1)
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
                body = await resp.json()
            assert body["status"] == "ok" and body["cameras"] == 2
            assert body["cameras_recent"] >= 1 and body["storage_paused"] is False
            for cam in ids:
                sim.set_mode(cam, "error")
            # horizon: 4 intervals of 0.1 s; wait until both cameras have failed past it
            await until(lambda: all(daemon.stats.cameras[i].errors["http"] >= 8 for i in ids))
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 503
                body = await resp.json()
            assert body["status"] == "fail"
            assert body["reasons"] == [
                "no camera stored a frame within its last stale_after intervals"]


# -- safety ---------------------------------------------------------------------------------


async def test_no_endpoint_shows_a_camera_url_or_its_credentials(tmp_path: Path) -> None:
    ids = camera_ids(1)
    async with CriterSimulator(ids, period=0.3) as sim:
        url = sim.url(ids[0]).replace("http://", "http://user:hunter2@") + "?token=hunter2"
        config = make_config(tmp_path, {ids[0]: url}, interval=0.2, status=STATUS_ON)
        async with running(config) as (daemon, base), aiohttp.ClientSession() as http:
            await until(lambda: daemon.stats.cameras[ids[0]].outcomes["stored"] >= 1)
            for path in ("/", "/metrics", "/healthz"):
                async with http.get(base + path) as resp:
                    text = await resp.text()
                assert resp.status == 200, path
                assert "hunter2" not in text and sim.url(ids[0]) not in text, path


async def test_only_get_is_served_and_unknown_cameras_are_404(tmp_path: Path) -> None:
    ids = camera_ids(1)
    async with CriterSimulator(ids, period=0.3) as sim:
        config = make_config(tmp_path, {ids[0]: sim.url(ids[0])}, status=STATUS_ON)
        async with running(config) as (_, base), aiohttp.ClientSession() as http:
            async with http.post(f"{base}/healthz", data=b"x" * 10) as resp:
                assert resp.status == 405
            for path in ("/cameras/NOPE/latest.jpg", "/cameras/..%2F..%2Fetc/latest.jpg",
                         "/cameras/.lyoncam/latest.jpg"):
                async with http.get(base + path) as resp:
                    assert resp.status == 404, path


async def half_sent_requests(port: int, n: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(n):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        writers.append(writer)
    return writers


async def test_connections_over_the_cap_are_closed_as_they_arrive(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"CAM_A": "http://127.0.0.1:9/a.jpg"}, status=STATUS_ON)
    async with running(config) as (daemon, _):
        assert daemon.status is not None
        status = daemon.status
        idle = await half_sent_requests(status.port, MAX_CONNECTIONS + 30)
        await until(lambda: status.connections == MAX_CONNECTIONS)
        for writer in idle:
            writer.close()
        await until(lambda: status.connections == 0)


async def test_connections_held_open_never_shut_out_healthz(tmp_path: Path) -> None:
    """64 idle and half-sent connections (all the endpoint keeps) must not make Docker's
    health check fail: a newcomer closes the oldest connection that has no request."""
    config = make_config(tmp_path, {"CAM_A": "http://127.0.0.1:9/a.jpg"}, status=STATUS_ON)
    async with running(config) as (daemon, base):
        assert daemon.status is not None
        status = daemon.status
        held = await half_sent_requests(status.port, MAX_CONNECTIONS // 2)
        for _ in range(MAX_CONNECTIONS - MAX_CONNECTIONS // 2):  # idle: nothing sent at all
            held.append((await asyncio.open_connection("127.0.0.1", status.port))[1])
        await until(lambda: status.connections == MAX_CONNECTIONS)
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.get(f"{base}/healthz") as resp:
                    assert resp.status in (200, 503)
                    assert (await resp.json())["version"]
        for writer in held:
            writer.close()


async def test_idle_connections_and_a_flood_of_requests_never_stop_capture(
    tmp_path: Path,
) -> None:
    ids = camera_ids(2)
    async with CriterSimulator(ids, period=0.25) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=0.15,
                             status=STATUS_ON)
        async with running(config) as (daemon, base):
            await until(lambda: all(daemon.stats.cameras[i].outcomes["stored"] >= 1
                                    for i in ids))
            assert daemon.status is not None
            idle = await half_sent_requests(daemon.status.port, 40)
            before = {i: daemon.stats.cameras[i].outcomes["stored"] for i in ids}
            answered: dict[int, int] = {}

            async def flood(http: aiohttp.ClientSession) -> None:
                for n in range(40):
                    path = f"/cameras/{ids[n // 2 % 2]}/latest.jpg" if n % 2 else "/"
                    async with http.get(base + path) as resp:
                        await resp.read()
                        answered[resp.status] = answered.get(resp.status, 0) + 1

            async with aiohttp.ClientSession() as http:
                flooding = asyncio.gather(*(flood(http) for _ in range(8)))
                # capture goes on meanwhile: three more frames per camera
                await until(lambda: all(daemon.stats.cameras[i].outcomes["stored"]
                                        >= before[i] + 3 for i in ids))
                await flooding
            for writer in idle:
                writer.close()
            assert answered.get(200, 0) > 0
            assert set(answered) <= {200, 503}


# -- thumbnails -----------------------------------------------------------------------------


def test_a_thumbnail_is_a_small_jpeg_of_the_frame(tmp_path: Path) -> None:
    data = make_thumbnail(FIXTURES / "CWL9018_night.jpg")
    assert data is not None and data[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (384, 216)
    assert len(data) < 40_000
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    assert make_thumbnail(tmp_path / "bad.jpg") is None
    # a frame kept truncated shows what it has
    whole = (FIXTURES / "CWL9018_night.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    cut = make_thumbnail(tmp_path / "cut.jpg")
    assert cut is not None
    with Image.open(io.BytesIO(cut)) as img:
        assert img.size == (384, 216)


async def test_thumbnails_are_made_off_the_loop_once_per_latest_frame(tmp_path: Path) -> None:
    threads: list[str] = []

    def make(path: Path) -> bytes:
        threads.append(threading.current_thread().name)
        return path.name.encode()

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="thumbs") as pool:
        thumbs = Thumbnails(pool, make)
        got = await asyncio.gather(*(thumbs.get("CAM", "k1", Path("a.jpg")) for _ in range(10)))
        assert got == [b"a.jpg"] * 10
        assert await thumbs.get("CAM", "k2", Path("b.jpg")) == b"b.jpg"
    assert len(threads) == 2
    assert all(name.startswith("thumbs") for name in threads)


# -- start-up -------------------------------------------------------------------------------


async def test_a_port_in_use_is_a_start_up_error_naming_it(tmp_path: Path) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    try:
        config = make_config(tmp_path, {"CAM_A": "http://127.0.0.1:9/a.jpg"},
                             status=f"status:\n  port: {port}")
        with pytest.raises(StartupError, match=rf"status endpoint 127.0.0.1:{port}: .*in use"):
            await Daemon(config).run()
    finally:
        blocker.close()
        await blocker.wait_closed()


async def test_shards_of_one_config_on_one_machine_each_get_their_own_port(
    tmp_path: Path,
) -> None:
    """Shard I/N listens on status.port + I - 1: three shards started from one config (each
    with its own data_dir, as the template unit gives them) all start, on 3 ports in a row."""
    while True:  # three free ports in a row
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        base = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        try:
            held = [await asyncio.start_server(lambda r, w: None, "127.0.0.1", base + i)
                    for i in (1, 2)]
        except OSError:
            continue
        for server in held:
            server.close()
            await server.wait_closed()
        break
    config = make_config(tmp_path, {"CAM_A": "http://127.0.0.1:9/a.jpg"},
                         status=f"status:\n  port: {base}")
    daemons = []
    try:
        for i in (1, 2, 3):
            shard = config.model_copy(update={"shard": parse_shard(f"{i}/3"),
                                              "data_dir": tmp_path / f"shard-{i}"})
            daemon = Daemon(shard)
            task = asyncio.create_task(daemon.run())
            daemons.append((daemon, task))
            while daemon.registry is None:  # its endpoint is up
                assert not task.done(), task.result()
                await asyncio.sleep(0.02)
        assert [d.status.port for d, _ in daemons if d.status] == [base, base + 1, base + 2]
    finally:
        for daemon, task in daemons:
            daemon.request_stop()
            assert await asyncio.wait_for(task, timeout=15) == 0


def test_status_port_0_means_any_free_port_and_no_status_turns_it_off(tmp_path: Path) -> None:
    from lyoncam_daemon.capture.commands import load_checked
    from lyoncam_daemon.cli import build_parser
    from lyoncam_daemon.config.shard import resolve_shard

    cfg = tmp_path / "cameras.yaml"
    cfg.write_text("status:\n  port: 9300\ncameras:\n" + "".join(
        f"  - id: C{i}\n    url: http://127.0.0.1:9/{i}\n" for i in range(40)))

    def loaded(*flags: str) -> Config:
        args = build_parser().parse_args(["run", "--config", str(cfg), *flags])
        args.shard = resolve_shard(args.shard, {})  # as `run` does at start
        return load_checked(cfg, args)

    assert (loaded().status.enabled, loaded().status_port) == (True, 9300)
    free = loaded("--status-port", "0")
    assert (free.status.enabled, free.status_port) == (True, 0)  # as `status.port: 0`
    assert loaded("--no-status").status.enabled is False
    assert loaded("--shard", "3/4").status_port == 9302
    assert loaded("--shard", "3/4", "--status-port", "0").status_port == 0
    # where each shard has an address of its own (Kubernetes pods): the same port for all
    cfg.write_text(cfg.read_text().replace("port: 9300", "port: 9300\n  shard_offset: false"))
    assert loaded("--shard", "3/4").status_port == 9300


def test_status_port_must_be_a_port_number(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--status-port", "http"])
    assert exit_.value.code == 2
    assert "'http' is not a port number (0-65535)" in capsys.readouterr().err


# -- the status page ------------------------------------------------------------------------


def _card(cid: str, state: State, condition: Condition = Condition.NORMAL) -> Card:
    return Card(camera_id=cid, name=f"<script>{cid}</script>", state=state, condition=condition,
                last_stored_at=None, last_stored_ago="", frames_24h=1, errors=0,
                error_detail="", thumb_token=None)


def test_problem_cameras_come_first_and_every_text_is_escaped() -> None:
    cards = [_card("A_OK", State.OK), _card("B_DOWN", State.DOWN),
             _card("C_STALE", State.OK, Condition.STALE), _card("D_FAILING", State.FAILING),
             _card("E_NEW", State.STARTING)]
    assert [c.camera_id for c in ordered(cards)] == ["B_DOWN", "D_FAILING", "C_STALE", "E_NEW",
                                                     "A_OK"]
    html = render(Header("0.1.0", 5, 1, "1 GB", ["<i>reason</i>"]), cards)
    assert "<script>A_OK" not in html and "&lt;script&gt;A_OK&lt;/script&gt;" in html
    assert "&lt;i&gt;reason&lt;/i&gt;" in html
    positions = [html.index(f'data-camera="{c}"') for c in ("B_DOWN", "D_FAILING", "A_OK")]
    assert positions == sorted(positions)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--window-size=1280,900",
                  "--virtual-time-budget=8000"]


async def chromium(tmp_path: Path, *args: str) -> bytes:
    exe = shutil.which("chromium")
    assert exe, "chromium is not installed (scripts/test.sh installs Debian's package as root)"
    proc = await asyncio.create_subprocess_exec(
        exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out


async def test_the_status_page_renders_every_card_and_thumbnail_in_chromium(
    tmp_path: Path,
) -> None:
    ids = camera_ids(3)
    async with CriterSimulator(ids, period=0.3) as sim:
        config = make_config(tmp_path / "data", {i: sim.url(i) for i in ids}, interval=0.2,
                             status=STATUS_ON)
        async with running(config) as (daemon, base):
            await until(lambda: all(daemon.stats.cameras[i].outcomes["stored"] >= 1
                                    for i in ids))
            dom = (await chromium(tmp_path, "--dump-dom", base + "/")).decode()
            shot = tmp_path / "status.png"
            await chromium(tmp_path, f"--screenshot={shot}", base + "/")
            assert daemon.status is not None and daemon.status.thumbs.built >= 3
    assert 'data-thumbs="loaded"' in dom  # every <img> decoded (statuspage's marker)
    assert dom.count('<section class="card') == 3
    assert dom.count('<img class="thumb"') == 3
    with Image.open(shot) as img:
        assert img.size == (1280, 900)
        # the three cards of the first row: 12 px margin, 305 px wide, 12 px gap; the
        # thumbnail below a 6 px border. A photo varies; an empty box or a blank page not.
        for i in range(3):
            x0 = 12 + i * 317
            region = img.convert("L").crop((x0 + 10, 70, x0 + 295, 220))
            assert ImageStat.Stat(region).stddev[0] > 15, f"card {i} has no thumbnail"
        text_area = img.convert("L").crop((12, 240, 317, 380))
        assert ImageStat.Stat(text_area).stddev[0] > 5, "card text did not render"


# -- frames of the last 24 h ----------------------------------------------------------------


async def test_frames_of_the_last_24_h_are_seeded_from_disk_then_counted_by_the_hook(
    tmp_path: Path,
) -> None:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    store = FilesystemStorage(tmp_path)
    keys = {}
    for hours in (1, 5, 23, 25, 72):  # 23 and 25 h ago are yesterday's folder
        when = now - timedelta(hours=hours)
        keys[hours] = store.write(Frame("CAM_A", when, b"x", {})).key
    (tmp_path / keys[5]).with_suffix(".json").unlink()  # incomplete: not a stored frame
    clock = [now.timestamp()]
    recent = RecentFrames(clock=lambda: clock[0])
    recent.seed(store, ["CAM_A", "CAM_B"])
    assert recent.count("CAM_A") == 2  # 1 h and 23 h ago
    assert recent.count("CAM_B") == 0 and recent.latest_key("CAM_B") is None
    assert recent.latest_key("CAM_A") == keys[1]
    await recent.hook(StoredFrame("CAM_A", "CAM_A/new.jpg", now, 1, {}))
    assert recent.count("CAM_A") == 3 and recent.latest_key("CAM_A") == "CAM_A/new.jpg"
    clock[0] += 2 * 3600  # the frame of 23 h ago leaves the window
    assert recent.count("CAM_A") == 2


def test_frames_of_the_last_24_h_are_counted_in_fixed_memory() -> None:
    """A frame a minute for five days: the count is the last day's (to one 10-minute bucket),
    and the memory per camera does not grow with the frames (it used to keep each time)."""
    from lyoncam_daemon.observe.recent import BUCKET_S

    start = datetime(2026, 11, 21, tzinfo=UTC).timestamp()
    clock = [start]
    recent = RecentFrames(clock=lambda: clock[0])
    for minute in range(5 * 24 * 60):
        clock[0] = start + 60 * minute
        recent.add("CAM_A", clock[0], f"k{minute}")
    buckets = recent._counts["CAM_A"]
    assert len(buckets.counts) == 24 * 3600 / BUCKET_S + 1
    assert 24 * 60 <= recent.count("CAM_A") <= 24 * 60 + BUCKET_S / 60
    recent.add("CAM_A", start, "a frame from five days ago")  # out of the window: not counted
    assert recent.count("CAM_A") <= 24 * 60 + BUCKET_S / 60
    clock[0] += 2 * 24 * 3600  # two quiet days
    assert recent.count("CAM_A") == 0


def test_the_24_h_ring_counts_late_arrivals_and_forgets_a_slot_a_window_later() -> None:
    from lyoncam_daemon.observe.recent import BUCKET_S

    start = datetime(2026, 11, 21, tzinfo=UTC).timestamp()
    clock = [start + BUCKET_S]
    recent = RecentFrames(clock=lambda: clock[0])
    recent.add("CAM_A", start + BUCKET_S, "newer")
    recent.add("CAM_A", start, "older, added after")  # seeding adds in any order
    recent.add("CAM_A", start, "older again")
    assert recent.count("CAM_A") == 3
    slots = len(recent._counts["CAM_A"].counts)
    clock[0] = start + slots * BUCKET_S  # the bucket sharing `start`'s slot, a window later
    recent.add("CAM_A", clock[0], "a window later")
    assert recent.count("CAM_A") == 2  # `start`'s two are gone from the slot, not added on
    recent.add("CAM_A", start, "older than the window")
    assert recent.count("CAM_A") == 2
