"""Which polled frames are worth storing: one outcome per poll, cheapest test first.

The chain (see `precheck` and `conclude`):

1. ``unchanged``       SHA-256 equal to the camera's last stored frame
2. ``placeholder``     SHA-256 of a known "camera unavailable" image
3. ``not_image``       no JPEG start-of-image marker (an HTML error page, an empty body)
4. ``corrupt``         no usable frame header (and, later, undecodable)
5. ``truncated``       no end-of-image marker in the tail, camera policy ``drop``
6. ``too_large``       header dimensions over ``max_pixels``: refused before any decode
7. ``corrupt``         libjpeg cannot decode it
8. ``placeholder``     looks like a configured placeholder image
9. ``near_duplicate``  no 8 px patch changed beyond the camera's noise since the last
                       *stored* frame (change.py), and the fingerprint within the camera's
                       threshold of it (or the patches under FINGERPRINT_GATE: a tone change),
                       unless a heartbeat is due (``dedup.keep_every``)
10. ``stored``         everything else (flagged ``truncated`` under policy ``keep``); the
                       verdict's `Decision` says why it is new

Steps 1-6 read bytes only (a few hundred microseconds); 7-10 need a reduced-scale
decode. `Judge.judge` runs them all in one trip to the worker pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from lyoncam_daemon.config import CameraConfig, DedupSettings
from lyoncam_daemon.frames.change import NOISE_CLIP, Change, Reference, assess, reference
from lyoncam_daemon.frames.fingerprint import (
    CorruptFrame,
    Fingerprint,
    RoiMask,
    decode_gray,
    hash_pixels,
    read_gray,
    working_size,
)
from lyoncam_daemon.frames.jpeg import (
    KNOWN_PLACEHOLDER_SHA256,
    exif_datetime,
    has_eoi,
    jpeg_dimensions,
    looks_like_jpeg,
    sha256_hex,
)


class Outcome(StrEnum):
    UNCHANGED = "unchanged"
    PLACEHOLDER = "placeholder"
    NOT_IMAGE = "not_image"
    CORRUPT = "corrupt"
    TRUNCATED = "truncated"
    TOO_LARGE = "too_large"
    NEAR_DUPLICATE = "near_duplicate"
    STORED = "stored"


@dataclass
class LastFrame:
    """What a camera remembers of its last stored frame (and of its own noise)."""

    sha256: str
    fingerprint: Fingerprint | None
    #: Its cells for the local test (change.py): 32,400 bytes at 1920x1080. None until
    #: rebuilt from the stored frame's bytes (at start) or when it could not be.
    reference: Reference | None = None
    #: When it was stored (Unix seconds), for the heartbeat.
    stored_at: float | None = None
    #: The camera's learned noise level (see `learn_noise`); None before the first estimate.
    noise: float | None = None

    @classmethod
    def from_sidecar(cls, d: Mapping[str, Any]) -> LastFrame | None:
        """Recover from a stored frame's sidecar JSON after a restart.

        None without a usable SHA-256. A fingerprint that is missing, malformed or from an
        older hashing version is dropped rather than trusted: the next frame is then
        stored (one possible duplicate), never wrongly discarded.
        """
        sha = d.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64:
            return None
        try:
            int(sha, 16)
        except ValueError:
            return None
        raw = d.get("fingerprint")
        fp: Fingerprint | None = None
        if isinstance(raw, Mapping):
            try:
                fp = Fingerprint.from_json(raw)
            except ValueError:
                fp = None
        change = d.get("change")
        noise = change.get("noise") if isinstance(change, Mapping) else None
        if not (isinstance(noise, int | float) and not isinstance(noise, bool)
                and 0 <= noise <= NOISE_CLIP):
            noise = None  # a sidecar written before the local test, or a bad value
        return cls(sha.lower(), fp, stored_at=_unix(d.get("captured_at")), noise=noise)


def _unix(stamp: object) -> float | None:
    """A sidecar's `captured_at` (ISO 8601, UTC) as Unix seconds; None if unusable."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


class Reason(StrEnum):
    """Why a stored frame is new (the sidecar's `change.reason`)."""

    #: The camera had nothing comparable: its first frame, or no reference after a restart.
    FIRST = "first"
    #: The global fingerprint moved beyond the camera's threshold (a car, a bus, a big change).
    FINGERPRINT = "fingerprint"
    #: One patch changed beyond the camera's noise (a person, a bicycle, a small change).
    TILE = "tile"
    #: Nothing changed, but no frame was stored for `dedup.keep_every`.
    HEARTBEAT = "heartbeat"


