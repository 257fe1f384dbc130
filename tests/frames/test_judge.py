"""The outcome chain and the near-duplicate rule, on cases built from the real frame.

The settings under test are the recommended ones (phash 64x64, threshold 64 bits of
4096); see bench/dedup.py for how they were chosen.
"""

from __future__ import annotations

import concurrent.futures
import io
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from lyoncam_daemon.config import CameraConfig, DedupSettings
from lyoncam_daemon.frames.change import Reference, reference
from lyoncam_daemon.frames.fingerprint import (
    CorruptFrame,
    Fingerprint,
    RoiMask,
    decode_gray,
    fingerprint,
    working_size,
)
from lyoncam_daemon.frames.jpeg import sha256_hex
from lyoncam_daemon.frames.judge import (
    DedupSetupError,
    Judge,
    LastFrame,
    Looks,
    Outcome,
    Rules,
    Verdict,
    decide,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "CWL9018_night.jpg"
ALGO, SIZE, THRESHOLD = "phash", 64, 64
SETTINGS = DedupSettings(hash=ALGO, hash_size=SIZE)
CAR = (150, 130)


# --- building frames -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def src() -> bytes:
    return FIXTURE.read_bytes()


@pytest.fixture(scope="module")
def frame(src: bytes) -> Image.Image:
    return Image.open(io.BytesIO(src)).convert("RGB")


def encode(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def dark_car(level: int) -> tuple[Image.Image, Image.Image]:
    """A car shape at night: grey body, darker glass and tyres, soft edges, with alpha."""
    w, h = CAR
    car, alpha = Image.new("RGB", CAR), Image.new("L", CAR, 0)
    d, a = ImageDraw.Draw(car), ImageDraw.Draw(alpha)
    parts = (((5, 30, w - 5, h - 10), 18, level), ((25, 5, w - 25, 50), 14, level + 8))
    for box, r, shade in parts:
        d.rounded_rectangle(box, r, fill=(shade,) * 3)
        a.rounded_rectangle(box, r, fill=255)
    d.rectangle((35, 12, w - 35, 42), fill=(max(level - 20, 0),) * 3)
    for cx in (30, w - 30):
        d.ellipse((cx - 14, h - 30, cx + 14, h - 2), fill=(10, 10, 10))
        a.ellipse((cx - 14, h - 30, cx + 14, h - 2), fill=255)
    blur = ImageFilter.GaussianBlur(1.5)
    return car.filter(blur), alpha.filter(blur)


def with_car(frame: Image.Image, car: Image.Image | tuple[Image.Image, Image.Image],
             at: tuple[int, int]) -> Image.Image:
    out = frame.copy()
    if isinstance(car, tuple):
        out.paste(car[0], at, car[1])
    else:
        out.paste(car, at)
    return out


def noisy(frame: Image.Image, sigma: float, seed: int) -> Image.Image:
    px = np.asarray(frame, dtype=np.float32)
    px = px + np.random.default_rng(seed).normal(0, sigma, px.shape)
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))


