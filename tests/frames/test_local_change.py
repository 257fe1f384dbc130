"""The local change test through the real judge (issue 16): small people and bicycles are
new scenes, every kind of copy is not, masks and the heartbeat apply, old sidecars work.

Frames are built from the real CWL9018 frame: sprites pasted on the lit zebra crossing,
copies made by re-toning and re-encoding it; both frames of a pair carry their own
sensor noise, as two polls of a real camera do.
"""

from __future__ import annotations

import concurrent.futures
import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from bench.pairs import gamma_curve, noisy
from bench.roadusers import person, rider
from lyoncam_daemon.config import CameraConfig, DedupSettings
from lyoncam_daemon.frames.change import CELL_PX, compare, reference
from lyoncam_daemon.frames.fingerprint import decode_gray, working_size
from lyoncam_daemon.frames.judge import (
    NOISE_REFERENCE,
    TILE_THRESHOLD,
    Judge,
    LastFrame,
    Outcome,
    Reason,
    Verdict,
    learn_noise,
    tile_threshold,
)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "CWL9018_night.jpg"
SETTINGS = DedupSettings()
#: Feet on the lit zebra crossing in front of the camera (full-resolution px).
CROSSING = (700, 676)


@pytest.fixture(scope="module")
def frame() -> Image.Image:
    return Image.open(FIXTURE).convert("RGB")


@pytest.fixture(scope="module")
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        yield ex


def encode(im: Image.Image, quality: int = 85, subsampling: int = -1, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, subsampling=subsampling, **kw)
    return buf.getvalue()


def camera(**kw: Any) -> CameraConfig:
    return CameraConfig(id="CWL9018", url="http://127.0.0.1/CWL9018.JPG", **kw)


def judge_of(pool: concurrent.futures.Executor, settings: DedupSettings = SETTINGS,
             cam: CameraConfig | None = None) -> Judge:
    return Judge(settings, (), pool, cameras=[cam or camera()])


async def stored_by(judge: Judge, data: bytes, cam: CameraConfig | None = None,
                    at: float = 0.0) -> LastFrame:
    """What the camera task remembers after storing `data` as its first frame."""
    v = await judge.judge(cam or camera(), data, None, now=at)
    assert v.outcome is Outcome.STORED and v.decision is not None
    assert v.decision.reason is Reason.FIRST
    return LastFrame(v.sha256, v.fingerprint, v.reference, at, v.decision.noise)


async def pair(pool: concurrent.futures.Executor, before: bytes, after: bytes,
               cam: CameraConfig | None = None, settings: DedupSettings = SETTINGS) -> Verdict:
    judge = judge_of(pool, settings, cam)
    return await judge.judge(cam or camera(), after, await stored_by(judge, before, cam), now=1.0)


def two_polls(frame: Image.Image, seed: int) -> tuple[Image.Image, Image.Image]:
    return noisy(frame, 2.0, seed), noisy(frame, 2.0, seed + 1)


def pasted(frame: Image.Image, sprite: tuple[Image.Image, Image.Image],
           feet: tuple[int, int]) -> Image.Image:
    out = frame.copy()
    out.paste(sprite[0], (feet[0], feet[1] - sprite[0].size[1]), sprite[1])
    return out