@dataclass(frozen=True)
class Decision:
    """The numbers behind a verdict, written in a stored frame's sidecar as `change`."""

    reason: Reason | None
    distance: int | None
    distance_threshold: int
    tile_score: float | None = None
    tile_threshold: float | None = None
    #: The highest-scoring cell, (x, y, w, h) in full-resolution pixels.
    tile_box: tuple[int, int, int, int] | None = None
    #: The camera's noise level after this frame.
    noise: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason.value if self.reason is not None else None,
            "distance": self.distance,
            "distance_threshold": self.distance_threshold,
            "tile_score": self.tile_score,
            "tile_threshold": self.tile_threshold,
            "tile_box": list(self.tile_box) if self.tile_box is not None else None,
            "noise": self.noise,
        }


#: The frame noise (change.Change.noise) of the sensor-noise copies (sigma 2-6) in
#: bench/roadusers.py's tuning half: median 0.059. A camera noisier than this gets a
#: proportionally higher threshold.
NOISE_REFERENCE: Final = 0.06
#: The local test's threshold at sensitivity 1: about a tenth above the worst copy of the
#: tuning half (1.377, a contrast drift at the cyan traffic light). Every new scene of that
#: half scores above it: the lowest, a 32-40 px person on the zebra crossing, 1.63.
TILE_THRESHOLD: Final = 1.5
#: The fingerprint alone is not trusted where the tone-matched cells barely moved, either
#: way round (change.Change.reverse): in the tuning half a brightness, contrast or gamma
#: change moved the 4096-bit phash past 64 bits in 14 copies, while their cells scored at
#: most 1.377 one way and 0.993 the other. So a fingerprint past its threshold stores the
#: frame only when the cells pass the local threshold the other way round: a change no tone
#: curve can hide, such as a black frame followed by a scene (the black frame's flat cells
#: match anything one way).
FINGERPRINT_GATE: Final = 1.0
#: The noise level moves this fraction of the way towards each judged-same frame's own
#: (an exponential average over ~30 frames), and at most doubles per frame: one burst of
#: rain cannot raise the threshold at once.
NOISE_WEIGHT: Final = 1 / 32
#: The noise can scale the threshold between these factors. Never below 1: the worst copies'
#: cells sit at lamps and sharp edges, whatever the noise (a cleaner camera is still more
#: sensitive than a noisy one, not more than the tuned threshold). At most 3: a very noisy
#: camera still catches a person close to it.
NOISE_SCALE: Final = (1.0, 3.0)


def learn_noise(current: float | None, observed: float) -> float:
    """The camera's noise level after a frame judged the same with noise `observed`."""
    if current is None:
        return observed
    step = min(observed, 2 * current + 1e-3) - current
    return current + NOISE_WEIGHT * step


