"""The daemon's HTTP endpoint, on its own event loop: `/metrics`, `/healthz`, `/` and thumbnails.

Capture must never wait for a viewer. Everything a request computes is small (one stats
snapshot, a page of a few KB) except thumbnails, which are decoded in a thread of their own
(not the default pool the store writes through) and cached by the latest frame's key. Only
GET and HEAD are served, bodies are refused, at most `MAX_IN_FLIGHT` requests are handled at
once (more get 503 at once) and each has `REQUEST_TIMEOUT_S`; connections beyond
`MAX_CONNECTIONS` are closed as they arrive, so idle or half-sent ones can never take the
file descriptors the cameras' own connections need. Nothing served holds a camera URL (they
may carry credentials) or any other secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST

from lyoncam_daemon import __version__
from lyoncam_daemon.config import CAMERA_ID_RE, CameraConfig, Config
from lyoncam_daemon.frames.jpeg import has_eoi
from lyoncam_daemon.observe import metrics
from lyoncam_daemon.observe.metrics import DiskFigures, last_stored_unix
from lyoncam_daemon.observe.page import CSP, Card, Header, human_ago, human_bytes, render
from lyoncam_daemon.observe.recent import RecentFrames
from lyoncam_daemon.observe.stats import Snapshot, State, Stats

MAX_IN_FLIGHT = 16
MAX_CONNECTIONS = 64
REQUEST_TIMEOUT_S = 10.0
#: Thumbnail box: a 1920x1080 frame is DCT-scaled to 480x270 while decoding (draft), then
#: resized to fit this.
THUMB_SIZE = (384, 216)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Sources:
    """What the endpoint reads; callables, so a reload's new config is seen at once."""

    config: Callable[[], Config]
    stats: Stats
    recent: RecentFrames
    disk: Callable[[], DiskFigures]
    started_unix: float
    #: The file of a stored frame's key; None when the store is not a filesystem.
    frame_file: Callable[[str], Path] | None
    clock: Callable[[], float] = time.time


def health_verdict(snap: Snapshot, cameras: Sequence[CameraConfig], now: float,
                   started_unix: float, writable: bool, disk: DiskFigures
                   ) -> tuple[bool, list[str], int]:
    """(healthy, reasons it is not, cameras that stored recently).

    A camera is recent when it stored within `stale_after` of its intervals (the same
    horizon as its `stale` condition); the daemon is healthy while at least one is, or
    during that horizon after start.
    """
    reasons: list[str] = []
    if not writable:
        reasons.append("data_dir is not writable")
    if disk.paused:
        reasons.append("storing paused: free space below retention.min_free_bytes")
    elif snap.storage_error:
        reasons.append(f"writes failing: {snap.storage_error}")
    horizons = {c.id: c.stale_after * c.interval for c in cameras if c.id in snap.cameras}
    fresh = 0
    for cid, horizon in horizons.items():
        when = last_stored_unix(snap.cameras[cid])
        if when is not None and now - when <= horizon:
            fresh += 1
    grace = max(horizons.values(), default=0.0)
    if horizons and not fresh and now - started_unix > grace:
        reasons.append("no camera stored a frame within its last stale_after intervals")
    return not reasons, reasons, fresh


def make_thumbnail(path: Path, box: tuple[int, int] = THUMB_SIZE) -> bytes | None:
    """A small JPEG of a stored frame; None if it cannot be read. Blocking: run in a thread.

    A frame kept truncated (`truncated: keep`) gets its missing end-of-image marker added,
    as the dedup stage does, so it shows as far as its data goes.
    """
    try:
        data = path.read_bytes()
        if not has_eoi(data):
            data += b"\xff\xd9"
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as img:
            img.draft("RGB", box)  # DCT scaling: decodes 1/4 or 1/8 of the pixels
            small = img.convert("RGB")
            small.thumbnail(box)
            out = io.BytesIO()
            small.save(out, "JPEG", quality=75)
            return out.getvalue()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return None