# --- new scenes ------------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "feet"), [
    ("person 32", (1150, 690)), ("person 32", (420, 1000)), ("person 32", (900, 800)),
    ("person 48", CROSSING), ("person 48", (600, 560)), ("cyclist", CROSSING),
    ("cyclist", (1300, 900)),
])
async def test_a_small_road_user_appearing_is_stored_by_the_local_test(
        frame: Image.Image, pool: concurrent.futures.Executor, who: str,
        feet: tuple[int, int]) -> None:
    """On the crossing, on the carriageway, far and near. Not promised here: a 32 px person
    whose clothes match a white stripe of the crossing, which the stripes' tolerance can
    hide; bench/dedup.py measures that kind ("on the zebra crossing")."""
    rng = np.random.default_rng(7)
    sprite = (rider(52, rng, "bicycle") if who == "cyclist"
              else person(int(who.split()[1]), rng, stride=0))
    a, b = two_polls(frame, 11)
    verdict = await pair(pool, encode(a), encode(pasted(b, sprite, feet)))
    assert verdict.outcome is Outcome.STORED
    d = verdict.decision
    assert d is not None and d.reason is Reason.TILE, d
    assert d.distance is not None and d.distance <= d.distance_threshold  # fingerprint: same
    assert d.tile_score is not None and d.tile_threshold is not None
    assert d.tile_score > d.tile_threshold
    # the changed cell is where the road user is, in full-resolution pixels
    assert d.tile_box is not None
    x, y, w, h = d.tile_box
    sw, sh = sprite[0].size
    assert w == h == CELL_PX
    assert feet[0] - w <= x <= feet[0] + sw and feet[1] - sh - h <= y <= feet[1]


async def test_a_32px_person_is_stored_almost_anywhere_along_the_lit_crossing(
        frame: Image.Image, pool: concurrent.futures.Executor) -> None:
    """24 positions 6 px apart across the zebra crossing, one person (dark shirt, light
    trousers). 16 px cells stored 5 of them: a 12 px wide person straddling two cells lent
    each half its contrast, and the stripes' sharp edges widen the tolerance."""
    sprite = person(32, np.random.default_rng(0), stride=0)
    a, b = two_polls(frame, 11)
    judge = judge_of(pool)
    last = await stored_by(judge, encode(a))
    stored = 0
    for x in range(640, 784, 6):
        v = await judge.judge(camera(), encode(pasted(b, sprite, (x, CROSSING[1]))), last,
                              now=1.0)
        stored += v.outcome is Outcome.STORED
    assert stored >= 22


async def test_a_32px_person_walking_one_step_is_stored(
        frame: Image.Image, pool: concurrent.futures.Executor) -> None:
    sprite = person(32, np.random.default_rng(3))
    a, b = two_polls(frame, 21)
    start = (900, 800)
    before = encode(pasted(a, sprite, start))
    after = encode(pasted(b, sprite, (start[0] + 12, start[1] + 2)))
    verdict = await pair(pool, before, after)
    assert verdict.outcome is Outcome.STORED
    assert verdict.decision is not None and verdict.decision.reason is Reason.TILE


# --- copies ----------------------------------------------------------------------------------


COPIES: dict[str, Callable[[Image.Image], tuple[bytes, bytes]]] = {
    "sensor noise sigma 2": lambda f: (encode(noisy(f, 2, 1)), encode(noisy(f, 2, 2))),
    "sensor noise sigma 6": lambda f: (encode(noisy(f, 6, 3)), encode(noisy(f, 6, 4))),
    "brightness +10 %": lambda f: (encode(f), encode(ImageEnhance.Brightness(f).enhance(1.1))),
    "brightness -10 %": lambda f: (encode(f), encode(ImageEnhance.Brightness(f).enhance(0.9))),
    "gamma 0.8": lambda f: (encode(f), encode(gamma_curve(f, 0.8))),
    "gamma 1.25": lambda f: (encode(f), encode(gamma_curve(f, 1.25))),
    "contrast drift": lambda f: (encode(f), encode(ImageEnhance.Contrast(f).enhance(0.93))),
    "JPEG quality 60": lambda f: (encode(f), encode(f, 60)),
    "JPEG quality 95": lambda f: (encode(f), encode(f, 95)),
    "chroma 4:4:4": lambda f: (encode(f), encode(f, 85, 0)),
    "another encoder's tables": lambda f: (encode(f), encode(
        f, qtables={k: list(v) for k, v in Image.open(FIXTURE).quantization.items()},
        subsampling=1, progressive=True)),
}


