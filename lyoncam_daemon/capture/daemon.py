"""Wiring: one event loop, one HTTP session, the camera registry, signals and shutdown.

The daemon owns no capture logic; it builds the shared pieces, starts a `CameraTask` per
enabled camera through the registry, writes a summary and a health record now and then,
and on SIGTERM/SIGINT stops scheduling, gives in-flight work `shutdown_grace` seconds to
finish (as arq's worker does), then cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from lyoncam_daemon import __version__
from lyoncam_daemon.capture import hangup
from lyoncam_daemon.capture.camera import Runtime, pipeline_size
from lyoncam_daemon.capture.fetch import Slots
from lyoncam_daemon.capture.notify import Notifier, watchdog_interval
from lyoncam_daemon.capture.registry import CameraRegistry
from lyoncam_daemon.capture.reload import ReloadPlan, plan_reload
from lyoncam_daemon.capture.schedule import phase
from lyoncam_daemon.config import Config, ConfigError
from lyoncam_daemon.enrich.stage import Enricher
from lyoncam_daemon.frames.jpeg import KNOWN_PLACEHOLDER_SHA256
from lyoncam_daemon.frames.judge import Judge
from lyoncam_daemon.observe.lag import watch_loop
from lyoncam_daemon.observe.logs import configure_logging
from lyoncam_daemon.observe.metrics import DiskFigures
from lyoncam_daemon.observe.recent import RecentFrames
from lyoncam_daemon.observe.stats import Snapshot, Stats, Totals
from lyoncam_daemon.observe.status import Sources, StatusServer
from lyoncam_daemon.storage import DeleteHook, Storage, StoreDenied, StoreHook, iso_utc
from lyoncam_daemon.storage.filesystem import FilesystemStorage
from lyoncam_daemon.storage.retention import FreeSpaceGuard, RetentionPass
from lyoncam_daemon.storage.spool import SpoolStats
from lyoncam_daemon.storage.state import StateDir, StateError, encode_camera
from lyoncam_daemon.storage.variety import describe

#: Cameras set up between two turns of the event loop at start (a few milliseconds' work).
START_STEP = 250


class StartupError(Exception):
    """The daemon cannot start; the message is one line naming the culprit."""


class SettingsError(StartupError):
    """A setting that validates but cannot be used (a mask image that does not load)."""


def build_judge(config: Config, executor: Executor) -> Judge:
    """The dedup stage, with every placeholder image and camera mask loaded now.

    `check` calls it too, so a missing mask is found before a `run`, not at 3 a.m.
    """
    try:
        return Judge(config.dedup, KNOWN_PLACEHOLDER_SHA256 | set(config.placeholder_sha256),
                     executor, cameras=config.enabled_cameras)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"dedup settings: {exc}") from None


def build_storage(config: Config, state: StateDir, stats: Stats) -> Storage:
    """The store `storage.kind` names; an object store gets a spool under the state folder."""
    settings = config.storage
    if settings.kind == "filesystem":
        return FilesystemStorage(config.data_dir)
    from lyoncam_daemon.storage.s3 import CredentialsError, S3Storage, load_credentials
    from lyoncam_daemon.storage.spool import SpoolingStorage

    try:
        credentials = load_credentials(settings)
    except CredentialsError as exc:
        raise StartupError(f"storage: {exc}") from None
    stats.spool = SpoolStats()
    return SpoolingStorage(S3Storage(settings, credentials), state.path / "spool",
                           settings.spool_max_bytes, stats.spool)


class Daemon:
    """The capture daemon. `await run()` returns when stopped; `request_stop()` stops it.

    `enrichers` add sidecar fields to each frame before it is stored and `hooks` are told
    of each stored frame (enrich.py, storage/__init__.py): the seams later features use;
    `on_delete` is told of each frame the start-up repair deletes (the index; retention
    tells the index itself, through its cells).
    `reload_config` re-reads the config file on SIGHUP (raising ConfigError, as `check`);
    `notifier` tells systemd when the daemon is ready, reloading or stopping.
    """

    def __init__(self, config: Config, stats: Stats | None = None, owns_process: bool = False,
                 *, enrichers: Sequence[Enricher] = (), hooks: Sequence[StoreHook] = (),
                 storage: Storage | None = None,
                 reload_config: Callable[[], Config] | None = None,
                 notifier: Notifier | None = None,
                 on_delete: DeleteHook | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        #: Wall-clock Unix seconds for the cameras (captured_at, the heartbeat); tests fake it.
        self.clock = clock
        #: True when this daemon is the whole process (`run`): signals arriving after the
        #: stop are then ignored instead of killing the exit code with 130/143.
        self.owns_process = owns_process
        self.stats = stats if stats is not None else Stats()
        self.enrichers = enrichers
        self.hooks = hooks
        self.on_delete = on_delete
        self.state = StateDir(config.data_dir)
        self._storage = storage
        self.stop = asyncio.Event()
        self.log = structlog.get_logger("lyoncam.daemon")
        self.registry: CameraRegistry | None = None
        self._signals = 0
        self._started = time.time()
        self.reload_config = reload_config
        self.notifier = notifier if notifier is not None else Notifier(None)
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[ReloadPlan | None]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._health_write: asyncio.Future[dict[str, Any]] | None = None
        self._init_monitoring()

    def request_stop(self) -> None:
        """First call: stop scheduling and drain. A second (a second Ctrl-C): cancel now."""
        self._signals += 1
        self.stop.set()
        if self._signals > 1 and self.registry is not None:
            self.registry.cancel_all()

    async def run(self) -> int:
        cfg = self.config
        try:
            self.state.acquire()
        except StateError as exc:
            raise StartupError(str(exc)) from None
        try:
            removed = self.state.remove_leftovers()
            if removed:
                self.log.info("removed temp files of an interrupted run",
                              folder=str(self.state.path), files=removed)
            storage = self._guarded(self._storage or build_storage(cfg, self.state, self.stats))
            with ThreadPoolExecutor(cfg.dedup.workers, thread_name_prefix="lyoncam-decode") as pool:
                judge = build_judge(cfg, pool)
                try:
                    await storage.open()
                except StoreDenied as exc:  # wrong keys: say so now, not after weeks of spool
                    raise StartupError(f"storage: {exc}") from None
                await self._start_monitoring()
                try:
                    return await self._run_with(judge, storage)
                finally:
                    await self._stop_monitoring()
                    await storage.close()
        finally:
            self.state.release()

    async def _run_with(self, judge: Judge, storage: Storage) -> int:
        cfg = self.config
        # No connector limits: `Slots` decides how many requests run, before they start, so
        # queueing never eats into a camera's own deadline (fetch.py).
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        # Each fetch has its camera's own deadline (fetch.py: asyncio.timeout around the
        # whole request), so the session sets none of its own: a reload that raises a
        # camera's timeout then takes effect, instead of being cut at the start-up maximum.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.http.connect_timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         headers={"User-Agent": cfg.http.user_agent}) as session:
            rt = Runtime(config=cfg, session=session,
                         slots=Slots(cfg.http.max_concurrent, cfg.http.max_per_host),
                         judge=judge, storage=storage, stats=self.stats,
                         pipeline=asyncio.Semaphore(pipeline_size(cfg.dedup.workers)),
                         enrichers=self.enrichers, hooks=self.hooks, clock=self.clock)
            registry = self.registry = CameraRegistry(rt)
            # Before the cameras are added: starting thousands of them holds the loop too.
            lag = asyncio.create_task(watch_loop(self.stats.loop_lagged), name="loop-lag")
            self._install_signal_handlers()  # before any camera: a SIGTERM then still exits 0
            cameras = cfg.enabled_cameras
            # A reload waits until every camera runs: it may restart any of them.
            async with self._reload_lock:
                anchor = time.monotonic()
                for i, cam in enumerate(cameras):
                    registry.add(cam, phase(i, len(cameras), cam.interval), anchor=anchor)
                    if i % START_STEP == START_STEP - 1:
                        # The first cameras are due at once (phase 0): they start while the
                        # rest are set up. Setting up 10,000 in one go held the loop 0.45 s.
                        await asyncio.sleep(0)
            if self.owns_process:
                settle_gc()
            self.log.info("started", version=__version__, cameras=len(registry),
                          shard=str(cfg.shard) if cfg.shard is not None else None,
                          data_dir=str(cfg.data_dir), pid=os.getpid(), status=self.status_url)
            reporter = asyncio.create_task(self._report_loop(), name="reporter")
            self._supervised_start()
            if self.owns_process and hangup.take():
                # Held since `run` began (hangup.py): applied now that every camera runs.
                self.log.info("reloading: SIGHUP received during start-up")
                self.request_reload()
            await self.stop.wait()
            await self._supervised_stop()
            self.log.info("stopping", grace_s=self.config.shutdown_grace)
            cancelled = await registry.stop_all(self.config.shutdown_grace)
            reporter.cancel()
            lag.cancel()
            if self._watchdog is not None:
                self._watchdog.cancel()
            await asyncio.gather(reporter, lag, return_exceptions=True)
            self._remove_signal_handlers()
        totals = await self._write_health(stopping=True)
        self.log.info("stopped", cancelled=cancelled, **totals)
        return 0

    # -- monitoring: status endpoint, retention, free-space guard (status.py, retention.py) --

    def _init_monitoring(self) -> None:
        """Count recent frames by hook; the store is guarded once built (`_guarded`)."""
        self.recent = RecentFrames()
        self.hooks = (*self.hooks, self.recent.hook)
        self.guard: FreeSpaceGuard | None = None
        self.retention: RetentionPass | None = None
        self.status: StatusServer | None = None
        #: Logged in the `started` line; None when the endpoint is off.
        self.status_url: str | None = None
        self._fs: FilesystemStorage | None = None
        self._retention_task: asyncio.Task[None] | None = None

    def _guarded(self, storage: Storage) -> Storage:
        """A filesystem store gets the free-space guard, retention and thumbnails."""
        if not isinstance(storage, FilesystemStorage):
            return storage
        self._fs = storage
        if storage.forget is None:
            storage.forget = self.on_delete
        self.guard = FreeSpaceGuard(storage, self.config.data_dir,
                                    self.config.retention.min_free_bytes)
        from lyoncam_daemon.curation.dataset import THIN_BELOW
        from lyoncam_daemon.curation.index import IndexCells

        # The index knows each frame's cell (for retention.keep_variety) and loses the rows
        # of what retention deletes.
        self.retention = RetentionPass(self.config.data_dir, self.config.retention,
                                       cells=IndexCells(self.config.data_dir),
                                       floor=THIN_BELOW)
        return self.guard

    def disk_figures(self) -> DiskFigures:
        total = self.retention.total if self.retention is not None else None
        return DiskFigures(
            free_bytes=self.guard.free_bytes() if self.guard is not None else None,
            paused=self.guard.paused if self.guard is not None else False,
            paused_frames=self.guard.paused_frames if self.guard is not None else 0,
            retention_freed_bytes=total.freed_bytes if total is not None else 0,
            retention_deleted_frames=total.frames if total is not None else 0,
            min_free_bytes=self.guard.min_free_bytes if self.guard is not None else None,
        )

    async def _start_monitoring(self) -> None:
        """Before the first camera: seed the 24 h counts, bind the endpoint (a port in use
        is a start-up error naming it), start retention passes."""
        cfg = self.config
        if self._fs is not None:
            await asyncio.to_thread(self.recent.seed, self._fs,
                                    [c.id for c in cfg.enabled_cameras])
        if cfg.status.enabled:
            self.status = StatusServer(
                Sources(config=lambda: self.config, stats=self.stats, recent=self.recent,
                        disk=self.disk_figures, started_unix=self._started,
                        frame_file=self._fs.path_of if self._fs is not None else None),
                cfg.status.host, cfg.status_port)
            try:
                if cfg.status_port > 65535:
                    raise OSError(f"port {cfg.status_port} is past 65535 (status.port + "
                                  f"shard {cfg.shard} - 1)")
                port = await self.status.start()
            except OSError as exc:
                await self.status.close()
                self.status = None
                raise StartupError(
                    f"status endpoint {cfg.status.host}:{cfg.status_port}: "
                    f"{exc.strerror or exc}; set status.port (0: any free port), or "
                    "--no-status to turn it off") from None
            self.status_url = f"http://{cfg.status.host}:{port}/"
        if self.retention is not None and self.retention.active:
            self._retention_task = asyncio.create_task(self._retention_loop(), name="retention")

    def monitoring_reloaded(self) -> None:
        """Take `retention:` from a reloaded config (call after replacing `self.config`).

        The endpoint keeps its address until a restart; it reads the config afresh anyway.
        """
        settings = self.config.retention
        if self.guard is not None:
            self.guard.min_free_bytes = settings.min_free_bytes
        if self.retention is not None:
            self.retention.policy = settings
            if (self.retention.active and self._retention_task is None
                    and self.registry is not None):
                self._retention_task = asyncio.create_task(self._retention_loop(),
                                                           name="retention")

    async def _stop_monitoring(self) -> None:
        if self._retention_task is not None and self.retention is not None:
            self.retention.cancel.set()  # a pass in its thread ends after its current frame
            self._retention_task.cancel()
            await asyncio.gather(self._retention_task, return_exceptions=True)
        if self.status is not None:
            await self.status.close()

    async def _retention_loop(self) -> None:
        """A pass at start, then every `retention.interval`, each in a thread of its own."""
        with ThreadPoolExecutor(1, thread_name_prefix="lyoncam-retention") as pool:
            while not self.stop.is_set():
                # A reload may have removed both limits: then wait for them to come back.
                if self.retention is not None and self.retention.active:
                    await self._retention_pass(self.retention, pool)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), self.config.retention.interval)

    async def _retention_pass(self, retention: RetentionPass, pool: Executor) -> None:
        began = time.monotonic()
        try:
            result = await asyncio.get_running_loop().run_in_executor(pool, retention.run)
        except Exception:
            self.log.exception("retention pass failed; next one in an interval")
            return
        cells = {"cells": describe(dict(result.cells))} if result.cells else {}
        self.log.info("retention pass", days=result.days, frames=result.frames,
                      freed_bytes=result.freed_bytes, took_s=round(time.monotonic() - began, 3),
                      **cells)
        if result.short_bytes:
            self.log.warning("retention: still over max_bytes", short_bytes=result.short_bytes,
                             hint="keep_variety keeps each camera's newest frame and every "
                             "cell's last frames; raise max_bytes or set keep_variety: false")

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
                if self.owns_process:
                    signal.signal(sig, signal.SIG_IGN)

    # --- systemd notifications and reload (SIGHUP) ----------------------------------------

    def _supervised_start(self) -> None:
        """Every camera is scheduled: READY=1, and feed the watchdog if systemd asks for it."""
        self.notifier.ready(f"capturing {len(self.config.enabled_cameras)} cameras")
        every = watchdog_interval() if self.notifier.enabled else None
        if every is not None:
            self._watchdog = asyncio.create_task(self._watchdog_loop(every), name="watchdog")

    async def _watchdog_loop(self, every: float) -> None:
        # On the event loop itself, on purpose: a stalled loop stops feeding, systemd restarts.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(every)

    async def _supervised_stop(self) -> None:
        """STOPPING=1, then let a reload in progress finish so no camera it starts is missed."""
        self.notifier.stopping()
        async with self._reload_lock:
            pass

    def request_reload(self) -> None:
        """SIGHUP: re-read the config file in the background, one reload at a time."""
        if self.stop.is_set():
            return
        task = asyncio.create_task(self.reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> ReloadPlan | None:
        """Re-read the config and apply it; None when refused (the running config stays)."""
        async with self._reload_lock:
            if self.stop.is_set() or self.registry is None:
                return None
            self.notifier.reloading()
            plan = None
            try:
                plan = await self._reload_plan()
                if plan is not None:
                    await self._apply(plan, self.registry)
            except Exception:  # a bug: say so, keep capturing with what runs
                self.log.exception("reload failed")
            # READY=1 whatever happened: systemd would otherwise wait for it until a timeout.
            self.notifier.ready(f"capturing {len(self.config.enabled_cameras)} cameras"
                                if plan is not None else "reload refused; configuration kept")
            return plan

    async def _reload_plan(self) -> ReloadPlan | None:
        if self.reload_config is None:
            self.log.warning("reload refused: this daemon has no config file to re-read")
            return None
        try:
            # Off the loop: reading the file and loading masks must not delay any camera.
            new = await asyncio.get_running_loop().run_in_executor(None, self.reload_config)
        except ConfigError as exc:
            for line in exc.errors:  # the lines `check` prints
                self.log.error("reload refused; running configuration kept", error=line)
            return None
        return plan_reload(self.config, new)

    async def _apply(self, plan: ReloadPlan, registry: CameraRegistry) -> None:
        """Settings first (restarted cameras read them), then cameras: removed and changed
        ones finish their in-flight poll within the grace; changed ones keep their memory
        when the URL is the same (registry.replace)."""
        self.config = registry.rt.config = plan.config
        if self.owns_process and {"log.format", "log.level"} & set(plan.applied):
            configure_logging(plan.config.log.format, plan.config.log.level)
        if any(s.startswith("retention.") for s in plan.applied):
            self.monitoring_reloaded()
        grace = plan.config.shutdown_grace
        cameras = plan.config.enabled_cameras
        phases = {c.id: phase(i, len(cameras), c.interval) for i, c in enumerate(cameras)}
        anchor = time.monotonic()
        await asyncio.gather(*(registry.remove(i, grace) for i in plan.removed),
                             *(registry.replace(c, grace, phases[c.id], anchor)
                               for c in plan.changed))
        for cam in plan.added:
            registry.add(cam, phases[cam.id], anchor=anchor)
        if plan.needs_restart:
            self.log.warning("reloaded", **plan.summary(),
                             hint="the settings in needs_restart keep their running value "
                                  "until lyoncam restarts")
        else:
            self.log.info("reloaded", **plan.summary())

    async def _report_loop(self) -> None:
        """The one-line summary and the health record a supervisor watches.

        The first comes once every camera has had its first poll (one interval for its
        phase, one timeout for its answer), not after a whole `summary_interval`: a dead
        network shows within about a minute, not five.
        """
        every = self.config.log.summary_interval
        cams = self.config.enabled_cameras
        first_round = max((c.interval for c in cams), default=0.0) + max(
            (c.timeout for c in cams), default=0.0)
        await self._write_health()
        await asyncio.sleep(min(every, first_round))
        while True:
            totals = await self._write_health()
            self.log.info("summary", **totals)
            skipped = self.stats.take_skips()
            if skipped:
                self.log.warning("overloaded: polls skipped since the last summary",
                                 skipped=skipped)
            if totals["polls"] and not totals["states"].get("ok"):
                self.log.warning("no camera has answered", errors=totals["errors"],
                                 hint="check the network, a proxy, or the cameras' urls")
            await asyncio.sleep(self.config.log.summary_interval)  # a reload may change it

    def health(self, stopping: bool = False, snapshot: Snapshot | None = None
               ) -> dict[str, Any]:
        """The health record, every camera's entry included (what health.json holds)."""
        snap = snapshot if snapshot is not None else self.stats.snapshot()
        return {**self._health_head(stopping, snap, snap.totals()),
                "cameras": {cid: cam.as_dict() for cid, cam in snap.cameras.items()}}

    def _health_head(self, stopping: bool, snap: Snapshot, totals: dict[str, Any]
                     ) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_unix": self._started,
            "heartbeat": iso_utc(datetime.now(UTC)),
            "heartbeat_unix": time.time(),
            #: How often the heartbeat is rewritten: what `lyoncam health` judges its age by.
            "heartbeat_every_s": self.config.log.summary_interval,
            "stopping": stopping,
            #: Where the endpoint listens (None: off): `lyoncam health` asks its /healthz.
            "status_url": self.status_url,
            "totals": totals,
            "storage": snap.storage(),
        }

    async def _write_health(self, stopping: bool = False) -> dict[str, Any]:
        """Rewrite health.json; return the totals written.

        Each camera's entry is encoded to JSON text on the loop, a few hundred cameras per
        turn (`Stats.in_steps`), and its counts added to the totals as it is: the totals add
        up over the entries written. Done in one go, copying every camera's stats held the
        loop 0.2-0.5 s at 10,000 cameras every summary, and the cameras due meanwhile started
        that late; done in steps, the 70,000 objects of those copies, alive until the thread
        had written them, set off the garbage collector at 0.1-0.15 s a time (gc callbacks in
        bench/capacity.py's run). Text is not tracked by the collector. The file is written
        in a thread, one write at a time, so the final `stopping` record is never overtaken
        by an earlier one.
        """
        totals = Totals()
        entries = []
        async for cid, cam in self.stats.in_steps():
            totals.add(cam)
            entries.append(encode_camera(cid, cam.as_dict()))
        snap = self.stats.snapshot(cameras=False)
        if self._health_write is not None:
            await asyncio.wait([self._health_write])
        loop = asyncio.get_running_loop()
        write = loop.run_in_executor(None, self._write_record, snap, totals.as_dict(), entries,
                                     stopping)
        self._health_write = write
        return await asyncio.shield(write)

    def _write_record(self, snap: Snapshot, totals: dict[str, Any], entries: list[str],
                      stopping: bool) -> dict[str, Any]:
        try:
            self.state.write_health(self._health_head(stopping, snap, totals), entries)
        except OSError as exc:
            self.log.warning("health record not written", error=exc.strerror or str(exc))
        return totals