class Thumbnails:
    """One thumbnail per camera, rebuilt only when its latest frame's key changes."""

    def __init__(self, executor: ThreadPoolExecutor,
                 make: Callable[[Path], bytes | None] = make_thumbnail) -> None:
        self.executor = executor
        self.make = make
        self._cache: dict[str, tuple[str, bytes | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.built = 0

    async def get(self, camera_id: str, key: str, path: Path) -> bytes | None:
        lock = self._locks.setdefault(camera_id, asyncio.Lock())
        async with lock:  # many viewers of a new frame: one decode
            cached = self._cache.get(camera_id)
            if cached is not None and cached[0] == key:
                return cached[1]
            loop = asyncio.get_running_loop()
            data = await loop.run_in_executor(self.executor, self.make, path)
            self.built += 1
            self._cache[camera_id] = (key, data)
            return data


class _Refused(asyncio.Protocol):
    """A connection over MAX_CONNECTIONS: closed at once, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def thumb_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class StatusServer:
    def __init__(self, sources: Sources, host: str, port: int) -> None:
        self.sources = sources
        self.host = host
        self.port = port
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="lyoncam-status")
        self.thumbs = Thumbnails(self._pool)
        self._rendering: asyncio.Future[bytes] | None = None
        self._in_flight = 0
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024, middlewares=[self._guard])
        app.router.add_get("/", self.page)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/cameras/{camera_id}/latest.jpg", self.thumbnail)
        return app

    async def start(self) -> int:
        """Bind and serve; returns the port (the chosen one when configured as 0)."""
        runner = web.AppRunner(self.app(), access_log=None, keepalive_timeout=15,
                               max_line_size=4096, max_field_size=4096, handler_cancellation=True)
        await runner.setup()
        server = runner.server
        assert server is not None

        def protocol() -> asyncio.BaseProtocol:
            # aiohttp's low-level server is the protocol factory; counting its live
            # connections here is the one place a new connection can be turned away.
            if len(server.connections) >= MAX_CONNECTIONS:
                return _Refused()
            return server()

        try:
            self._listener = await asyncio.get_running_loop().create_server(
                protocol, self.host, self.port, backlog=64)
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(self._listener.sockets[0].getsockname()[1])
        return self.port

    @property
    def in_flight(self) -> int:
        """Requests being handled now."""
        return self._in_flight

    @property
    def connections(self) -> int:
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()  # no new connections; the runner closes the open ones
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="GET only\n", headers={"Allow": "GET, HEAD"})
        if self._in_flight >= MAX_IN_FLIGHT:
            return web.Response(status=503, text="busy\n", headers={"Retry-After": "1"})
        self._in_flight += 1
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                response = await handler(request)
        except TimeoutError:
            return web.Response(status=503, text="timed out\n")
        finally:
            self._in_flight -= 1
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # -- handlers ---------------------------------------------------------------------------

    def _disk_and_snapshot(self) -> tuple[DiskFigures, Snapshot]:
        return self.sources.disk(), self.sources.stats.snapshot()

    async def metrics(self, request: web.Request) -> web.Response:
        """Snapshot on the loop (consistent, ~1 ms), text rendered in the status thread.
        Scrapes arriving while one renders share it, so a flood costs one render at a time."""
        if self._rendering is None:
            per_camera = self.sources.config().status.camera_metrics
            disk, snap = self.sources.disk(), self.sources.stats.snapshot(cameras=per_camera)
            loop = asyncio.get_running_loop()
            rendering = loop.run_in_executor(self._pool, metrics.render, snap, disk, per_camera)
            self._rendering = rendering
            rendering.add_done_callback(lambda _: setattr(self, "_rendering", None))
        body = await asyncio.shield(self._rendering)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        src = self.sources
        disk, snap = self._disk_and_snapshot()
        config = src.config()
        now = src.clock()
        ok, reasons, fresh = health_verdict(snap, config.enabled_cameras, now, src.started_unix,
                                            os.access(config.data_dir, os.W_OK), disk)
        body: dict[str, Any] = {
            "status": "ok" if ok else "fail",
            "reasons": reasons,
            "uptime_s": round(now - src.started_unix, 1),
            "cameras": len(snap.cameras),
            "cameras_ok": sum(c.state is State.OK for c in snap.cameras.values()),
            "cameras_recent": fresh,
            "disk_free_bytes": disk.free_bytes,
            "storage_paused": disk.paused,
            "version": __version__,
        }
        return web.json_response(body, status=200 if ok else 503)

    async def page(self, request: web.Request) -> web.Response:
        src = self.sources
        disk, snap = self._disk_and_snapshot()
        config = src.config()
        names = {c.id: c.name for c in config.cameras}
        now = src.clock()
        cards = []
        for cid, cam in snap.cameras.items():
            when = last_stored_unix(cam)
            key = src.recent.latest_key(cid)
            errors = {**cam.errors, **({"write": cam.write_errors} if cam.write_errors else {})}
            cards.append(Card(
                camera_id=cid, name=names.get(cid, ""), state=cam.state,
                condition=cam.condition, last_stored_at=cam.last_stored_at,
                last_stored_ago=human_ago(now - when) if when is not None else "",
                frames_24h=src.recent.count(cid), errors=sum(errors.values()),
                error_detail=", ".join(f"{k} {v}" for k, v in sorted(errors.items()) if v),
                thumb_token=thumb_token(key) if key and src.frame_file else None,
            ))
        _, reasons, _ = health_verdict(snap, config.enabled_cameras, now, src.started_unix,
                                       True, disk)
        header = Header(version=__version__, cameras=len(cards),
                        ok=sum(c.state is State.OK for c in snap.cameras.values()),
                        disk_free=human_bytes(disk.free_bytes), problems=reasons)
        return web.Response(text=render(header, cards), content_type="text/html",
                            headers={"Content-Security-Policy": CSP})

    async def thumbnail(self, request: web.Request) -> web.Response:
        cid = request.match_info["camera_id"]
        src = self.sources
        # Only a known camera's own latest key is ever turned into a path: no client input
        # reaches the file system.
        if not CAMERA_ID_RE.fullmatch(cid) or cid not in src.stats.cameras:
            raise web.HTTPNotFound(text="no such camera\n")
        key = src.recent.latest_key(cid)
        if key is None or src.frame_file is None:
            raise web.HTTPNotFound(text="no frame stored yet\n")
        data = await self.thumbs.get(cid, key, src.frame_file(key))
        if data is None:
            raise web.HTTPNotFound(text="latest frame unreadable\n")
        return web.Response(body=data, content_type="image/jpeg")