def tile_threshold(base: float, noise: float | None) -> float:
    """The local test's threshold for a camera whose noise level is `noise`."""
    if noise is None:
        return base
    low, high = NOISE_SCALE
    return base * min(max(noise / NOISE_REFERENCE, low), high)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one poll and the facts learnt on the way (None where not computed)."""

    outcome: Outcome
    sha256: str
    width: int | None = None
    height: int | None = None
    fingerprint: Fingerprint | None = None
    #: Bits from the last stored frame's fingerprint (or the nearest placeholder's).
    distance: int | None = None
    truncated: bool = False
    exif_datetime: str | None = None
    #: Why a frame was refused, for logs (e.g. the decoder's message).
    reason: str | None = None
    #: Mean and standard deviation (0-255) of the whole reduced grayscale, unmasked: cheap
    #: image statistics for the dataset tools, from the decode the fingerprint needed anyway.
    brightness: float | None = None
    contrast: float | None = None
    #: Why the frame is new or not, with its numbers (None when it was not decoded).
    decision: Decision | None = None
    #: This frame's cells, kept by the camera if it stores the frame.
    reference: Reference | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Rules:
    """Everything the decision needs besides the frame, as plain values."""

    threshold: int
    truncated: Literal["drop", "keep"] = "drop"
    max_pixels: int = 50_000_000
    placeholder_sha256: frozenset[str] = KNOWN_PLACEHOLDER_SHA256
    #: Fingerprints (PLACEHOLDER_HASH) of configured placeholder images.
    placeholder_fingerprints: tuple[Fingerprint, ...] = ()
    placeholder_threshold: int = 24
    #: The local test's threshold at NOISE_REFERENCE (TILE_THRESHOLD / dedup.sensitivity).
    tile_threshold: float = TILE_THRESHOLD
    #: Seconds after which an unchanged scene is stored anyway; 0 = never.
    keep_every: float = 0.0


#: Placeholder images are matched with a small, unmasked, low-frequency phash: a
#: "camera unavailable" card is mostly flat, and the high frequencies a 64x64 phash
#: needs to see a car are JPEG noise there. 256 bits are plenty to tell a card from a
#: street scene (about half the bits differ).
PLACEHOLDER_HASH = ("phash", 16)


@dataclass(frozen=True)
class Looks:
    """What the decode tells: the (masked) fingerprint and, when placeholder images are
    configured, the frame's PLACEHOLDER_HASH (placeholders know nothing of masks)."""

    fingerprint: Fingerprint
    placeholder: Fingerprint | None = None
    #: Of the whole grayscale (see Verdict).
    brightness: float | None = None
    contrast: float | None = None
    #: The local test against the last stored frame's reference (None without one, or
    #: when the frame size changed).
    change: Change | None = None
    reference: Reference | None = None


@dataclass(frozen=True)
class Pending:
    """A frame that passed the byte checks and needs decoding."""

    sha256: str
    width: int
    height: int
    truncated: bool
    exif_datetime: str | None


def precheck(data: bytes, last: LastFrame | None, rules: Rules) -> Verdict | Pending:
    """Steps 1-6: bytes only, no decode."""
    sha = sha256_hex(data)
    if last is not None and sha == last.sha256:
        return Verdict(Outcome.UNCHANGED, sha)
    if sha in rules.placeholder_sha256:
        return Verdict(Outcome.PLACEHOLDER, sha)
    if not looks_like_jpeg(data):
        return Verdict(Outcome.NOT_IMAGE, sha, reason=_describe(data))
    dims = jpeg_dimensions(data)
    stamp = exif_datetime(data)
    if dims is None:
        return Verdict(Outcome.CORRUPT, sha, exif_datetime=stamp, reason="no frame header")
    w, h = dims
    truncated = not has_eoi(data)
    if truncated and rules.truncated == "drop":
        return Verdict(Outcome.TRUNCATED, sha, w, h, truncated=True, exif_datetime=stamp)
    if w * h > rules.max_pixels:
        return Verdict(Outcome.TOO_LARGE, sha, w, h, truncated=truncated, exif_datetime=stamp,
                       reason=f"{w}x{h} is over {rules.max_pixels} pixels")
    return Pending(sha, w, h, truncated, stamp)


def conclude(p: Pending, looks: Looks | CorruptFrame, last: LastFrame | None,
             rules: Rules, now: float | None = None) -> Verdict:
    """Steps 7-10, given the decode's result; `now` (Unix seconds) for the heartbeat."""
    base = Verdict(Outcome.STORED, p.sha256, p.width, p.height, truncated=p.truncated,
                   exif_datetime=p.exif_datetime)
    if isinstance(looks, CorruptFrame):
        return replace(base, outcome=Outcome.CORRUPT, reason=str(looks))
    fp = looks.fingerprint
    base = replace(base, brightness=looks.brightness, contrast=looks.contrast)
    if looks.placeholder is not None:
        for known in rules.placeholder_fingerprints:
            if known.compatible(looks.placeholder) and (
                d := known.distance(looks.placeholder)
            ) <= rules.placeholder_threshold:
                return replace(base, outcome=Outcome.PLACEHOLDER, fingerprint=fp, distance=d)
    base = replace(base, fingerprint=fp, reference=looks.reference)
    distance = _distance(last, fp)
    change = looks.change
    noise = last.noise if last is not None else None
    if distance is not None and distance <= rules.threshold and change is not None:
        # Only frames the fingerprint calls the same teach the noise: a bus filling a
        # quarter of the frame is not noise. Learnt before judging this very frame, so a
        # camera whose threshold sits too low cannot store every frame and learn nothing.
        noise = learn_noise(noise, change.noise)
    threshold = tile_threshold(rules.tile_threshold, noise)
    decision = Decision(
        None, distance, rules.threshold,
        change.score if change is not None else None,
        round(threshold, 3) if change is not None else None,
        change.box if change is not None else None,
        round(noise, 4) if noise is not None else None)
    if distance is None or change is None:
        # No memory to compare with (first frame, new hash settings, no reference after a
        # restart, another frame size): store, never wrongly discard.
        reason = Reason.FIRST
    elif change.score > threshold:
        reason = Reason.TILE
    elif (distance > rules.threshold
          and max(change.score, change.reverse or 0.0) >= FINGERPRINT_GATE * threshold):
        reason = Reason.FINGERPRINT
    elif _heartbeat_due(last, rules, now):
        reason = Reason.HEARTBEAT
    else:
        return replace(base, outcome=Outcome.NEAR_DUPLICATE, distance=distance,
                       decision=decision)
    return replace(base, distance=distance, decision=replace(decision, reason=reason))


