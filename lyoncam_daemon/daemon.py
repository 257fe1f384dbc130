"""Wiring: one event loop, one HTTP session, one task per camera, signals and shutdown.

The daemon owns no capture logic; it builds the shared pieces, starts a `CameraTask`
per enabled camera, writes a summary and a health record now and then, and on
SIGTERM/SIGINT stops scheduling, gives in-flight work `shutdown_grace` seconds to
finish (as arq's worker does), then cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiohttp
import structlog

from lyoncam_daemon import __version__
from lyoncam_daemon.atomic import write_atomic
from lyoncam_daemon.camera import CameraTask, Runtime
from lyoncam_daemon.config import Config
from lyoncam_daemon.dedup import Judge
from lyoncam_daemon.frames import KNOWN_PLACEHOLDER_SHA256
from lyoncam_daemon.observe import Stats, configure_logging
from lyoncam_daemon.schedule import phase
from lyoncam_daemon.store import FrameStore, iso_utc

#: Daemon state under data_dir; a name no camera id can take (ids have no dots).
STATE_DIR = ".lyoncam"


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


class Daemon:
    """The capture daemon. `await run()` returns when stopped; `request_stop()` stops it."""

    def __init__(self, config: Config, stats: Stats | None = None,
                 owns_process: bool = False) -> None:
        self.config = config
        #: True when this daemon is the whole process (`run`): signals arriving after the
        #: stop are then ignored instead of killing the exit code with 130/143.
        self.owns_process = owns_process
        self.stats = stats if stats is not None else Stats()
        self.stop = asyncio.Event()
        self.log = structlog.get_logger("lyoncam.daemon")
        self.tasks: list[CameraTask] = []
        self._running: list[asyncio.Task[None]] = []
        self._lock_file: IO[str] | None = None
        self._signals = 0

    def request_stop(self) -> None:
        """First call: stop scheduling and drain. A second (a second Ctrl-C): cancel now."""
        self._signals += 1
        self.stop.set()
        if self._signals > 1:
            for task in self._running:
                task.cancel()

    async def run(self) -> int:
        cfg = self.config
        self._prepare_data_dir()
        try:
            with ThreadPoolExecutor(cfg.dedup.workers, thread_name_prefix="lyoncam-decode") as pool:
                return await self._run_with(build_judge(cfg, pool))
        finally:
            self._release_lock()

    async def _run_with(self, judge: Judge) -> int:
        cfg = self.config
        store = FrameStore(cfg.data_dir)
        connector = aiohttp.TCPConnector(limit=cfg.http.max_concurrent,
                                         limit_per_host=cfg.http.max_per_host)
        # Each fetch has its camera's own deadline (fetch.py); the session's total is a
        # backstop at the longest of them, so no request can ever hang a camera for good.
        longest = max((c.timeout for c in cfg.enabled_cameras), default=60.0)
        timeout = aiohttp.ClientTimeout(total=longest, connect=cfg.http.connect_timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         headers={"User-Agent": cfg.http.user_agent}) as session:
            rt = Runtime(config=cfg, session=session,
                         semaphore=asyncio.Semaphore(cfg.http.max_concurrent), judge=judge,
                         store=store, stats=self.stats, stop=self.stop)
            cameras = cfg.enabled_cameras
            self.tasks = [CameraTask(cam, rt, phase(i, len(cameras), cam.interval))
                          for i, cam in enumerate(cameras)]
            self._install_signal_handlers()  # before recovery: a SIGTERM then still exits 0
            await asyncio.gather(*(asyncio.to_thread(t.recover) for t in self.tasks))
            self.log.info("started", version=__version__, cameras=len(self.tasks),
                          data_dir=str(cfg.data_dir), pid=os.getpid())
            running = self._running = [
                asyncio.create_task(self._supervise(t), name=f"camera:{t.camera.id}")
                for t in self.tasks
            ]
            reporter = asyncio.create_task(self._report_loop(), name="reporter")
            await self.stop.wait()
            self.log.info("stopping", grace_s=cfg.shutdown_grace)
            _, pending = await asyncio.wait(running, timeout=cfg.shutdown_grace) \
                if running else (set(), set())
            for task in pending:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            self._remove_signal_handlers()
        self._write_health(stopping=True)
        self.log.info("stopped", cancelled=len(pending), **self.stats.totals())
        return 0

    async def _supervise(self, task: CameraTask) -> None:
        """Restart a camera task that died of a bug, one interval later.

        CameraTask already survives a crashing poll; this catches what escapes it (the
        schedule itself), so a bug costs minutes of one camera, never its months.
        """
        while not self.stop.is_set():
            try:
                await task.run()
                return
            except Exception:
                self.log.exception("camera task crashed; restarting", camera=task.camera.id)
                self.stats.camera(task.camera.id).errors["internal"] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=task.camera.interval)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
                if self.owns_process:
                    signal.signal(sig, signal.SIG_IGN)

    async def _report_loop(self) -> None:
        """The periodic one-line summary, and the health record a supervisor can watch."""
        every = self.config.log.summary_interval
        while True:
            self._write_health()
            await asyncio.sleep(every)
            self.log.info("summary", **self.stats.totals())

    def _prepare_data_dir(self) -> None:
        state = self.config.data_dir / STATE_DIR
        try:
            state.mkdir(parents=True, exist_ok=True)
            # "a", not "w": a refused second daemon must not wipe the running one's pid.
            lock = (state / "lock").open("a")
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StartupError(f"data_dir {self.config.data_dir}: {reason}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            holder = _read_pid(state / "lock")
            raise StartupError(
                f"data_dir {self.config.data_dir}: another lyoncam daemon"
                f"{f' (pid {holder})' if holder else ''} is using it"
            ) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock_file = lock

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def health(self, stopping: bool = False) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "version": __version__,
            "heartbeat": iso_utc(datetime.now(UTC)),
            "heartbeat_unix": time.time(),
            "stopping": stopping,
            "totals": self.stats.totals(),
            "cameras": {cid: cam.as_dict() for cid, cam in self.stats.cameras.items()},
        }

    def _write_health(self, stopping: bool = False) -> None:
        """`<data_dir>/.lyoncam/health.json`, replaced atomically; failure is only logged."""
        path = self.config.data_dir / STATE_DIR / "health.json"
        try:
            write_atomic(path, json.dumps(self.health(stopping), indent=1).encode(),
                         durable=False)
        except OSError as exc:
            self.log.warning("health record not written", error=exc.strerror or str(exc))


def _read_pid(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def run_daemon(config: Config) -> int:
    """Entry point of `run`: logging, the event loop, and one-line start-up errors.

    Exit 0 after a stop, 2 for unusable settings (like `check`), 1 when it cannot start.
    """
    configure_logging(config.log.format, config.log.level)
    try:
        return asyncio.run(Daemon(config, owns_process=True).run())
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, SettingsError) else 1
