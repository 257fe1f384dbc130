"""A loopback camera that serves whatever frame a test gives it, and the frames to give it:
the real CWL9018 frame with its own sensor noise per poll, a copy, a small person."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from aiohttp import web
from PIL import Image

from bench.pairs import noisy
from bench.roadusers import person

FIXTURE = Path(__file__).parent / "fixtures" / "CWL9018_night.jpg"


class Scene:
    """One camera URL; `body` is what the next poll gets (no validators: bytes decide)."""

    def __init__(self) -> None:
        self.body = b""
        self.polls = 0
        self.url = ""

    async def _serve(self, request: web.Request) -> web.Response:
        self.polls += 1
        return web.Response(body=self.body, content_type="image/jpeg")


@asynccontextmanager
async def serving() -> AsyncIterator[Scene]:
    scene = Scene()
    app = web.Application()
    app.router.add_get("/CAM.JPG", scene._serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    scene.url = f"http://127.0.0.1:{runner.addresses[0][1]}/CAM.JPG"
    try:
        yield scene
    finally:
        await runner.cleanup()


def encode(im: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def poll(seed: int, with_person: int = 0) -> bytes:
    """The real frame as one poll sees it (its own noise), with a `with_person` px tall
    person on the carriageway if asked."""
    frame = noisy(Image.open(FIXTURE).convert("RGB"), 2.0, seed)
    if with_person:
        im, alpha = person(with_person, np.random.default_rng(7), stride=0)
        frame.paste(im, (900, 800 - im.size[1]), alpha)
    return encode(frame)
