"""The daemon's HTTP endpoint, on the daemon's event loop: `/metrics`, `/healthz`, `/` and
thumbnails.

Capture must never wait for a viewer: no request may hold the event loop for long, at 20
cameras or 20,000. `/healthz` and the page's header read running figures kept by `Stats`
(never a copy of every camera), the page shows `page.PAGE_SIZE` cards at a time, `/metrics`
copies the daemon-wide figures only (unless `status.camera_metrics`) and renders in a
thread, thumbnails are decoded in a thread of their own (not the default pool the store
writes through) and cached up to `THUMB_CACHE_BYTES`. How long each request held the loop
at once is measured (`Stepped`) and served in `/metrics`.

Only GET and HEAD are served, bodies are refused, at most `MAX_IN_FLIGHT` requests are
handled at once (more get 503 at once) and each has `REQUEST_TIMEOUT_S`. At most
`MAX_CONNECTIONS` connections are kept, so idle or half-sent ones can never take the file
descriptors the cameras' own connections need; a new connection over the cap closes the
oldest one that has no request being handled, so 64 connections held open by someone else
never shut out Docker's health check. Nothing served holds a camera URL (they may carry
credentials) or any other secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST

from lyoncam_daemon import __version__
from lyoncam_daemon.config import CAMERA_ID_RE, CameraConfig, Config
from lyoncam_daemon.frames.jpeg import has_eoi
from lyoncam_daemon.observe import metrics
from lyoncam_daemon.observe.metrics import DiskFigures, last_stored_unix
from lyoncam_daemon.observe.page import (
    CSP,
    Card,
    Header,
    Nav,
    human_ago,
    human_bytes,
    page_ids,
    pages_of,
    render,
)
from lyoncam_daemon.observe.recent import RecentFrames
from lyoncam_daemon.observe.stats import Snapshot, State, Stats, Timing

MAX_IN_FLIGHT = 16
MAX_CONNECTIONS = 64
REQUEST_TIMEOUT_S = 10.0
#: Thumbnail box: a 1920x1080 frame is DCT-scaled to 480x270 while decoding (draft), then
#: resized to fit this.
THUMB_SIZE = (384, 216)
#: Thumbnails kept, in bytes (about 16 KB each: some 500, several pages' worth); the least
#: recently shown go first. Unbounded, it grew by a thumbnail per camera ever viewed.
THUMB_CACHE_BYTES = 8_000_000
#: The endpoints whose loop holds are measured: route -> the `endpoint` label in /metrics.
ENDPOINTS = {"/": "/", "/healthz": "/healthz", "/metrics": "/metrics",
             "/cameras/{camera_id}/latest.jpg": "/cameras/ID/latest.jpg"}

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


def health_verdict(*, writable: bool, disk: DiskFigures, storage_error: str | None,
                   cameras: int, fresh: int, up_s: float, grace_s: float,
                   store_denied: str | None = None) -> tuple[bool, list[str]]:
    """(healthy, reasons it is not).

    `fresh` cameras stored within `stale_after` of their intervals (the same horizon as
    their `stale` condition, `Stats.fresh`); the daemon is healthy while at least one did,
    or during the longest such horizon (`grace_s`) after start. `store_denied`: why the
    object store refuses the credentials, while it does (spool.py).
    """
    reasons: list[str] = []
    if not writable:
        reasons.append("data_dir is not writable")
    if disk.paused:
        reasons.append("storing paused: free space below retention.min_free_bytes")
    elif storage_error:
        reasons.append(f"writes failing: {storage_error}")
    if store_denied is not None:
        # Not an outage the spool waits out: nothing reaches the bucket until someone acts.
        reasons.append(f"object store refuses the credentials: {store_denied}")
    if cameras and not fresh and up_s > grace_s:
        reasons.append("no camera stored a frame within its last stale_after intervals")
    return not reasons, reasons


@dataclass(frozen=True)
class _ConfigFacts:
    """What the endpoint derives from a config, once per config (a reload makes a new one):
    walking 20,000 cameras per request is what the endpoint must never do."""

    names: dict[str, str]
    #: The longest `stale_after * interval` of the enabled cameras.
    grace_s: float

    @classmethod
    def of(cls, cameras: Sequence[CameraConfig], all_cameras: Sequence[CameraConfig]
           ) -> _ConfigFacts:
        return cls(names={c.id: c.name for c in all_cameras if c.name},
                   grace_s=max((c.stale_after * c.interval for c in cameras), default=0.0))


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
    """Thumbnails of the latest frames, rebuilt only when a camera's latest key changes, at
    most `max_bytes` of them (least recently shown dropped first). Viewers of a frame being
    decoded wait for that one decode."""

    def __init__(self, executor: ThreadPoolExecutor,
                 make: Callable[[Path], bytes | None] = make_thumbnail,
                 max_bytes: int = THUMB_CACHE_BYTES) -> None:
        self.executor = executor
        self.make = make
        self.max_bytes = max_bytes
        self._cache: OrderedDict[str, tuple[str, bytes | None]] = OrderedDict()
        self._bytes = 0
        self._making: dict[tuple[str, str], asyncio.Future[bytes | None]] = {}
        self.built = 0

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    async def get(self, camera_id: str, key: str, path: Path) -> bytes | None:
        cached = self._cache.get(camera_id)
        if cached is not None and cached[0] == key:
            self._cache.move_to_end(camera_id)
            return cached[1]
        making = self._making.get((camera_id, key))
        if making is None:
            loop = asyncio.get_running_loop()
            making = loop.run_in_executor(self.executor, self.make, path)
            self._making[(camera_id, key)] = making
            making.add_done_callback(lambda done: self._made(camera_id, key, done))
        return await asyncio.shield(making)

    def _made(self, camera_id: str, key: str, done: asyncio.Future[bytes | None]) -> None:
        del self._making[(camera_id, key)]
        if done.cancelled() or done.exception() is not None:
            return
        self.built += 1
        data = done.result()
        old = self._cache.pop(camera_id, None)
        if old is not None:
            self._bytes -= len(old[1] or b"")
        self._cache[camera_id] = (key, data)
        self._bytes += len(data or b"")
        while self._bytes > self.max_bytes and len(self._cache) > 1:
            _, (_, dropped) = self._cache.popitem(last=False)
            self._bytes -= len(dropped or b"")


class Stepped:
    """Await a coroutine, timing each of its steps on the event loop, from one resumption
    to its next suspension, and report the longest once it ends: how long a request held
    the loop at once, whatever it awaited in between (a render in a thread, a thumbnail
    being decoded)."""

    __slots__ = ("_coro", "_observe")

    def __init__(self, coro: Coroutine[Any, Any, Any], observe: Callable[[float], None]) -> None:
        self._coro = coro
        self._observe = observe

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, clock = self._coro, time.perf_counter
        longest = 0.0
        sent: Any = None
        error: BaseException | None = None
        try:
            while True:
                began = clock()
                try:
                    yielded = coro.throw(error) if error is not None else coro.send(sent)
                except StopIteration as done:
                    return done.value
                finally:
                    longest = max(longest, clock() - began)
                sent, error = None, None
                try:
                    sent = yield yielded
                except GeneratorExit:
                    coro.close()
                    raise
                except BaseException as exc:  # a cancellation: passed on into the coroutine
                    error = exc
        finally:
            self._observe(longest)


class _Refused(asyncio.Protocol):
    """A connection over MAX_CONNECTIONS with every connection busy: closed at once."""

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
        #: Connections with a request being handled: never closed to make room.
        self._busy: set[object] = set()
        self._facts: tuple[Config, _ConfigFacts] | None = None
        #: How long each request held the event loop at once, by endpoint.
        self.holds: dict[str, Timing] = {label: Timing() for label in ENDPOINTS.values()}

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
            # connections here is the one place a new connection can be let in or not.
            if len(server.connections) >= MAX_CONNECTIONS and not self._make_room(
                    server.connections):
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

    def _make_room(self, connections: Sequence[RequestHandler]) -> bool:
        """Close the oldest connection with no request being handled (idle, or its request
        still arriving); False if every one is busy. The newcomer is then the last to go."""
        for handler in connections:
            if handler not in self._busy and handler.transport is not None:
                handler.transport.close()
                return True
        return False

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
        route = request.match_info.route.resource
        hold = self.holds.get(ENDPOINTS.get(route.canonical, "") if route is not None else "")
        self._in_flight += 1
        self._busy.add(request.protocol)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                coro = handler(request)
                if hold is not None and isinstance(coro, Coroutine):
                    response: web.StreamResponse = await Stepped(coro, hold.observe)
                else:
                    response = await coro
        except TimeoutError:
            return web.Response(status=503, text="timed out\n")
        finally:
            self._in_flight -= 1
            self._busy.discard(request.protocol)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # -- handlers ---------------------------------------------------------------------------

    async def _config_facts(self) -> _ConfigFacts:
        """Derived in the status thread, once per config: with shards, `enabled_cameras`
        hashes every camera id, tens of milliseconds at 20,000 (a frozen model: safe there)."""
        config = self.sources.config()
        if self._facts is None or self._facts[0] is not config:
            facts = await asyncio.get_running_loop().run_in_executor(
                self._pool, lambda: _ConfigFacts.of(config.enabled_cameras, config.cameras))
            self._facts = (config, facts)
        return self._facts[1]

    async def _verdict(self, writable: bool) -> tuple[bool, list[str], DiskFigures, int]:
        """(healthy, reasons, disk figures, fresh cameras) from the running figures."""
        src = self.sources
        facts = await self._config_facts()
        now = src.clock()
        disk = src.disk()
        fresh = src.stats.fresh.count(now)
        spool = src.stats.spool
        ok, reasons = health_verdict(
            writable=writable, disk=disk, storage_error=src.stats.storage_error,
            cameras=len(src.stats.cameras), fresh=fresh, up_s=now - src.started_unix,
            grace_s=facts.grace_s,
            store_denied=spool.store_error if spool is not None and spool.store == "denied"
            else None)
        return ok, reasons, disk, fresh

    async def metrics(self, request: web.Request) -> web.Response:
        """Snapshot on the loop (daemon-wide figures only: the same cost at any number of
        cameras; with `status.camera_metrics` every camera, a few hundred per turn of the
        loop), text rendered in the status thread. Scrapes arriving while one renders share
        it, so a flood costs one render at a time."""
        if self._rendering is None:
            stats = self.sources.stats
            per_camera = self.sources.config().status.camera_metrics
            snap = await stats.snapshot_in_steps() if per_camera else stats.snapshot(False)
            if self._rendering is None:  # none started by a scrape while this one copied
                self._render(snap, per_camera)
        assert self._rendering is not None
        body = await asyncio.shield(self._rendering)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _render(self, snap: Snapshot, per_camera: bool) -> None:
        disk = self.sources.disk()
        holds = {e: t.copy() for e, t in self.holds.items()}
        loop = asyncio.get_running_loop()
        rendering = loop.run_in_executor(self._pool, metrics.render, snap, disk, per_camera,
                                         holds)
        self._rendering = rendering
        rendering.add_done_callback(lambda _: setattr(self, "_rendering", None))

    async def healthz(self, request: web.Request) -> web.Response:
        """O(1) in cameras: running figures only (`Stats`), never a snapshot."""
        src = self.sources
        config = src.config()
        ok, reasons, disk, fresh = await self._verdict(os.access(config.data_dir, os.W_OK))
        body: dict[str, Any] = {
            "status": "ok" if ok else "fail",
            "reasons": reasons,
            "uptime_s": round(src.clock() - src.started_unix, 1),
            "cameras": len(src.stats.cameras),
            "cameras_ok": src.stats.states[State.OK],
            "cameras_recent": fresh,
            "disk_free_bytes": disk.free_bytes,
            "storage_paused": disk.paused,
            "version": __version__,
        }
        return web.json_response(body, status=200 if ok else 503)

    async def page(self, request: web.Request) -> web.Response:
        """One page of cards (`page.PAGE_SIZE`), problem cameras first: the work is the
        page's cards and the problem cameras, never a card per camera."""
        src = self.sources
        stats = src.stats
        facts = await self._config_facts()
        only_problems = request.query.get("show") == "problems"
        shown = len(stats.problems) if only_problems else len(stats.cameras)
        pages = pages_of(shown)
        try:
            number = min(max(1, int(request.query.get("page", "1"))), pages)
        except ValueError:
            number = 1
        nav = Nav(page=number, pages=pages, only_problems=only_problems,
                  problem_cameras=len(stats.problems))
        now = src.clock()
        cards = []
        for cid in page_ids(stats.ordered_ids(), stats.problems, nav):
            cam = stats.cameras[cid]
            when = last_stored_unix(cam)
            key = src.recent.latest_key(cid)
            errors = {**cam.errors, **({"write": cam.write_errors} if cam.write_errors else {})}
            cards.append(Card(
                camera_id=cid, name=facts.names.get(cid, ""), state=cam.state,
                condition=cam.condition, last_stored_at=cam.last_stored_at,
                last_stored_ago=human_ago(now - when) if when is not None else "",
                frames_24h=src.recent.count(cid), errors=sum(errors.values()),
                error_detail=", ".join(f"{k} {v}" for k, v in sorted(errors.items()) if v),
                thumb_token=thumb_token(key) if key and src.frame_file else None,
            ))
        _, reasons, disk, _ = await self._verdict(writable=True)
        header = Header(version=__version__, cameras=len(stats.cameras), ok=stats.states[State.OK],
                        disk_free=human_bytes(disk.free_bytes), problems=reasons)
        return web.Response(text=render(header, cards, nav), content_type="text/html",
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