#: Allocations between two young-generation collections (Python's default is 700). A poll
#: allocates a few hundred objects, so the default ran a collection several times a poll.
GC_YOUNG_THRESHOLD = 50_000


def settle_gc() -> None:
    """Keep the cyclic garbage collector off the daemon's long-lived objects.

    Measured at 2,000 cameras: the collector took 16 % of the event loop's time, walking
    every camera's config, task and counters again and again. Everything alive once the
    cameras are set up is moved out of its reach (`gc.freeze`), and young collections run
    less often; reference counting still frees almost everything at once. Only for the
    process `run` starts: the test suite runs daemons in its own process.
    """
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def run_daemon(config: Config, reload_config: Callable[[], Config] | None = None) -> int:
    """Entry point of `run`: logging, the event loop, and one-line start-up errors.

    Exit 0 after a stop, 2 for unusable settings (like `check`), 1 when it cannot start.
    `reload_config` reads the config file again on SIGHUP.
    """
    configure_logging(config.log.format, config.log.level)
    from lyoncam_daemon.curation.index import IndexHook
    from lyoncam_daemon.enrich.build import build_enrichers

    index = IndexHook(config.data_dir)
    # The index catalogues the local tree (`index`, `report`, `sample` read its files); frames
    # in an object store are not there, so it is kept only for the filesystem store.
    hooks = [index] if config.storage.kind == "filesystem" else []
    daemon = Daemon(config, owns_process=True, enrichers=build_enrichers(config), hooks=hooks,
                    reload_config=reload_config, notifier=Notifier.from_env(),
                    on_delete=index.forget if hooks else None)
    try:
        return asyncio.run(daemon.run())
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, SettingsError) else 1
    finally:
        index.close()
