"""Labelled frame pairs for the dedup accuracy check: "new" must be stored, "same" dropped.

Two sets, built from the real CriTer fixture frame:

- ``tuning_pairs``: the set the default threshold (64 bits of a 64x64 phash) was chosen on:
  a car-sized object appears or moves, against noise, re-encoding and brightness flicker.
- ``heldout_pairs``: built afterwards and never used to choose anything: other base frames
  (mirrored, a zoomed crop, a dusk-brightened version) and other kinds of change: a small
  person walking, a bus entering, a car's headlights and glare appearing (new); rain
  streaks, global brightness drift, JPEG re-encodes at other qualities and chroma
  subsamplings, stronger sensor noise (same). Its positions and seeds differ from the
  tuning set's. A threshold tuned on this set would make it a second tuning set: don't.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter

CAR = (150, 130)


@dataclass(frozen=True)
class Pair:
    label: str  # "new" (must be stored) or "same" (must be dropped)
    kind: str
    previous: bytes
    current: bytes


def encode(im: Image.Image, quality: int = 90, subsampling: int = -1) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()


def noisy(frame: Image.Image, sigma: float, seed: int, gain: float = 1.0) -> Image.Image:
    rng = np.random.default_rng(seed)
    px = np.asarray(frame, dtype=np.float32) * gain + rng.normal(0, sigma, (*frame.size[::-1], 3))
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))


Sprite = Image.Image | tuple[Image.Image, Image.Image]


def pasted(frame: Image.Image, sprite: Sprite, at: tuple[int, int]) -> Image.Image:
    out = frame.copy()
    if isinstance(sprite, tuple):
        out.paste(sprite[0], at, sprite[1])
    else:
        out.paste(sprite, at)
    return out


# --- the tuning set --------------------------------------------------------------------------


def dark_car(level: int) -> tuple[Image.Image, Image.Image]:
    """A car seen from above at night: body `level` grey, darker glass and tyres, dim
    rear lights, soft edges; returned with its alpha mask (it is not a rectangle)."""
    w, h = CAR
    car = Image.new("RGB", CAR, (0, 0, 0))
    alpha = Image.new("L", CAR, 0)
    d, a = ImageDraw.Draw(car), ImageDraw.Draw(alpha)
    body, roof = (5, 30, w - 5, h - 10), (25, 5, w - 25, 50)
    d.rounded_rectangle(body, 18, fill=(level, level, level + 3))
    a.rounded_rectangle(body, 18, fill=255)
    d.rounded_rectangle(roof, 14, fill=(level + 8, level + 8, level + 10))
    a.rounded_rectangle(roof, 14, fill=255)
    d.rectangle((35, 12, w - 35, 42), fill=(max(level - 20, 0),) * 3)
    for cx in (30, w - 30):
        d.ellipse((cx - 14, h - 30, cx + 14, h - 2), fill=(10, 10, 10))
        a.ellipse((cx - 14, h - 30, cx + 14, h - 2), fill=255)
    for x0 in (12, w - 30):
        d.rectangle((x0, 60, x0 + 18, 70), fill=(level + 40, level + 10, level + 10))
    blur = ImageFilter.GaussianBlur(1.5)
    return car.filter(blur), alpha.filter(blur)


def crop_car(frame: Image.Image, at: tuple[int, int]) -> Image.Image:
    x, y = at
    return frame.crop((x, y, x + CAR[0], y + CAR[1]))


def tuning_pairs(src: bytes, positions: int = 24) -> list[Pair]:
    """The set the default threshold was chosen on (unchanged since: keep it comparable)."""
    frame = Image.open(io.BytesIO(src)).convert("RGB")
    pairs = []
    for q in (95, 85, 75, 60):
        pairs.append(Pair("same", f"re-encode q{q}", src, encode(frame, q)))
    for sigma in (3, 6, 8):
        for seed in range(2):
            pairs.append(Pair("same", f"noise sigma {sigma}", src,
                              encode(noisy(frame, sigma, seed), 85)))
            pairs.append(Pair("same", f"noise sigma {sigma}, two noisy frames",
                              encode(noisy(frame, sigma, 10 + seed), 85),
                              encode(noisy(frame, sigma, 20 + seed), 85)))
    for gain in (0.95, 0.97, 1.03, 1.05):
        for q in (75, 90):
            pairs.append(Pair("same", f"brightness x{gain}",
                              src, encode(ImageEnhance.Brightness(frame).enhance(gain), q)))
    pairs.append(Pair("same", "brightness x1.05 + noise", src,
                      encode(noisy(frame, 4, 3, 1.05), 80)))
    pairs.append(Pair("same", "brightness x0.95 vs x1.05", encode(noisy(frame, 1, 4, 0.95)),
                      encode(noisy(frame, 1, 5, 1.05))))

    cars: dict[str, Sprite] = {
        "car crop (sign)": crop_car(frame, (1560, 915)),
        "car crop (headlights)": crop_car(frame, (1180, 180)),
        "car crop (road marks)": crop_car(frame, (560, 420)),
        "dark car (45)": dark_car(45),
        "dark car (60)": dark_car(60),
        "low-contrast car (70)": dark_car(70),
    }
    # Positions over the carriageway (the lower two thirds of the frame).
    grid = [(x, y) for y in range(340, 951, 150) for x in range(120, 1701, 250)]
    step = max(1, len(grid) // positions)
    spots = grid[::step][:positions]
    for name, car in cars.items():
        for i, at in enumerate(spots):
            if i % 2 == 0:
                pairs.append(Pair("new", f"{name} appears", src, encode(pasted(frame, car, at))))
            else:
                to = spots[(i + 5) % len(spots)]
                before, after = pasted(frame, car, at), pasted(frame, car, to)
                pairs.append(Pair("new", f"{name} moves", encode(before), encode(after)))
    return pairs


# --- the held-out set ------------------------------------------------------------------------


def gamma_curve(frame: Image.Image, gamma: float) -> Image.Image:
    """A global tone change, as auto-exposure makes between night and day."""
    return frame.point([round(255 * (v / 255) ** gamma) for v in range(256)] * 3)


def other_bases(frame: Image.Image) -> dict[str, Image.Image]:
    """Scenes the threshold never saw: other layouts and textures, same camera quality."""
    w, h = frame.size
    dusk = gamma_curve(frame, 0.6)
    zoom = frame.crop((0, h // 3, w * 2 // 3, h)).resize((w, h), Image.Resampling.BICUBIC)
    return {"mirrored": frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            "zoomed crop": zoom, "dusk": dusk}


def person(height: int, shirt: tuple[int, int, int], stride: int) -> tuple[Image.Image,
                                                                           Image.Image]:
    """A pedestrian seen from a mast: head, torso, legs apart by `stride` px; with alpha."""
    w = max(8, height * 2 // 5)
    im = Image.new("RGB", (w, height), (0, 0, 0))
    alpha = Image.new("L", (w, height), 0)
    head = height // 6
    for d, fill in ((ImageDraw.Draw(im), None), (ImageDraw.Draw(alpha), 255)):
        d.ellipse((w // 2 - head // 2, 0, w // 2 + head // 2, head), fill=fill or (200, 170, 150))
        d.rectangle((w // 4, head, w - w // 4, height * 3 // 5), fill=fill or shirt)
        for dx in (-stride, stride):
            x = w // 2 + dx // 2
            d.line((w // 2, height * 3 // 5, x, height - 1), width=max(2, w // 5),
                   fill=fill or (35, 35, 45))
    return im, alpha.filter(ImageFilter.GaussianBlur(0.7))


def bus(colour: tuple[int, int, int]) -> Image.Image:
    """A 12 m bus seen three-quarters from above: about 460x170 px at this camera's scale."""
    im = Image.new("RGB", (460, 170), colour)
    d = ImageDraw.Draw(im)
    for x in range(20, 440, 55):
        d.rectangle((x, 25, x + 40, 80), fill=(40, 50, 60))
    d.rectangle((0, 150, 460, 170), fill=(25, 25, 25))
    return im