@pytest.mark.parametrize("kind", sorted(COPIES))
async def test_a_copy_is_a_near_duplicate(frame: Image.Image,
                                          pool: concurrent.futures.Executor, kind: str) -> None:
    before, after = COPIES[kind](frame)
    verdict = await pair(pool, before, after)
    assert verdict.outcome is Outcome.NEAR_DUPLICATE, verdict.decision
    d = verdict.decision
    assert d is not None and d.tile_score is not None and d.tile_threshold is not None
    assert d.tile_score <= d.tile_threshold


async def test_a_black_frame_then_a_scene_is_new(frame: Image.Image,
                                                 pool: concurrent.futures.Executor) -> None:
    """A flat reference lets any tone curve explain anything one way round; the other way
    round (Change.reverse) it cannot, so the fingerprint's word stands."""
    verdict = await pair(pool, encode(Image.new("RGB", frame.size, (3, 3, 3))), encode(frame))
    assert verdict.outcome is Outcome.STORED
    assert verdict.decision is not None and verdict.decision.reason is Reason.FINGERPRINT


# --- masks -----------------------------------------------------------------------------------


async def test_an_ignored_rectangle_hides_a_change_from_the_local_test(
        frame: Image.Image, pool: concurrent.futures.Executor) -> None:
    sprite = person(48, np.random.default_rng(5), stride=0)
    a, b = two_polls(frame, 31)
    before, after = encode(a), encode(pasted(b, sprite, CROSSING))
    assert (await pair(pool, before, after)).outcome is Outcome.STORED
    clock = camera(ignore=((CROSSING[0] - 40, CROSSING[1] - 90, 120, 130),))
    verdict = await pair(pool, before, after, clock)
    assert verdict.outcome is Outcome.NEAR_DUPLICATE, verdict.decision