def with_size(data: bytes, width: int, height: int) -> bytes:
    at = data.index(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


# --- the judge -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        yield ex


def camera(**kw: Any) -> CameraConfig:
    return CameraConfig(id="CWL9018", url="http://127.0.0.1/CWL9018.JPG",
                        threshold=kw.pop("threshold", THRESHOLD), **kw)


def cells(data: bytes) -> Reference:
    """The local test's reference a camera keeps of a stored frame."""
    pixels, full = decode_gray(data, working_size(ALGO, SIZE))
    return reference(pixels, full)


def stored(data: bytes) -> LastFrame:
    """The LastFrame a camera holds after storing `data`."""
    return LastFrame(sha256_hex(data), fingerprint(data, ALGO, SIZE), cells(data))


class NoDecode(concurrent.futures.Executor):
    """Runs the judge's work inline; `judged` makes any decode fail the test."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _no_decode(data: bytes, mask: object, ref: object = None) -> Any:
    raise AssertionError("decoded although the byte checks should have decided")


async def judged(data: bytes, last: LastFrame | None, pool: concurrent.futures.Executor,
                 cam: CameraConfig | None = None, **judge_kw: Any) -> Verdict:
    judge = Judge(judge_kw.pop("settings", SETTINGS), judge_kw.pop("placeholders", ()), pool,
                  **judge_kw)
    if isinstance(pool, NoDecode):
        setattr(judge, "look", _no_decode)  # noqa: B010 - a method replaced on one instance
    return await judge.judge(cam or camera(), data, last)


# --- a car-sized object is new -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("car", "before", "after"),
    [
        ("crop", None, (700, 700)),
        ("crop", (300, 800), (900, 560)),
        ("dark45", None, (420, 820)),
        ("dark60", (1000, 600), (640, 760)),
        ("low70", None, (880, 780)),
        ("low70", (500, 560), (560, 560)),  # moved by only 60 px
    ],
)
async def test_car_appearing_or_moving_is_stored(
    src: bytes, frame: Image.Image, pool: concurrent.futures.Executor, car: str,
    before: tuple[int, int] | None, after: tuple[int, int],
) -> None:
    sprite: Image.Image | tuple[Image.Image, Image.Image]
    if car == "crop":  # a piece of the frame itself: the direction signs, realistic contrast
        sprite = frame.crop((1560, 915, 1560 + CAR[0], 915 + CAR[1]))
    else:
        sprite = dark_car({"dark45": 45, "dark60": 60, "low70": 70}[car])
    previous = src if before is None else encode(with_car(frame, sprite, before))
    current = encode(with_car(frame, sprite, after))
    verdict = await judged(current, stored(previous), pool)
    assert verdict.outcome is Outcome.STORED
    assert verdict.distance is not None and verdict.distance > THRESHOLD
    assert verdict.fingerprint == fingerprint(current, ALGO, SIZE)
    assert (verdict.width, verdict.height, verdict.truncated) == (1920, 1080, False)
    assert verdict.exif_datetime is None  # Pillow's re-encode dropped the EXIF


def test_low_contrast_car_really_is_low_contrast(frame: Image.Image) -> None:
    # Guard on the test data itself: the night car differs from the road by a few tens
    # of grey levels, not a white box.
    at = (880, 780)
    road = np.asarray(frame.convert("L").crop((*at, at[0] + CAR[0], at[1] + CAR[1])), float)
    car = np.asarray(with_car(frame, dark_car(70), at).convert("L")
                     .crop((*at, at[0] + CAR[0], at[1] + CAR[1])), float)
    assert 10 < abs(road.mean() - car.mean()) < 50


# --- the same scene is a near-duplicate --------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda f: encode(f, 85), id="re-encode q85"),
        pytest.param(lambda f: encode(f, 75), id="re-encode q75"),
        pytest.param(lambda f: encode(noisy(f, 4, 0), 85), id="noise sigma 4"),
        pytest.param(lambda f: encode(noisy(f, 8, 1), 85), id="noise sigma 8"),
        pytest.param(lambda f: encode(ImageEnhance.Brightness(f).enhance(1.05), 85), id="+5%"),
        pytest.param(lambda f: encode(ImageEnhance.Brightness(f).enhance(0.95), 75), id="-5%"),
    ],
)
async def test_same_scene_is_near_duplicate(
    src: bytes, frame: Image.Image, pool: concurrent.futures.Executor,
    make: Callable[[Image.Image], bytes],
) -> None:
    data = make(frame)
    assert data != src
    verdict = await judged(data, stored(src), pool)
    assert verdict.outcome is Outcome.NEAR_DUPLICATE
    assert verdict.distance is not None and verdict.distance <= THRESHOLD
    assert verdict.fingerprint is not None


async def test_two_noisy_frames_of_the_same_scene(frame: Image.Image,
                                                  pool: concurrent.futures.Executor) -> None:
    a, b = encode(noisy(frame, 6, 10), 85), encode(noisy(frame, 6, 11), 85)
    assert (await judged(b, stored(a), pool)).outcome is Outcome.NEAR_DUPLICATE


# --- region of interest ----------------------------------------------------------------------


async def test_ignored_region_hides_the_moved_car(
    src: bytes, frame: Image.Image, pool: concurrent.futures.Executor, tmp_path: Path
) -> None:
    sprite = dark_car(45)
    previous = encode(with_car(frame, sprite, (420, 820)))
    current = encode(with_car(frame, sprite, (700, 820)))
    assert (await judged(current, stored(previous), pool)).outcome is Outcome.STORED

    cam = camera(ignore=((400, 800, 470, 170),))
    settings_mask = Judge(SETTINGS, (), pool, cameras=[cam])
    mask = RoiMask.load(cam.ignore)
    last = LastFrame(sha256_hex(previous), fingerprint(previous, ALGO, SIZE, mask),
                     cells(previous))
    verdict = await settings_mask.judge(cam, current, last)
    assert verdict.outcome is Outcome.NEAR_DUPLICATE

    # The same with a mask image (black = ignored), at a smaller size than the frame.
    img = Image.new("L", (480, 270), 255)
    img.paste(0, (100, 200, 100 + 118, 200 + 43))
    path = tmp_path / "mask.png"
    img.save(path)
    cam_img = camera(mask=path)
    last_img = LastFrame(sha256_hex(previous),
                         fingerprint(previous, ALGO, SIZE, RoiMask.load((), path)),
                         cells(previous))
    assert (await judged(current, last_img, pool, cam_img)).outcome is Outcome.NEAR_DUPLICATE


async def test_bad_mask_path_is_a_construction_error(tmp_path: Path,
                                                     pool: concurrent.futures.Executor) -> None:
    with pytest.raises(DedupSetupError, match=r"missing-mask\.png"):
        Judge(SETTINGS, (), pool, cameras=[camera(mask=tmp_path / "missing-mask.png")])


# --- the cheap outcomes ----------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"<!DOCTYPE html><html><body>503</body></html>",
                                  b"\x89PNG\r\n\x1a\n" + bytes(100)])
async def test_not_an_image(body: bytes, src: bytes) -> None:
    verdict = await judged(body, stored(src), NoDecode())
    assert verdict.outcome is Outcome.NOT_IMAGE
    assert verdict.sha256 == sha256_hex(body)


async def test_random_bytes_after_soi_are_corrupt(src: bytes) -> None:
    body = b"\xff\xd8\xff" + np.random.default_rng(3).bytes(200_000)
    verdict = await judged(body, stored(src), NoDecode())
    assert verdict.outcome is Outcome.CORRUPT


async def test_undecodable_scan_is_corrupt(src: bytes, pool: concurrent.futures.Executor) -> None:
    # Valid header, then the entropy-coded data replaced by noise: only the decoder can tell.
    sos = src.index(b"\xff\xda")
    body = src[:sos] + b"\xff\xda\x00\x02" + b"\x00" * 64 + b"\xff\xd9"
    verdict = await judged(body, stored(src), pool)
    assert verdict.outcome is Outcome.CORRUPT
    assert verdict.reason


async def test_truncated_drop_and_keep(src: bytes, pool: concurrent.futures.Executor) -> None:
    cut = src[:141_620]
    dropped = await judged(cut, None, NoDecode())
    assert (dropped.outcome, dropped.truncated, dropped.fingerprint) == (
        Outcome.TRUNCATED, True, None)
    kept = await judged(cut, None, pool, camera(truncated="keep"))
    assert (kept.outcome, kept.truncated) == (Outcome.STORED, True)
    assert kept.fingerprint is not None and kept.width == 1920


async def test_too_large_is_refused_without_decoding(src: bytes) -> None:
    bomb = with_size(src, 60000, 60000)
    verdict = await judged(bomb, stored(src), NoDecode())
    assert (verdict.outcome, verdict.width, verdict.height) == (Outcome.TOO_LARGE, 60000, 60000)


async def test_placeholder_by_sha(src: bytes) -> None:
    verdict = await judged(src, None, NoDecode(), placeholders=[sha256_hex(src)])
    assert verdict.outcome is Outcome.PLACEHOLDER
    # The built-in one is always there, whatever the configuration lists.
    judge = Judge(SETTINGS, (), NoDecode())
    assert "8be14bdafb0b8b688651206d02fad0656c0be2095c0e18c36945f74a8f598bdd" in (
        judge.placeholder_sha256
    )


async def test_placeholder_by_image(tmp_path: Path, pool: concurrent.futures.Executor,
                                    src: bytes) -> None:
    card = Image.new("RGB", (300, 200), (200, 200, 200))
    ImageDraw.Draw(card).text((80, 90), "Image indisponible", fill=(20, 20, 20))
    path = tmp_path / "indisponible.png"
    card.save(path)
    settings = SETTINGS.model_copy(update={"placeholder_images": (path,)})
    served = encode(card, 70)  # the server's copy: other bytes, same picture
    verdict = await judged(served, stored(src), pool, settings=settings)
    assert verdict.outcome is Outcome.PLACEHOLDER
    assert verdict.distance is not None and verdict.distance <= 8
    # A real frame is not mistaken for it.
    other = encode(Image.open(io.BytesIO(src)), 85)
    assert (await judged(other, None, pool, settings=settings)).outcome is Outcome.STORED


async def test_bad_placeholder_path_is_a_construction_error(
    tmp_path: Path, pool: concurrent.futures.Executor
) -> None:
    settings = SETTINGS.model_copy(update={"placeholder_images": (tmp_path / "gone.jpg",)})
    with pytest.raises(DedupSetupError, match=r"gone\.jpg"):
        Judge(settings, (), pool)


async def test_same_bytes_are_unchanged(src: bytes) -> None:
    verdict = await judged(src, stored(src), NoDecode())
    assert verdict.outcome is Outcome.UNCHANGED


async def test_first_frame_and_incompatible_memory_are_stored(
    src: bytes, pool: concurrent.futures.Executor
) -> None:
    first = await judged(src, None, pool)
    assert (first.outcome, first.distance) == (Outcome.STORED, None)
    old = LastFrame("0" * 64, fingerprint(src, "phash", 16))  # hash settings changed since
    verdict = await judged(src, old, pool)
    assert (verdict.outcome, verdict.distance) == (Outcome.STORED, None)


# --- the pure chain and restart recovery -------------------------------------------------------


def test_decide_order_cheapest_first(src: bytes) -> None:
    calls: list[bytes] = []

    def look(data: bytes) -> Looks:
        calls.append(data)
        return Looks(fingerprint(data, ALGO, SIZE))

    rules = Rules(threshold=THRESHOLD)
    html = b"<html>"
    # Equal to the last stored bytes wins even over "not an image".
    assert decide(html, LastFrame(sha256_hex(html), None), rules, look).outcome is (
        Outcome.UNCHANGED)
    assert decide(html, None, rules, look).outcome is Outcome.NOT_IMAGE
    assert calls == []
    assert decide(src, None, rules, look).outcome is Outcome.STORED
    assert calls == [src]

    def broken(data: bytes) -> Looks:
        raise CorruptFrame("bad Huffman code")

    verdict = decide(src, None, rules, broken)
    assert (verdict.outcome, verdict.reason) == (Outcome.CORRUPT, "bad Huffman code")


def test_last_frame_from_sidecar(src: bytes) -> None:
    fp = fingerprint(src, ALGO, SIZE)
    sha = sha256_hex(src)
    sidecar = {"sha256": sha, "fingerprint": fp.to_json(), "camera_id": "CWL9018"}
    assert LastFrame.from_sidecar(sidecar) == LastFrame(sha, fp)
    assert LastFrame.from_sidecar({"sha256": sha, "fingerprint": None}) == LastFrame(sha, None)
    stale = {**fp.to_json(), "v": 0}
    assert LastFrame.from_sidecar({"sha256": sha, "fingerprint": stale}) == LastFrame(sha, None)
    assert LastFrame.from_sidecar({"sha256": "nope"}) is None
    assert LastFrame.from_sidecar({}) is None


def test_fingerprint_survives_the_sidecar_roundtrip(src: bytes) -> None:
    import json

    fp = fingerprint(src, ALGO, SIZE)
    back = LastFrame.from_sidecar(json.loads(json.dumps({"sha256": sha256_hex(src),
                                                         "fingerprint": fp.to_json()})))
    assert back is not None and back.fingerprint == fp
    assert isinstance(back.fingerprint, Fingerprint)


async def test_stored_verdict_carries_brightness_and_contrast(
    frame: Image.Image, pool: concurrent.futures.Executor,
) -> None:
    """From the dedup decode: a flat grey frame has no contrast; a brightened frame is brighter."""
    flat = encode(Image.new("RGB", frame.size, (128, 128, 128)))
    grey = await judged(flat, None, pool)
    assert grey.brightness is not None and abs(grey.brightness - 128) < 2
    assert grey.contrast is not None and grey.contrast < 1
    night = await judged(encode(frame), None, pool)
    lit = await judged(encode(ImageEnhance.Brightness(frame).enhance(1.6)), None, pool)
    assert night.brightness is not None and lit.brightness is not None
    assert lit.brightness > night.brightness + 10
    assert night.contrast is not None and night.contrast > 5
