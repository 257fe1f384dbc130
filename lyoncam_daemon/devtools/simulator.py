"""Serve simulated Grand Lyon CriTer cameras over HTTP (loopback by default), so lyoncam can be
tried, tested and benchmarked without network. Each camera answers at the real path shape
(/files/rdata/pvo_patrimoine_voirie.pvocameracriter/<ID>.JPG) like the real server does:
200 image/jpeg, chunked, no Content-Length, no Last-Modified, a strong ETag with 304 answers
unless --no-etag. Every --period seconds each camera publishes a new, visibly different
1920x1080 frame built from a real CWL9018 night frame (vehicle-sized patches moved around,
frame number overlaid, the AXIS EXIF kept); cameras change at staggered times. Chosen cameras
can serve a failure mode instead (--mode ID=MODE): placeholder (300x200 "Image indisponible"
JPEG), truncated (no end-of-image marker), error (HTTP 500), slow (body dribbled over
--slow-seconds), html (200 text/html), empty (200, no body), oversized (200 image/jpeg of
--oversize-bytes), reset (connection aborted mid-body) or notfound (404). GET /health and
/catalogue.json describe the cameras; --write-config writes a lyoncam config for `run`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.resources
import io
import logging
import math
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, NamedTuple

if TYPE_CHECKING:
    # Imported lazily at run time: the CLI imports this module for every command (to build
    # `simulate --help`), and `check` should not pay for aiohttp.web and Pillow.
    from aiohttp import web
    from PIL import Image

log = logging.getLogger("lyoncam.simulator")

MODES = (
    "ok", "placeholder", "truncated", "error", "slow", "html", "empty", "oversized", "reset",
    "notfound",
)
#: The real server's path for camera images; the file name is `<ID>.JPG`.
PATH_PREFIX = "/files/rdata/pvo_patrimoine_voirie.pvocameracriter/"
#: The real CriTer placeholder's bytes (frames/jpeg.py: KNOWN_PLACEHOLDER_SHA256) are not
#: redistributable here, so the simulator serves its own look-alike (`placeholder_jpeg()`)
#: with a different hash, which configs list in `placeholder_sha256`.
#: Bytes of each write: small enough that a slow reader exercises back-pressure.
CHUNK = 64 * 1024
#: CWL5801 is truncated like this: the tail holds no EOI, and lyoncam only looks there.
EOI_WINDOW = 4096
DEFAULT_VARIANTS = 32
FIXTURE_NAME = "CWL9018_night.jpg"

_DATETIME_FMT = "%Y:%m:%d %H:%M:%S"


#: Where real CriTer cameras stand (catalogue coordinates, open data), lent to simulated
#: cameras in turn so a demo's frames get a sun elevation and a daypart like real ones.
LYON_PLACES: Final = (
    (45.7748934, 4.80811826),   # CWL9018, Pont Clemenceau towards the Croix-Rousse tunnel
    (45.7288611, 4.81570358),   # CWML005, M7 towards Marseille
    (45.73088473, 4.88646296),  # CW2L8114, Lyon centre
    (45.75235829, 4.81978207),  # CWL5801, Perrache
    (45.78824631, 4.86040666),  # CW3CL005, Villeurbanne
    (45.72711031, 4.92752365),  # CWBR044, Eurexpo
    (45.72302417, 4.92010936),  # CWBR043, Porte des Alpes
    (45.78343515, 4.89207215),  # CWVL802, Porte de La Pape
)


def camera_ids(n: int) -> list[str]:
    """`SIM001`, `SIM002`, ...: valid lyoncam ids that cannot clash with real CriTer ones."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return [f"SIM{i:03d}" for i in range(1, n + 1)]


# --- frames ----------------------------------------------------------------------------------


def fixture_frame() -> bytes:
    """The real 1920x1080 CWL9018 frame shipped in the package (devtools/data/)."""
    data = importlib.resources.files("lyoncam_daemon.devtools") / "data"
    return (data / FIXTURE_NAME).read_bytes()


