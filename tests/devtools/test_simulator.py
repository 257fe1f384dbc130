"""The simulated CriTer server behaves like the real one, and each failure mode as promised.

Everything runs against the server on 127.0.0.1 with a real aiohttp client, because the
point of the simulator is what goes over the wire (chunking, headers, resets).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image, ImageChops

from lyoncam_daemon.config import parse_config
from lyoncam_daemon.devtools import simulator
from lyoncam_daemon.devtools.simulator import (
    MODES,
    PATH_PREFIX,
    CriterSimulator,
    camera_ids,
    demo_config,
    placeholder_jpeg,
    placeholder_sha256,
)
from lyoncam_daemon.frames.fingerprint import fingerprint
from lyoncam_daemon.frames.judge import LastFrame, Looks, Outcome, Rules, decide

ROOT = Path(__file__).resolve().parents[2]
SLOW_S = 0.4
OVERSIZE = 3_000_000


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def sim() -> AsyncIterator[CriterSimulator]:
    """One camera per mode, named after it in `modes`; a long period so frames hold still."""
    ids = camera_ids(len(MODES))
    modes = dict(zip(ids, MODES, strict=True))
    async with CriterSimulator(
        ids, period=600, modes=modes, slow_seconds=SLOW_S, oversize_bytes=OVERSIZE
    ) as s:
        yield s


def cam(sim: CriterSimulator, mode: str) -> str:
    return next(c for c in sim.camera_ids if sim.mode(c) == mode)


def assert_like_criter(resp: aiohttp.ClientResponse) -> None:
    """Chunked with no Content-Length and no Last-Modified, as docs/FIELD_NOTES.md describes."""
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in resp.headers
    assert "Last-Modified" not in resp.headers


def test_camera_ids_are_valid_lyoncam_ids() -> None:
    ids = camera_ids(12)
    assert ids[:3] == ["SIM001", "SIM002", "SIM003"] and len(set(ids)) == 12
    text = demo_config("http://127.0.0.1:1", ids)
    assert [c.id for c in parse_config(text).cameras] == ids


async def test_ok_serves_current_frame_like_criter(
    sim: CriterSimulator, client: aiohttp.ClientSession
) -> None:
    c = cam(sim, "ok")
    assert sim.url(c) == f"{sim.base_url}{PATH_PREFIX}{c}.JPG"
    assert sim.url(c).endswith("/files/rdata/pvo_patrimoine_voirie.pvocameracriter/SIM001.JPG")
    async with client.get(sim.url(c)) as resp:
        body = await resp.read()
        assert resp.status == 200
        assert resp.content_type == "image/jpeg"
        assert_like_criter(resp)
        assert resp.headers["ETag"].startswith('"')
    assert body == sim.current_frame(c)
    assert body[:2] == b"\xff\xd8" and body.endswith(b"\xff\xd9")
    img = Image.open(io.BytesIO(body))
    assert img.size == (1920, 1080)
    exif = img.getexif()
    assert exif.get(0x010F) == "AXIS" and exif.get(0x0110) == "P1447-LE"
    assert exif.get(0x0132)  # DateTime
    st = sim.stats[c]
    assert (st.requests, st.ok_200, st.errors, st.bytes_sent) == (1, 1, 0, len(body))
    assert st.served_sha256 == [hashlib.sha256(body).hexdigest()]


async def test_etag_round_trip(sim: CriterSimulator, client: aiohttp.ClientSession) -> None:
    c = cam(sim, "ok")
    async with client.get(sim.url(c)) as resp:
        await resp.read()
        etag = resp.headers["ETag"]
    async with client.get(sim.url(c), headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
        assert await resp.read() == b""
        assert resp.headers["ETag"] == etag
    async with client.get(sim.url(c), headers={"If-None-Match": f'"other", W/{etag}'}) as resp:
        assert resp.status == 304
    async with client.get(sim.url(c), headers={"If-None-Match": '"stale"'}) as resp:
        assert resp.status == 200
        await resp.read()
    st = sim.stats[c]
    assert (st.requests, st.ok_200, st.not_modified_304) == (4, 2, 2)
    assert len(st.served_sha256) == 2  # a 304 serves no body


async def test_no_etag_when_off(client: aiohttp.ClientSession) -> None:
    async with CriterSimulator(camera_ids(1), etag=False) as sim:
        url = sim.url("SIM001")
        async with client.get(url) as resp:
            await resp.read()
            assert resp.status == 200 and "ETag" not in resp.headers
        async with client.get(url, headers={"If-None-Match": "*"}) as resp:
            assert resp.status == 200
            assert await resp.read() == sim.current_frame("SIM001")


async def test_placeholder(sim: CriterSimulator, client: aiohttp.ClientSession) -> None:
    c = cam(sim, "placeholder")
    async with client.get(sim.url(c)) as resp:
        body = await resp.read()
        assert resp.status == 200 and resp.content_type == "image/jpeg"
        assert_like_criter(resp)
    assert body == placeholder_jpeg() == simulator.placeholder_jpeg()
    assert hashlib.sha256(body).hexdigest() == placeholder_sha256()
    assert Image.open(io.BytesIO(body)).size == (300, 200)
    assert sim.stats[c].served_modes == ["placeholder"]


async def test_truncated_has_no_eoi_in_tail(
    sim: CriterSimulator, client: aiohttp.ClientSession
) -> None:
    c = cam(sim, "truncated")
    async with client.get(sim.url(c)) as resp:
        body = await resp.read()
        assert resp.status == 200 and resp.content_type == "image/jpeg"
    full = sim.current_frame(c)
    assert full.startswith(body) and 0.3 * len(full) < len(body) < 0.8 * len(full)
    assert body[:2] == b"\xff\xd8"
    assert b"\xff\xd9" not in body[-4096:]


async def test_error_html_empty_notfound(
    sim: CriterSimulator, client: aiohttp.ClientSession
) -> None:
    async with client.get(sim.url(cam(sim, "error"))) as resp:
        assert resp.status == 500
        await resp.read()
    async with client.get(sim.url(cam(sim, "notfound"))) as resp:
        assert resp.status == 404
        await resp.read()
    async with client.get(sim.url(cam(sim, "html"))) as resp:
        body = await resp.read()
        assert resp.status == 200 and resp.content_type == "text/html"
        assert body.lstrip().lower().startswith(b"<!doctype html")
    async with client.get(sim.url(cam(sim, "empty"))) as resp:
        assert resp.status == 200 and resp.content_type == "image/jpeg"
        assert_like_criter(resp)
        assert await resp.read() == b""
    assert sim.stats[cam(sim, "error")].errors == 1
    assert sim.stats[cam(sim, "notfound")].errors == 1
    for mode in ("html", "empty"):
        st = sim.stats[cam(sim, mode)]
        assert (st.ok_200, st.errors, st.served_sha256) == (1, 0, [])


async def test_oversized_streams_past_the_limit(
    sim: CriterSimulator, client: aiohttp.ClientSession
) -> None:
    c = cam(sim, "oversized")
    size, head = 0, b""
    async with client.get(sim.url(c)) as resp:
        assert resp.status == 200 and resp.content_type == "image/jpeg"
        assert_like_criter(resp)
        chunks = 0
        async for chunk in resp.content.iter_any():
            head = head or chunk[:2]
            size += len(chunk)
            chunks += 1
    assert head == b"\xff\xd8" and size == OVERSIZE and chunks > 1
    assert sim.stats[c].bytes_sent == OVERSIZE


async def test_client_can_abandon_oversized(
    sim: CriterSimulator, client: aiohttp.ClientSession
) -> None:
    """A client enforcing max_frame_bytes hangs up early; the server shrugs it off."""
    c = cam(sim, "oversized")
    sim.oversize_bytes = 1_000_000_000  # far more than socket buffers can swallow
    async with client.get(sim.url(c)) as resp:
        await resp.content.readexactly(100_000)
        resp.close()
    async with client.get(sim.base_url + "/health") as resp:
        assert resp.status == 200
    for _ in range(100):
        if sim.stats[c].client_aborts:
            break
        await asyncio.sleep(0.02)
    assert sim.stats[c].client_aborts == 1


async def test_reset_raises_client_error(
    sim: CriterSimulator, client: aiohttp.ClientSession
) -> None:
    c = cam(sim, "reset")
    with pytest.raises(aiohttp.ClientError):
        async with client.get(sim.url(c)) as resp:
            assert resp.status == 200
            await resp.read()
    st = sim.stats[c]
    assert st.errors == 1 and st.served_sha256 == []
    assert 0 < st.bytes_sent < len(sim.current_frame(c))


async def test_slow_takes_slow_seconds(
    sim: CriterSimulator, client: aiohttp.ClientSession
) -> None:
    c = cam(sim, "slow")
    start = time.monotonic()
    async with client.get(sim.url(c)) as resp:
        # headers first, then the dribble: most of the body is still to come
        assert not resp.content.at_eof()
        assert resp.content.total_bytes < len(sim.current_frame(c)) / 2
        body = await resp.read()
    took = time.monotonic() - start
    assert took >= SLOW_S  # a lower bound: a loaded machine only makes it longer
    assert body == sim.current_frame(c)
    # ... and a client timeout shorter than that fires mid-body.
    with pytest.raises(asyncio.TimeoutError):
        async with client.get(sim.url(c), timeout=aiohttp.ClientTimeout(total=SLOW_S / 3)) as r:
            await r.read()


async def test_set_mode_at_run_time(sim: CriterSimulator, client: aiohttp.ClientSession) -> None:
    c = cam(sim, "ok")
    sim.set_mode(c, "error")
    async with client.get(sim.url(c)) as resp:
        assert resp.status == 500
    sim.set_mode(c, "ok")
    async with client.get(sim.url(c)) as resp:
        assert resp.status == 200
        await resp.read()
    with pytest.raises(ValueError):
        sim.set_mode(c, "bogus")
    with pytest.raises(KeyError):
        sim.set_mode("NOPE", "ok")


async def test_unknown_camera_is_404(sim: CriterSimulator, client: aiohttp.ClientSession) -> None:
    async with client.get(f"{sim.base_url}{PATH_PREFIX}CWL9018.JPG") as resp:
        assert resp.status == 404


async def test_health_and_catalogue(sim: CriterSimulator, client: aiohttp.ClientSession) -> None:
    async with client.get(sim.base_url + "/health") as resp:
        health = await resp.json()
    assert health["status"] == "UP" and health["cameras"] == len(MODES)
    async with client.get(sim.base_url + "/catalogue.json") as resp:
        rows = (await resp.json())["values"]
    assert [r["numeromaintenance"] for r in rows] == sim.camera_ids
    assert [r["url"] for r in rows] == [sim.url(c) for c in sim.camera_ids]


def _car_sized_change(a: bytes, b: bytes) -> tuple[int, int]:
    """Size of the box holding all clearly changed pixels (JPEG noise ignored)."""
    diff = ImageChops.difference(
        Image.open(io.BytesIO(a)).convert("L"), Image.open(io.BytesIO(b)).convert("L")
    )
    box = diff.point(lambda v: 255 if v > 40 else 0).getbbox()
    assert box is not None
    return box[2] - box[0], box[3] - box[1]


async def test_frames_change_every_period_and_visibly(client: aiohttp.ClientSession) -> None:
    period = 0.3
    async with CriterSimulator(camera_ids(3), period=period) as sim:
        c = "SIM002"
        seen: list[bytes] = []
        deadline = time.monotonic() + 2.5
        while len(seen) < 3 and time.monotonic() < deadline:
            async with client.get(sim.url(c)) as resp:
                body = await resp.read()
            if not seen or body != seen[-1]:
                seen.append(body)
            await asyncio.sleep(period / 6)
        assert len(seen) == 3, "a camera must publish a new frame every period"
        for a, b in itertools.pairwise(seen):
            w, h = _car_sized_change(a, b)
            assert w >= 100 and h >= 100
        # Cameras are staggered: they do not all change at the same instant.
        waits = sorted(sim.seconds_to_next_frame(x) for x in sim.camera_ids)
        assert waits[-1] - waits[0] > period / 4
        served = sim.stats[c].served_sha256
        assert set(served) == {hashlib.sha256(x).hexdigest() for x in seen}
        assert len(served) == sim.stats[c].ok_200 == sim.stats[c].requests


def test_consecutive_frames_are_new_scenes_for_the_default_dedup() -> None:
    """Every frame the simulator publishes must be `stored` by lyoncam's default settings
    against the one before, or tests counting stored frames would count the dedup instead."""
    defaults = parse_config("cameras:\n  - id: A\n    url: http://127.0.0.1:9/a.jpg\n")
    algo, size = defaults.dedup.hash, defaults.dedup.hash_size
    rules = Rules(threshold=defaults.cameras[0].threshold)
    sim = CriterSimulator(["SIM001"], period=1)
    frames = [sim.factory.get(i) for i in range(4)]
    for before, after in itertools.pairwise(frames):
        last = LastFrame(hashlib.sha256(before).hexdigest(), fingerprint(before, algo, size))
        verdict = decide(after, last, rules, lambda d: Looks(fingerprint(d, algo, size)))
        assert verdict.outcome is Outcome.STORED, verdict.distance


def test_demo_config_validates(tmp_path: Path) -> None:
    ids = camera_ids(4)
    text = demo_config("http://127.0.0.1:8090/", ids, data_dir="./demo-data", interval=10)
    config = parse_config(text, base_dir=tmp_path)
    assert [c.id for c in config.cameras] == ids
    assert config.cameras[0].url == (
        "http://127.0.0.1:8090/files/rdata/pvo_patrimoine_voirie.pvocameracriter/SIM001.JPG"
    )
    assert config.data_dir == tmp_path / "demo-data"
    assert config.cameras[0].interval == 10
    assert placeholder_sha256() in config.placeholder_sha256


def test_cli_arguments() -> None:
    parser = argparse.ArgumentParser()
    simulator.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.cameras, args.etag) == ("127.0.0.1", 8090, 4, True)
    args = parser.parse_args(
        ["--cameras", "5", "--mode", "SIM003=truncated", "--mode", "SIM004=slow", "--no-etag"]
    )
    assert args.mode == [("SIM003", "truncated"), ("SIM004", "slow")] and not args.etag
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "SIM003=bogus"])
    args = parser.parse_args(["--cameras", "2", "--mode", "SIM009=slow"])
    assert simulator.main(args) == 2


def test_simulate_command_serves_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    """The real `python -m lyoncam_daemon simulate` process: writes a config, serves, stops."""
    import urllib.request

    cfg = tmp_path / "cams.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lyoncam_daemon", "simulate", "--cameras", "2", "--port", "0",
         "--mode", "SIM002=placeholder", "--write-config", str(cfg)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 10
        while not cfg.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        config = parse_config(cfg.read_text(), base_dir=tmp_path)
        with urllib.request.urlopen(config.cameras[1].url, timeout=5) as resp:
            body = resp.read()
        assert hashlib.sha256(body).hexdigest() in config.placeholder_sha256
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "http://127.0.0.1:" in err


async def test_demo_cameras_stand_in_lyon_so_their_frames_get_a_daypart(tmp_path: Path) -> None:
    """The demo's report is about dayparts like a real collection's, never all `unknown`."""
    from datetime import UTC, datetime

    from lyoncam_daemon.config import Config
    from lyoncam_daemon.enrich.build import build_enrichers

    config = parse_config(demo_config("http://127.0.0.1:8090/", camera_ids(10)),
                          base_dir=tmp_path)
    places = {(c.lat, c.lon) for c in config.cameras}
    assert len(places) == len(simulator.LYON_PLACES)
    assert all(45.6 < lat < 45.9 and 4.7 < lon < 5.0 for lat, lon in places)  # type: ignore[operator]
    assert isinstance(config, Config)
    enrichers = build_enrichers(config)
    assert [e.name for e in enrichers] == ["daylight", "imagestats"]  # no weather in a demo
    midnight = datetime(2026, 12, 6, 23, 0, tzinfo=UTC)
    fields = await enrichers[0](config.cameras[0], midnight, None)  # type: ignore[arg-type]
    assert fields["daypart"] == "night"