def _distance(last: LastFrame | None, fp: Fingerprint) -> int | None:
    """Bits between the last stored frame's fingerprint and `fp`; None when there is none to
    compare with. An incompatible fingerprint (hash settings changed) counts as no memory."""
    if last is None or last.fingerprint is None or not last.fingerprint.compatible(fp):
        return None
    return last.fingerprint.distance(fp)


def _needs_reverse(last: LastFrame | None, fp: Fingerprint, rules: Rules) -> float:
    """The `reverse_below` for the local test. The reverse score matters only to the
    fingerprint's gate in `conclude`: when the fingerprint moved past its threshold (a few
    polls in a hundred on a quiet camera) and the cells' own score is under the gate. The
    camera's noise level, hence its threshold, is then the one `conclude` will use: only
    frames the fingerprint calls the same teach it."""
    distance = _distance(last, fp)
    if last is None or distance is None or distance <= rules.threshold:
        return 0.0
    return FINGERPRINT_GATE * tile_threshold(rules.tile_threshold, last.noise)


def _heartbeat_due(last: LastFrame | None, rules: Rules, now: float | None) -> bool:
    if rules.keep_every <= 0 or last is None or last.stored_at is None:
        return False
    return (time.time() if now is None else now) - last.stored_at >= rules.keep_every


def decide(data: bytes, last: LastFrame | None, rules: Rules,
           look: Callable[[bytes], Looks], now: float | None = None) -> Verdict:
    """The whole chain in one synchronous call (tests, benchmarks, batch tools).

    `look` decodes and fingerprints; it may raise CorruptFrame.
    """
    checked = precheck(data, last, rules)
    if isinstance(checked, Verdict):
        return checked
    try:
        looks: Looks | CorruptFrame = look(data)
    except CorruptFrame as exc:
        looks = exc
    return conclude(checked, looks, last, rules, now)


def _describe(data: bytes) -> str:
    if not data:
        return "empty body"
    head = data[:16].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        return "markup, not an image"
    return f"starts with {data[:4].hex()}"


# --- the async entry point -------------------------------------------------------------------


class DedupSetupError(ValueError):
    """A placeholder image or mask that cannot be used; the message names the path."""


def _load_placeholder(path: Path) -> Fingerprint:
    gray = read_gray(path, "placeholder image", DedupSetupError)
    pixels = np.asarray(gray, dtype=np.float32)
    return hash_pixels(pixels, gray.size, *PLACEHOLDER_HASH)


def _load_mask(camera: CameraConfig) -> RoiMask | None:
    try:
        return RoiMask.load(camera.ignore, camera.mask)
    except ValueError as exc:
        raise DedupSetupError(f"camera {camera.id!r}: {exc}") from None


@dataclass
class _CameraState:
    key: tuple[Any, ...]
    mask: RoiMask | None
    rules: Rules = field(repr=False)