@cache
def placeholder_jpeg() -> bytes:
    """A deterministic 300x200 "Image indisponible" JPEG, standing in for the real placeholder.

    Deterministic for a given Pillow build (the text is drawn with Pillow's bundled font), so
    a test can read its SHA-256 from `placeholder_sha256()` and put it in the config.
    """
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (300, 200), (64, 64, 64))
    draw = ImageDraw.Draw(img)
    draw.rectangle((8, 8, 291, 191), outline=(200, 200, 200), width=2)
    font = ImageFont.load_default(size=26)
    small = ImageFont.load_default(size=14)
    draw.text((150, 88), "Image", fill=(255, 255, 255), font=font, anchor="mm")
    draw.text((150, 118), "indisponible", fill=(255, 255, 255), font=font, anchor="mm")
    draw.text((150, 170), "lyoncam simulator", fill=(170, 170, 170), font=small, anchor="mm")
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def placeholder_sha256() -> str:
    """What to list under `placeholder_sha256:` in a config polling the simulator."""
    return hashlib.sha256(placeholder_jpeg()).hexdigest()


def truncate_jpeg(body: bytes) -> bytes:
    """Cut a JPEG like CWL5801's frames: about half its bytes, no EOI in the last 4 KB."""
    cut = max(len(body) // 2, min(len(body), EOI_WINDOW * 2))
    out = body[:cut]
    # Entropy-coded data never holds FF D9 (FF is byte-stuffed), but a cut inside
    # an embedded thumbnail or right after a marker could; keep cutting until clean.
    while out and b"\xff\xd9" in out[-EOI_WINDOW:]:
        out = out[: out.rfind(b"\xff\xd9", max(0, len(out) - EOI_WINDOW))]
    return out


def _html_page(status: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html><head><title>" + status + "</title></head>\n<body><h1>"
        + status + "</h1><p>Le service est momentanément indisponible "
        "(lyoncam simulator).</p></body></html>\n"
    ).encode()


class _Patch(NamedTuple):
    src: tuple[int, int]
    dst: tuple[int, int]


class FrameFactory:
    """Renders, on demand, a fixed cycle of `variants` distinct JPEGs from one real frame.

    Variants are cached for the life of the process and shared by every camera and every
    simulator built from the same frame: a few dozen encodes (~10 ms each) serve any number of
    cameras for any time, and the test suite pays for them once.
    """

    def __init__(self, frame: bytes, variants: int = DEFAULT_VARIANTS) -> None:
        from PIL import Image

        if variants < 2:
            raise ValueError("variants must be >= 2 so consecutive frames differ")
        self.variants = variants
        img = Image.open(io.BytesIO(frame))
        self._exif: bytes = img.info.get("exif", b"")
        self._base: Image.Image = img.convert("RGB")
        w, h = self._base.size
        # ~150x130 on 1920x1080: the size of a car near the camera.
        self._patch = (max(8, round(w * 150 / 1920)), max(8, round(h * 130 / 1080)))
        self._sources = self._textured_windows()
        self._cache: dict[int, bytes] = {}
        self._locks = [threading.Lock() for _ in range(variants)]

    def _textured_windows(self, keep: int = 24) -> list[tuple[int, int]]:
        """Top-left corners of the most detailed patch-sized windows (signs, lights, markings).

        Pasting flat dark asphalt onto flat dark asphalt would change nothing a near-duplicate
        filter sees; detailed windows do.
        """
        import numpy as np

        pw, ph = self._patch
        lum = np.asarray(self._base.convert("L"), dtype=np.float32)
        h, w = lum.shape
        scored: list[tuple[float, int, int]] = []
        for y in range(0, h - ph + 1, max(1, ph // 2)):
            for x in range(0, w - pw + 1, max(1, pw // 2)):
                win = lum[y : y + ph, x : x + pw]
                scored.append((float(win.std()) + float(win.mean()) * 0.25, x, y))
        scored.sort(reverse=True)
        return [(x, y) for _, x, y in scored[:keep]] or [(0, 0)]

    def _layout(self, index: int) -> list[_Patch]:
        """Where variant `index` pastes its "vehicles": on the road, below the horizon."""
        rng = random.Random(0x5EED + index * 7919)
        w, h = self._base.size
        pw, ph = self._patch
        patches = []
        for _ in range(8):
            src = rng.choice(self._sources)
            dx = rng.randrange(0, max(1, w - pw))
            dy = rng.randrange(min(h - ph, int(h * 0.3)), max(int(h * 0.3) + 1, h - ph))
            patches.append(_Patch(src, (dx, dy)))
        return patches

    def _exif_for(self, index: int) -> bytes:
        """The real frame's EXIF (Make AXIS, Model P1447-LE...) with DateTime moved on by
        one minute per variant, rewritten in place so nothing else in the block moves."""
        exif = self._exif
        if not exif:
            return exif
        import re
        from datetime import datetime, timedelta

        def bump(m: re.Match[bytes]) -> bytes:
            try:
                t = datetime.strptime(m.group().decode(), _DATETIME_FMT)
            except ValueError:
                return m.group()
            return (t + timedelta(minutes=index)).strftime(_DATETIME_FMT).encode()

        return re.sub(rb"\d{4}:\d\d:\d\d \d\d:\d\d:\d\d", bump, exif)

    def render(self, index: int) -> bytes:
        """Encode variant `index` (0 <= index < variants); pure and thread-safe."""
        from PIL import ImageDraw, ImageFont

        img = self._base.copy()
        pw, ph = self._patch
        for p in self._layout(index):
            sx, sy = p.src
            img.paste(self._base.crop((sx, sy, sx + pw, sy + ph)), p.dst)
        draw = ImageDraw.Draw(img)
        size = max(10, img.size[1] // 40)
        font = ImageFont.load_default(size=size)
        text = f"lyoncam simulator  frame {index:02d}"
        x0, y0, x1, y1 = draw.textbbox((size, size), text, font=font)
        draw.rectangle((x0 - 6, y0 - 4, x1 + 6, y1 + 4), fill=(0, 0, 0))
        draw.text((size, size), text, fill=(255, 255, 255), font=font)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=85, exif=self._exif_for(index))
        return out.getvalue()

    def cached(self, index: int) -> bytes | None:
        return self._cache.get(index % self.variants)

    def get(self, index: int) -> bytes:
        """Variant `index` modulo `variants`, encoding it at most once per process."""
        index %= self.variants
        body = self._cache.get(index)
        if body is not None:
            return body
        with self._locks[index]:
            body = self._cache.get(index)
            if body is None:
                body = self.render(index)
                self._cache[index] = body
        return body


_factories: dict[tuple[str, int], FrameFactory] = {}
_factories_lock = threading.Lock()


def frame_factory(frame: bytes, variants: int = DEFAULT_VARIANTS) -> FrameFactory:
    """The process-wide factory for this frame, so simulators in a test suite share variants."""
    key = (hashlib.sha256(frame).hexdigest(), variants)
    with _factories_lock:
        factory = _factories.get(key)
        if factory is None:
            factory = _factories[key] = FrameFactory(frame, variants)
        return factory


# --- the server -----------------------------------------------------------------------------


@dataclass
class ServedStats:
    """What one camera served, for assertions such as "bytes stored == bytes served".

    `ok_200` counts 200 status lines sent (a `reset` camera's too); `errors` counts 500 and
    404 answers and connections the server aborted; `bytes_sent` counts body bytes only.
    """

    requests: int = 0
    ok_200: int = 0
    not_modified_304: int = 0
    errors: int = 0
    #: Bodies the client stopped reading before the end (its timeout or size limit).
    client_aborts: int = 0
    bytes_sent: int = 0
    #: SHA-256 of every 200 image/jpeg body written out completely (ok, slow, placeholder,
    #: truncated; not empty or oversized), in order; `served_modes` says which mode each was.
    served_sha256: list[str] = field(default_factory=list)
    served_modes: list[str] = field(default_factory=list)
    #: Responses by mode, 304s included.
    by_mode: dict[str, int] = field(default_factory=dict)


def _etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/ prefixes are ignored."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


class CriterSimulator:
    """Simulated CriTer cameras on one aiohttp server; see the module docstring.

    Use as `async with CriterSimulator(camera_ids(3), period=0.3) as sim: ... sim.url("SIM001")`.
    Camera `i` of `n` changes frame at `t0 + period * (k - i / n)`: staggered, so a poller
    never sees all cameras change together.
    """

    def __init__(
        self,
        camera_ids: Sequence[str],
        period: float = 60.0,
        modes: Mapping[str, str] | None = None,
        etag: bool = True,
        slow_seconds: float = 30.0,
        oversize_bytes: int = 16_000_000,
        frame: bytes | None = None,
        *,
        variants: int = DEFAULT_VARIANTS,
        encode_workers: int = 2,
    ) -> None:
        if period <= 0:
            raise ValueError("period must be > 0")
        if len(set(camera_ids)) != len(camera_ids):
            raise ValueError("camera ids must be unique")
        self.camera_ids = list(camera_ids)
        self.period = float(period)
        self.etag = etag
        self.slow_seconds = float(slow_seconds)
        self.oversize_bytes = int(oversize_bytes)
        self._frame = frame if frame is not None else fixture_frame()
        self._variants = variants
        self._factory: FrameFactory | None = None
        self._encode_workers = encode_workers
        self._index = {cid: i for i, cid in enumerate(self.camera_ids)}
        self._modes = dict.fromkeys(self.camera_ids, "ok")
        for cid, mode in (modes or {}).items():
            self.set_mode(cid, mode)
        self.stats: dict[str, ServedStats] = {cid: ServedStats() for cid in self.camera_ids}
        #: Bodies are a few dozen variants (and their truncated forms): bounded.
        self._digests: dict[bytes, str] = {}
        self._t0 = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.base_url = ""

    # -- frames --

    @property
    def factory(self) -> FrameFactory:
        # Built on first use: decoding the base frame costs ~15 ms that a simulator serving
        # only failure modes never needs.
        if self._factory is None:
            self._factory = frame_factory(self._frame, self._variants)
        return self._factory

    def tick(self, camera_id: str, now: float | None = None) -> int:
        """How many times this camera has republished since the simulator was made."""
        i = self._index[camera_id]
        t = (time.monotonic() if now is None else now) - self._t0
        return math.floor((t + self.period * i / len(self.camera_ids)) / self.period)

    def seconds_to_next_frame(self, camera_id: str) -> float:
        """Time until this camera publishes its next frame; lets tests avoid a boundary."""
        i = self._index[camera_id]
        t = time.monotonic() - self._t0 + self.period * i / len(self.camera_ids)
        return self.period - (t % self.period)

    def _variant(self, camera_id: str) -> int:
        # The camera's position shifts its cycle so cameras do not all show the same picture.
        return (self.tick(camera_id) + self._index[camera_id]) % self._variants

    def current_frame(self, camera_id: str) -> bytes:
        """The bytes an `ok` camera serves right now (encoded here if not cached yet)."""
        return self.factory.get(self._variant(camera_id))

    async def _current_frame_async(self, camera_id: str) -> bytes:
        index = self._variant(camera_id)
        body = self.factory.cached(index)
        if body is not None:
            return body
        # Encoding takes ~10 ms of CPU: off the loop, so other cameras keep being served.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.factory.get, index)

    def _digest(self, body: bytes) -> str:
        """SHA-256 of a body, once per distinct body: hashing 600 KB twice per request
        cost the simulator ~2 ms a request, a third of a core at 20,000 cameras."""
        digest = self._digests.get(body)
        if digest is None:
            digest = self._digests[body] = hashlib.sha256(body).hexdigest()
        return digest

    # -- control --

    def set_mode(self, camera_id: str, mode: str) -> None:
        """Switch a camera's behaviour; takes effect from its next request."""
        if camera_id not in self._index:
            raise KeyError(f"unknown camera {camera_id!r}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        self._modes[camera_id] = mode

    def mode(self, camera_id: str) -> str:
        return self._modes[camera_id]

    def url(self, camera_id: str) -> str:
        if camera_id not in self._index:
            raise KeyError(f"unknown camera {camera_id!r}")
        if not self.base_url:
            raise RuntimeError("simulator not started")
        return f"{self.base_url}{PATH_PREFIX}{camera_id}.JPG"

    # -- lifecycle --

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0 picks a free port); returns the base URL."""
        from aiohttp import web

        if self._runner is not None:
            raise RuntimeError("simulator already started")
        app = web.Application()
        app.router.add_get(PATH_PREFIX + "{name}", self._handle_image, allow_head=False)
        app.router.add_get("/health", self._handle_health, allow_head=False)
        app.router.add_get("/catalogue.json", self._handle_catalogue, allow_head=False)
        # A short shutdown grace: a `slow` response may have 30 s left to dribble.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._executor = ThreadPoolExecutor(
            max_workers=self._encode_workers, thread_name_prefix="lyoncam-sim-encode"
        )
        # `runner.addresses` (not TCPSite.port, aiohttp >= 3.12) to learn the port 0 picked.
        bound_port = int(runner.addresses[0][1]) if runner.addresses else port
        url_host = f"[{host}]" if ":" in host else host
        if host in ("0.0.0.0", "", "::"):
            url_host = "127.0.0.1"
        self.base_url = f"http://{url_host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def __aenter__(self) -> CriterSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- handlers --

    async def _handle_health(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        modes: dict[str, int] = {}
        for m in self._modes.values():
            modes[m] = modes.get(m, 0) + 1
        return web.json_response(
            {"status": "UP", "cameras": len(self.camera_ids), "period": self.period,
             "etag": self.etag, "modes": modes}
        )

    async def _handle_catalogue(self, request: web.Request) -> web.StreamResponse:
        """Rows shaped like the real JSON table (numeromaintenance, url, nom, lat, lon)."""
        from aiohttp import web

        values = []
        for i, cid in enumerate(self.camera_ids):
            values.append({
                "numeromaintenance": cid,
                "identifiant": 90000 + i + 1,
                "nom": f"Simulated camera {i + 1}",
                "libellelong": "lyoncam simulator",
                "typecamera": "Web",
                "fournisseur": "CRITER",
                "url": self.url(cid),
                # Spread over central Lyon so map-based tools have something to draw.
                "lat": round(45.75 + 0.002 * (i % 10), 6),
                "lon": round(4.83 + 0.002 * (i // 10 % 10), 6),
                "mode": self._modes[cid],
            })
        fields = list(values[0]) if values else ["numeromaintenance", "url"]
        return web.json_response({"fields": fields, "values": values})

    async def _handle_image(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        name = request.match_info["name"]
        cid = name.removesuffix(".JPG")
        if cid == name or cid not in self._index:
            return web.Response(status=404, body=_html_page("404 Not Found"),
                                content_type="text/html")
        st = self.stats[cid]
        st.requests += 1
        mode = self._modes[cid]
        st.by_mode[mode] = st.by_mode.get(mode, 0) + 1

        if mode in ("error", "notfound"):
            st.errors += 1
            status, text = (500, "500 Internal Server Error") if mode == "error" else (
                404, "404 Not Found")
            body = _html_page(text)
            st.bytes_sent += len(body)
            return web.Response(status=status, body=body, content_type="text/html")
        if mode == "html":
            return await self._stream(request, cid, mode, _html_page("Erreur"),
                                      content_type="text/html; charset=utf-8", record=False)
        if mode == "empty":
            return await self._stream(request, cid, mode, b"", record=False)
        if mode == "oversized":
            return await self._stream_oversized(request, cid)
        if mode == "placeholder":
            return await self._stream(request, cid, mode, placeholder_jpeg(), etag=True)
        frame = await self._current_frame_async(cid)
        if mode == "truncated":
            return await self._stream(request, cid, mode, truncate_jpeg(frame), etag=True)
        if mode == "slow":
            return await self._stream(request, cid, mode, frame, etag=True,
                                      duration=self.slow_seconds)
        if mode == "reset":
            return await self._stream(request, cid, mode, frame, abort_after=len(frame) // 2)
        return await self._stream(request, cid, mode, frame, etag=True)

    async def _stream(
        self,
        request: web.Request,
        cid: str,
        mode: str,
        body: bytes,
        *,
        content_type: str = "image/jpeg",
        etag: bool = False,
        record: bool = True,
        duration: float = 0.0,
        abort_after: int | None = None,
    ) -> web.StreamResponse:
        """A 200 the way CriTer sends it: chunked, no Content-Length, no Last-Modified."""
        from aiohttp import web

        st = self.stats[cid]
        headers = {"Content-Type": content_type}
        if etag and self.etag:
            tag = '"' + self._digest(body)[:32] + '"'
            headers["ETag"] = tag
            if _etag_matches(request.headers.get("If-None-Match"), tag):
                st.not_modified_304 += 1
                return web.Response(status=304, headers={"ETag": tag})
        resp = web.StreamResponse(status=200, headers=headers)
        await resp.prepare(request)
        st.ok_200 += 1
        if abort_after is not None:
            await resp.write(body[:abort_after])
            st.bytes_sent += abort_after
            st.errors += 1
            _abort(request)
            return resp
        pieces = list(_chunks(body, duration))
        delay = duration / len(pieces) if duration > 0 and pieces else 0.0
        try:
            for piece in pieces:
                if delay:
                    await asyncio.sleep(delay)
                await resp.write(piece)
                st.bytes_sent += len(piece)
            await resp.write_eof()
        except ConnectionError:
            # The client hung up (its timeout, its size limit): part of the test, not an error.
            st.client_aborts += 1
            return resp
        if record and content_type == "image/jpeg" and body:
            st.served_sha256.append(self._digest(body))
            st.served_modes.append(mode)
        return resp

    async def _stream_oversized(self, request: web.Request, cid: str) -> web.StreamResponse:
        """`oversize_bytes` of a plausible JPEG (real headers and scan data, repeated), streamed
        a chunk at a time so a 1 GB setting costs no memory, ending in EOI like a real frame."""
        from aiohttp import web

        st = self.stats[cid]
        resp = web.StreamResponse(status=200, headers={"Content-Type": "image/jpeg"})
        await resp.prepare(request)
        st.ok_200 += 1
        try:
            for piece in _oversized_body(self._frame, self.oversize_bytes):
                await resp.write(piece)
                st.bytes_sent += len(piece)
            await resp.write_eof()
        except ConnectionError:
            st.client_aborts += 1
        return resp


def _chunks(body: bytes, duration: float) -> Iterator[bytes]:
    # Slow bodies go out in ~4 pieces a second so a client timeout fires mid-body.
    n = max(1, math.ceil(len(body) / CHUNK))
    if duration > 0:
        n = max(n, min(len(body), math.ceil(duration * 4)))
    size = max(1, math.ceil(len(body) / n)) if body else 1
    for i in range(0, len(body), size):
        yield body[i : i + size]


def _oversized_body(frame: bytes, total: int) -> Iterator[bytes]:
    sos = frame.find(b"\xff\xda")
    head = frame[: sos + 2 + int.from_bytes(frame[sos + 2 : sos + 4], "big")] if sos > 0 else (
        b"\xff\xd8")
    scan = frame[len(head) : -2] or b"\x00"
    if total <= len(head) + 2:
        yield (head + b"\xff\xd9")[:total]
        return
    block = (scan * (CHUNK // len(scan) + 2))[:CHUNK]
    # A cut through FF D9 / a marker would be harmless but make the size check the only clue.
    block = block.replace(b"\xff\xd9", b"\xff\x00")
    yield head
    left = total - len(head) - 2
    while left > 0:
        piece = block[: min(left, CHUNK)]
        left -= len(piece)
        if piece.endswith(b"\xff"):
            piece = piece[:-1] + b"\x00"
        yield piece
    yield b"\xff\xd9"


def _abort(request: web.Request) -> None:
    """Close with a TCP RST (SO_LINGER 0), like a proxy dropping the connection mid-body."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# --- demo config and CLI ---------------------------------------------------------------------


def demo_config(
    base_url: str,
    camera_ids: Sequence[str],
    data_dir: str = "./demo-data",
    interval: float = 10,
) -> str:
    """YAML for `run` polling the simulator: its placeholder's SHA-256 is listed so it is
    recognised like the real one. `interval` below 10 s is refused by `check` and `run`
    (config floor), which is why `--interval` refuses it first (`_interval_arg`)."""
    import yaml

    base = base_url.rstrip("/")
    doc = {
        "data_dir": data_dir,
        "placeholder_sha256": [placeholder_sha256()],
        # Simulated cameras stand where real ones do (daylight works), but a demo must
        # not ask the weather service about frames that were never taken there.
        "weather": {"enabled": False},
        "defaults": {"interval": interval, "timeout": min(20.0, float(interval))},
        "cameras": [
            {"id": cid, "url": f"{base}{PATH_PREFIX}{cid}.JPG", "name": f"Simulated camera {cid}",
             "lat": LYON_PLACES[i % len(LYON_PLACES)][0],
             "lon": LYON_PLACES[i % len(LYON_PLACES)][1]}
            for i, cid in enumerate(camera_ids)
        ],
    }
    header = (
        f"# lyoncam demo: cameras served by `python -m lyoncam_daemon simulate` at {base}\n"
        "# Relative data_dir is taken from this file's folder.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False)


def _mode_arg(text: str) -> tuple[str, str]:
    cid, sep, mode = text.partition("=")
    if not sep or not cid or mode not in MODES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected ID=MODE with MODE one of {', '.join(MODES)}"
        )
    return cid, mode


def _interval_arg(text: str) -> float:
    """`--interval` within the config's limits, so `--write-config` never writes a file that
    `check` refuses. Refused rather than clamped: a config polling at another rate than the
    one asked for would surprise later."""
    from lyoncam_daemon.config import MAX_DURATION_S, MIN_INTERVAL_S  # not at --help

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not MIN_INTERVAL_S <= value <= MAX_DURATION_S:  # NaN fails this too
        raise argparse.ArgumentTypeError(
            f"must be from {MIN_INTERVAL_S:g} to {MAX_DURATION_S:g} s, not {text}: lyoncam never "
            f"polls a camera more often than every {MIN_INTERVAL_S:g} s")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cameras", type=int, default=4, metavar="N",
                        help="number of cameras, SIM001..SIMnnn (default: 4)")
    parser.add_argument("--period", type=float, default=60.0, metavar="S",
                        help="seconds between new frames of a camera (default: 60, like CriTer)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8090, help="port (default: 8090; 0 = any)")
    parser.add_argument("--mode", type=_mode_arg, action="append", default=[],
                        metavar="ID=MODE",
                        help=f"failure mode of one camera, repeatable; MODE: {', '.join(MODES)}")
    parser.add_argument("--no-etag", dest="etag", action="store_false",
                        help="send no ETag (and so never 304), in case the real server does not")
    parser.add_argument("--slow-seconds", type=float, default=30.0, metavar="S",
                        help="how long a `slow` camera takes to send its body (default: 30)")
    parser.add_argument("--oversize-bytes", type=int, default=16_000_000, metavar="B",
                        help="body size of an `oversized` camera (default: 16000000)")
    parser.add_argument("--write-config", type=Path, default=None, metavar="PATH",
                        help="write a lyoncam config polling these cameras to PATH, for `run`")
    parser.add_argument("--data-dir", default="./demo-data",
                        help="data_dir of the written config (default: ./demo-data, relative "
                        "to the config file's folder)")
    parser.add_argument("--interval", type=_interval_arg, default=10.0, metavar="S",
                        help="poll interval of the written config (default: 10, the minimum)")


def _write_text(path: Path, text: str) -> None:
    # Via a rename: a script waiting for the file to appear must never read half of it.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


async def _serve(args: argparse.Namespace, modes: Mapping[str, str]) -> int:
    ids = camera_ids(args.cameras)
    sim = CriterSimulator(ids, period=args.period, modes=modes, etag=args.etag,
                          slow_seconds=args.slow_seconds, oversize_bytes=args.oversize_bytes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        base = await sim.start(args.host, args.port)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    try:
        if args.write_config is not None:
            path: Path = args.write_config
            text = demo_config(base, ids, args.data_dir, args.interval)
            await asyncio.to_thread(_write_text, path, text)
            log.info("wrote config %s", path)
        special = {c: sim.mode(c) for c in ids if sim.mode(c) != "ok"}
        log.info("simulating %d cameras at %s (period %g s, etag %s%s); e.g. %s",
                 len(ids), base, args.period, "on" if args.etag else "off",
                 f", modes {special}" if special else "", sim.url(ids[0]) if ids else base)
        await stop.wait()
        log.info("stopping")
    finally:
        await sim.stop()
    return 0


def main(args: argparse.Namespace) -> int:
    """`simulate`: serve until SIGINT/SIGTERM; 0 then, 2 on bad arguments."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cameras < 1 or args.period <= 0 or args.slow_seconds < 0 or args.oversize_bytes < 0:
        print("error: --cameras must be >= 1, --period > 0, --slow-seconds and "
              "--oversize-bytes >= 0", file=sys.stderr)
        return 2
    ids = set(camera_ids(args.cameras))
    modes: dict[str, str] = {}
    for cid, mode in args.mode:
        if cid not in ids:
            print(f"error: --mode {cid}={mode}: no camera {cid} (cameras are SIM001.."
                  f"SIM{args.cameras:03d})", file=sys.stderr)
            return 2
        modes[cid] = mode
    return asyncio.run(_serve(args, modes))