def headlights(frame: Image.Image, at: tuple[int, int], seed: int) -> Image.Image:
    """An oncoming car at night: two bright lamps and the glare cone they throw on the road
    (added light, not a pasted object: the car body itself is lost in the dark)."""
    rng = np.random.default_rng(seed)
    light = Image.new("RGB", frame.size, (0, 0, 0))
    d = ImageDraw.Draw(light)
    x, y = at
    gap = int(rng.integers(45, 70))
    d.polygon([(x - 10, y), (x + gap + 10, y), (x + gap + 90, y + 220), (x - 90, y + 220)],
              fill=(70, 65, 50))
    glare = light.filter(ImageFilter.GaussianBlur(25))
    d2 = ImageDraw.Draw(glare)
    for lx in (x, x + gap):
        d2.ellipse((lx - 9, y - 6, lx + 9, y + 6), fill=(255, 250, 230))
    return ImageChops.add(frame, glare.filter(ImageFilter.GaussianBlur(2)))


def rain(frame: Image.Image, drops: int, seed: int) -> Image.Image:
    """Rain streaks: short, faint, slanted light lines, a different pattern every frame."""
    rng = np.random.default_rng(seed)
    layer = Image.new("RGB", frame.size, (0, 0, 0))
    d = ImageDraw.Draw(layer)
    w, h = frame.size
    for x, y, length in zip(rng.integers(0, w, drops), rng.integers(0, h, drops),
                            rng.integers(15, 45, drops), strict=True):
        d.line((int(x), int(y), int(x) + int(length) // 4, int(y) + int(length)),
               fill=(40, 40, 45), width=1)
    return ImageChops.add(frame, layer.filter(ImageFilter.GaussianBlur(0.6)))


def _spots(rng: np.random.Generator, n: int, size: tuple[int, int]) -> list[tuple[int, int]]:
    """Random spots on the carriageway (lower two thirds), away from the tuning grid's."""
    w, h = size
    return [(int(rng.integers(60, 1920 - w - 60)), int(rng.integers(360, 1080 - h - 20)))
            for _ in range(n)]


def heldout_new(name: str, base: Image.Image, rng: np.random.Generator) -> list[Pair]:
    pairs = []
    small = person(48, (180, 40, 40), 8)
    near = person(90, (60, 90, 170), 14)
    for who, sprite, step in (("small person walking", small, 30),
                              ("person near the camera walking", near, 45)):
        for at in _spots(rng, 3, sprite[0].size):
            before = pasted(base, sprite, at)
            after = pasted(base, sprite, (at[0] + step, at[1] + step // 3))
            pairs.append(Pair("new", f"{who} ({name})", encode(before), encode(after)))
        for at in _spots(rng, 2, sprite[0].size):
            pairs.append(Pair("new", f"{who[:-8]} appears ({name})", encode(base),
                              encode(pasted(base, sprite, at))))
    for colour in ((190, 30, 40), (225, 225, 220)):
        y = int(rng.integers(420, 800))
        pairs.append(Pair("new", f"bus entering ({name})", encode(base),
                          encode(pasted(base, bus(colour), (-300, y)))))
        pairs.append(Pair("new", f"bus moving on ({name})", encode(pasted(base, bus(colour),
                                                                          (-300, y))),
                          encode(pasted(base, bus(colour), (150, y)))))
    for i, at in enumerate(_spots(rng, 3, (160, 240))):
        pairs.append(Pair("new", f"headlights appear ({name})", encode(base),
                          encode(headlights(base, at, i))))
    return pairs


def heldout_same(name: str, base: Image.Image, rng: np.random.Generator) -> list[Pair]:
    seed = int(rng.integers(1000, 2**31))
    src = encode(base)
    pairs = []
    for drops in (1500, 5000):
        pairs.append(Pair("same", f"rain streaks, {drops} drops ({name})",
                          encode(rain(base, drops, seed)), encode(rain(base, drops, seed + 1))))
    for gain in (0.93, 1.07):
        pairs.append(Pair("same", f"brightness drift x{gain} ({name})", src,
                          encode(ImageEnhance.Brightness(base).enhance(gain), 80)))
    for gamma in (0.9, 1.1):
        pairs.append(Pair("same", f"gamma drift {gamma} ({name})", src,
                          encode(gamma_curve(base, gamma), 85)))
    pairs.append(Pair("same", f"contrast drift x0.93 ({name})", src,
                      encode(ImageEnhance.Contrast(base).enhance(0.93), 85)))
    for q, sub in ((50, -1), (40, 2), (30, 2), (98, 0), (88, 0)):
        pairs.append(Pair("same", f"re-encode q{q}{' 4:4:4' if sub == 0 else ''} ({name})",
                          src, encode(base, q, sub)))
    pairs.append(Pair("same", f"double re-encode q70 then q80 ({name})", src,
                      encode(Image.open(io.BytesIO(encode(base, 70))), 80)))
    for sigma in (4, 10):
        pairs.append(Pair("same", f"sensor noise sigma {sigma}, both frames ({name})",
                          encode(noisy(base, sigma, seed + 2), 85),
                          encode(noisy(base, sigma, seed + 3), 85)))
    pairs.append(Pair("same", f"sensor noise sigma 5 + drift x1.04 ({name})", src,
                      encode(noisy(base, 5, seed + 4, 1.04), 80)))
    return pairs


def heldout_pairs(src: bytes, seed: int = 2026) -> list[Pair]:
    """The second set (see the module's docstring); the seed fixes every random choice."""
    frame = Image.open(io.BytesIO(src)).convert("RGB")
    rng = np.random.default_rng(seed)
    pairs = []
    for name, base in other_bases(frame).items():
        pairs += heldout_new(name, base, rng)
        pairs += heldout_same(name, base, rng)
    return pairs