class Judge:
    """Decides each polled frame's outcome; never stores anything.

    The caller stores when the outcome is `stored` and then replaces its LastFrame with
    `LastFrame(verdict.sha256, verdict.fingerprint)`. A 304 never reaches `judge`.
    """

    def __init__(self, settings: DedupSettings, placeholder_sha256: Iterable[str],
                 executor: concurrent.futures.Executor, *,
                 cameras: Iterable[CameraConfig] = ()) -> None:
        """Loads placeholder images now (DedupSetupError naming a bad path), and the
        masks of `cameras` if given; other cameras' masks load on their first frame."""
        self.settings = settings
        self.executor = executor
        self.placeholder_sha256 = KNOWN_PLACEHOLDER_SHA256 | frozenset(
            s.lower() for s in placeholder_sha256
        )
        self.placeholder_fingerprints = tuple(
            _load_placeholder(p) for p in settings.placeholder_images
        )
        self._cameras: dict[str, _CameraState] = {}
        for camera in cameras:
            self._state(camera, _load_mask(camera))

    def _key(self, camera: CameraConfig) -> tuple[Any, ...]:
        return (camera.ignore, camera.mask, camera.threshold, camera.truncated)

    def _state(self, camera: CameraConfig, mask: RoiMask | None) -> _CameraState:
        rules = Rules(
            threshold=camera.threshold,
            truncated=camera.truncated,
            max_pixels=self.settings.max_pixels,
            placeholder_sha256=self.placeholder_sha256,
            placeholder_fingerprints=self.placeholder_fingerprints,
            tile_threshold=TILE_THRESHOLD / self.settings.sensitivity,
            keep_every=self.settings.keep_every,
        )
        state = _CameraState(self._key(camera), mask, rules)
        self._cameras[camera.id] = state
        return state

    async def _camera(self, camera: CameraConfig) -> _CameraState:
        """The camera's cached rules and mask, rebuilt when its settings change (reload)."""
        state = self._cameras.get(camera.id)
        if state is not None and state.key == self._key(camera):
            return state
        mask = None
        if camera.ignore or camera.mask is not None:
            loop = asyncio.get_running_loop()
            mask = await loop.run_in_executor(self.executor, _load_mask, camera)
        return self._state(camera, mask)

    def look(self, data: bytes, mask: RoiMask | None, last: LastFrame | None,
             rules: Rules) -> Looks:
        """Decode once, hash once (twice when placeholder images are configured), and run
        the local test against `last`'s reference on the same decode.

        Runs in a worker thread: Pillow releases the GIL while libjpeg decodes.
        """
        algo, size = self.settings.hash, self.settings.hash_size
        pixels, full = decode_gray(data, working_size(algo, size))
        fp = hash_pixels(pixels, full, algo, size, mask)
        card = None
        if self.placeholder_fingerprints:
            card = hash_pixels(pixels, full, *PLACEHOLDER_HASH)
        keep = mask.keep(full, (pixels.shape[1], pixels.shape[0])) if mask else None
        ref = last.reference if last is not None else None
        change, own = assess(ref, pixels, full, keep, _needs_reverse(last, fp, rules))
        return Looks(fp, card, round(float(pixels.mean()), 2), round(float(pixels.std()), 2),
                     change, own)

    async def judge(self, camera: CameraConfig, data: bytes, last: LastFrame | None,
                    now: float | None = None) -> Verdict:
        """The whole chain in one trip to the worker pool: the byte checks too (SHA-256 of
        half a megabyte, the header walk), which would otherwise hold the event loop.
        `now` (Unix seconds, default the clock) decides whether a heartbeat is due."""
        state = await self._camera(camera)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.decide_now, data, last, state,
                                          now)

    def camera_state(self, camera: CameraConfig) -> _CameraState:
        """The camera's rules and mask as `judge` uses them, loaded in this thread (for
        `compare` and the benchmarks)."""
        state = self._cameras.get(camera.id)
        if state is not None and state.key == self._key(camera):
            return state
        return self._state(camera, _load_mask(camera))

    def decide_now(self, data: bytes, last: LastFrame | None, state: _CameraState,
                   now: float | None = None) -> Verdict:
        """The decision `judge` takes, synchronously (the `compare` command runs this)."""
        return decide(data, last, state.rules,
                      lambda body: self.look(body, state.mask, last, state.rules), now)

    async def remember(self, data: bytes, last: LastFrame) -> LastFrame:
        """`last` with its reference rebuilt from the stored frame's bytes (at start), in
        the worker pool; CorruptFrame if they no longer decode."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.remembered, data, last)

    def remembered(self, data: bytes, last: LastFrame) -> LastFrame:
        pixels, full = decode_gray(data, working_size(self.settings.hash, self.settings.hash_size))
        return replace(last, reference=reference(pixels, full))