async def test_a_mask_image_hides_a_change_from_the_local_test(
        frame: Image.Image, pool: concurrent.futures.Executor, tmp_path: Path) -> None:
    sprite = rider(52, np.random.default_rng(7), "bicycle")
    a, b = two_polls(frame, 41)
    before, after = encode(a), encode(pasted(b, sprite, CROSSING))
    assert (await pair(pool, before, after)).outcome is Outcome.STORED
    mask = Image.new("L", (480, 270), 255)  # a quarter of the frame's size, stretched
    mask.paste(0, ((CROSSING[0] - 40) // 4, (CROSSING[1] - 100) // 4,
                   (CROSSING[0] + 110) // 4, (CROSSING[1] + 30) // 4))
    mask.save(tmp_path / "mask.png")
    verdict = await pair(pool, before, after, camera(mask=tmp_path / "mask.png"))
    assert verdict.outcome is Outcome.NEAR_DUPLICATE, verdict.decision


# --- the heartbeat ---------------------------------------------------------------------------


async def test_keep_every_stores_an_unchanged_scene_once_per_period(
        frame: Image.Image, pool: concurrent.futures.Executor) -> None:
    settings = DedupSettings(keep_every=1800)
    judge = judge_of(pool, settings)
    a, b = two_polls(frame, 51)
    last = await stored_by(judge, encode(a), at=10_000.0)
    copy = encode(b)
    for now in (10_060.0, 11_000.0, 11_799.0):  # a fake clock: polls within the period
        assert (await judge.judge(camera(), copy, last, now=now)).outcome is (
            Outcome.NEAR_DUPLICATE)
    beat = await judge.judge(camera(), copy, last, now=11_800.0)
    assert beat.outcome is Outcome.STORED
    assert beat.decision is not None and beat.decision.reason is Reason.HEARTBEAT
    assert beat.decision.to_json()["reason"] == "heartbeat"
    off = judge_of(pool, DedupSettings(keep_every=0))
    assert (await off.judge(camera(), copy, last, now=10**9)).outcome is Outcome.NEAR_DUPLICATE


# --- the noise floor -------------------------------------------------------------------------


def test_a_noisy_camera_learns_a_higher_threshold_and_a_clean_one_keeps_the_tuned_one(
        frame: Image.Image) -> None:
    def frame_noise(sigma: float, seed: int) -> float:
        a, _ = decode_gray(encode(noisy(frame, sigma, seed)), working_size("phash", 64))
        b, full = decode_gray(encode(noisy(frame, sigma, seed + 1)), working_size("phash", 64))
        change = compare(reference(a, full), b)
        assert change is not None
        return change.noise

    levels = {}
    for sigma in (1.0, 14.0):
        level = None
        for i in range(40):  # 40 polls the fingerprint called the same
            level = learn_noise(level, frame_noise(sigma, 100 * i))
        levels[sigma] = level
    assert levels[14.0] is not None and levels[14.0] > 2 * NOISE_REFERENCE
    assert tile_threshold(TILE_THRESHOLD, levels[14.0]) > 1.5 * TILE_THRESHOLD
    assert tile_threshold(TILE_THRESHOLD, levels[1.0]) == TILE_THRESHOLD
    # one burst cannot move it far: at most double the level, one 32nd of the way
    assert learn_noise(0.03, 1.0) < 0.03 * (1 + 1 / 32) + 1e-3


async def test_sensitivity_scales_the_threshold(frame: Image.Image,
                                                pool: concurrent.futures.Executor) -> None:
    a, b = two_polls(frame, 61)
    before, after = encode(a), encode(b)
    for sensitivity, expected in ((1.0, TILE_THRESHOLD), (2.0, TILE_THRESHOLD / 2)):
        v = await pair(pool, before, after, settings=DedupSettings(sensitivity=sensitivity))
        assert v.decision is not None and v.decision.tile_threshold == pytest.approx(
            expected, abs=1e-3)


# --- upgrade ---------------------------------------------------------------------------------


async def test_an_old_sidecar_still_works_and_costs_at_most_one_frame(
        frame: Image.Image, pool: concurrent.futures.Executor) -> None:
    judge = judge_of(pool)
    a, b = two_polls(frame, 71)
    before, copy = encode(a), encode(b)
    first = await stored_by(judge, before)
    assert first.fingerprint is not None
    old = {"sha256": first.sha256, "fingerprint": first.fingerprint.to_json(),
           "captured_at": "2026-11-26T00:15:03.000Z", "distance": None}  # no `change`
    remembered = LastFrame.from_sidecar(old)
    assert remembered is not None and remembered.reference is None
    assert remembered.fingerprint == first.fingerprint and remembered.noise is None
    assert remembered.stored_at == datetime(2026, 11, 26, 0, 15, 3, tzinfo=UTC).timestamp()
    # rebuilt from the stored frame's bytes (what the camera does at start): no extra frame
    rebuilt = await judge.remember(before, remembered)
    assert (await judge.judge(camera(), copy, rebuilt, now=0)).outcome is Outcome.NEAR_DUPLICATE
    # without the bytes: this one frame is stored, never a new scene dropped
    extra = await judge.judge(camera(), copy, remembered, now=0)
    assert extra.outcome is Outcome.STORED and extra.decision is not None
    assert extra.decision.reason is Reason.FIRST and extra.reference is not None
    after = LastFrame(extra.sha256, extra.fingerprint, extra.reference, 0, None)
    assert (await judge.judge(camera(), encode(noisy(frame, 2.0, 99)), after, now=0)
            ).outcome is Outcome.NEAR_DUPLICATE


def test_the_noise_comes_back_from_a_new_sidecar() -> None:
    side = {"sha256": "a" * 64, "fingerprint": None, "captured_at": "2026-11-26T00:00:00Z",
            "change": {"reason": "tile", "noise": 0.041}}
    last = LastFrame.from_sidecar(side)
    assert last is not None and last.noise == 0.041
    side["change"] = {"noise": "loud"}
    last = LastFrame.from_sidecar(side)
    assert last is not None and last.noise is None
