"""Benchmark and accuracy check of the frame checks and near-duplicate stage (issue 3).

Run: ``.venv/bin/python -m bench.dedup`` (about 30 s). Everything is measured in one run
on the real 1920x1080 fixture frame, as medians of many interleaved repetitions:

- ``ours``: lyoncam's whole path for one new frame: SHA-256, byte checks (SOI, SOFn
  dimensions, EOI, EXIF time), reduced-scale decode, fingerprint, decision.
- ``original``: the original script's path: full decode, ``average_hash``, reopen the
  previous frame from disk, decode and hash it, re-encode and save the new one.
- ``decode_floor``: the bare ``draft('L', (64, 64))`` decode of the same bytes, the
  least any pixel-based check can cost.

Then a labelled set of frame pairs built from the fixture (a car-sized object appears or
moves; versus noise, re-encoding, brightness flicker) is judged by lyoncam's rule and by
the original one, and the kept-when-new / dropped-when-same rates are printed.
The last line printed is one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from lyoncam_daemon.dedup import LastFrame, Looks, Outcome, Rules, decide
from lyoncam_daemon.frames import Fingerprint, decode_gray, fingerprint, hash_pixels, working_size

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "CWL9018_night.jpg"
#: The original script: average_hash distance above this counted as a new frame.
ORIGINAL_MIN_BITS = 2
CAR = (150, 130)


# --- the labelled set ------------------------------------------------------------------------


def encode(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


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


Sprite = Image.Image | tuple[Image.Image, Image.Image]


def with_car(frame: Image.Image, car: Sprite, at: tuple[int, int]) -> Image.Image:
    out = frame.copy()
    if isinstance(car, tuple):
        out.paste(car[0], at, car[1])
    else:
        out.paste(car, at)
    return out


def noisy(frame: Image.Image, sigma: float, seed: int, gain: float = 1.0) -> Image.Image:
    rng = np.random.default_rng(seed)
    px = np.asarray(frame, dtype=np.float32) * gain + rng.normal(0, sigma, (*frame.size[::-1], 3))
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class Pair:
    label: str  # "new" (must be stored) or "same" (must be dropped)
    kind: str
    previous: bytes
    current: bytes


def labelled_pairs(src: bytes, positions: int = 24) -> list[Pair]:
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
                pairs.append(Pair("new", f"{name} appears", src, encode(with_car(frame, car, at))))
            else:
                to = spots[(i + 5) % len(spots)]
                before, after = with_car(frame, car, at), with_car(frame, car, to)
                pairs.append(Pair("new", f"{name} moves", encode(before), encode(after)))
    return pairs


# --- rules under test ------------------------------------------------------------------------


def ours_is_new(algo: str, size: int, threshold: int) -> Callable[[bytes, bytes], bool]:
    cache: dict[bytes, Fingerprint] = {}

    def fp(data: bytes) -> Fingerprint:
        if data not in cache:
            cache[data] = fingerprint(data, algo, size)
        return cache[data]

    return lambda prev, cur: fp(prev).distance(fp(cur)) > threshold


def original_is_new() -> Callable[[bytes, bytes], bool]:
    cache: dict[bytes, imagehash.ImageHash] = {}

    def ah(data: bytes) -> imagehash.ImageHash:
        if data not in cache:
            cache[data] = imagehash.average_hash(Image.open(io.BytesIO(data)))
        return cache[data]

    return lambda prev, cur: int(ah(prev) - ah(cur)) > ORIGINAL_MIN_BITS


@dataclass(frozen=True)
class Score:
    kept_when_new: float
    dropped_when_same: float
    worst_same: tuple[str, int]  # the "same" kind most often kept, and how many times
    missed_new: dict[str, int]


def score(pairs: list[Pair], is_new: Callable[[bytes, bytes], bool]) -> Score:
    new = [p for p in pairs if p.label == "new"]
    same = [p for p in pairs if p.label == "same"]
    kept = [is_new(p.previous, p.current) for p in new]
    wrongly_kept = [p.kind for p in same if is_new(p.previous, p.current)]
    missed: dict[str, int] = {}
    for p, k in zip(new, kept, strict=True):
        if not k:
            missed[p.kind] = missed.get(p.kind, 0) + 1
    worst = max(set(wrongly_kept), key=wrongly_kept.count) if wrongly_kept else "-"
    return Score(
        kept_when_new=sum(kept) / len(new),
        dropped_when_same=1 - len(wrongly_kept) / len(same),
        worst_same=(worst, wrongly_kept.count(worst)),
        missed_new=missed,
    )


def distances(pairs: list[Pair], algo: str, size: int) -> tuple[list[int], list[int]]:
    fps: dict[bytes, Fingerprint] = {}
    for p in pairs:
        for data in (p.previous, p.current):
            if data not in fps:
                fps[data] = fingerprint(data, algo, size)
    d = [(p.label, fps[p.previous].distance(fps[p.current])) for p in pairs]
    return [x for lbl, x in d if lbl == "new"], [x for lbl, x in d if lbl == "same"]


# --- timing ----------------------------------------------------------------------------------


def original_cycle(data: bytes, previous_path: Path, out_path: Path) -> bool:
    """The original script, step for step."""
    img = Image.open(io.BytesIO(data))
    img.load()
    h = imagehash.average_hash(img)
    with Image.open(previous_path) as prev:
        prev.load()
        h_prev = imagehash.average_hash(prev)
    new = int(h - h_prev) > ORIGINAL_MIN_BITS
    img.save(out_path, "JPEG", quality=95)
    return new


def floor_decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as im:
        im.draft("L", (64, 64))
        im.load()


def make_ours(algo: str, size: int, threshold: int) -> Callable[[bytes], Outcome]:
    rules = Rules(threshold=threshold)
    other = fingerprint(encode(Image.new("RGB", (1920, 1080), (90, 90, 90))), algo, size)
    last = LastFrame("0" * 64, other)
    need = working_size(algo, size)

    def look(data: bytes) -> Looks:
        pixels, full = decode_gray(data, need)
        return Looks(hash_pixels(pixels, full, algo, size))

    return lambda data: decide(data, last, rules, look).outcome


def timed(fns: dict[str, Callable[[], object]], reps: dict[str, int], rounds: int
          ) -> dict[str, float]:
    """Median ms per call; the candidates take turns so drift hits them alike."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    gc.disable()
    try:
        for _ in range(rounds):
            for name, fn in fns.items():
                for _ in range(reps[name]):
                    t = time.perf_counter()
                    fn()
                    samples[name].append((time.perf_counter() - t) * 1000)
    finally:
        gc.enable()
    return {k: statistics.median(v) for k, v in samples.items()}


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--algo", default="phash")
    ap.add_argument("--hash-size", type=int, default=64)
    ap.add_argument("--threshold", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--sweep", action="store_true",
                    help="also print distance ranges for other algorithms and sizes")
    args = ap.parse_args(argv)
    data = FIXTURE.read_bytes()
    algo, size, threshold = args.algo, args.hash_size, args.threshold

    ours = make_ours(algo, size, threshold)
    assert ours(data) is Outcome.STORED, "the benchmark frame must take the whole path"
    with tempfile.TemporaryDirectory() as tmp:
        previous = Path(tmp) / "previous.jpg"
        previous.write_bytes(encode(Image.open(io.BytesIO(data)), 95))
        out = Path(tmp) / "new.jpg"
        ms = timed(
            {
                "decode_floor": lambda: floor_decode(data),
                "ours": lambda: ours(data),
                "original": lambda: original_cycle(data, previous, out),
            },
            {"decode_floor": 10, "ours": 10, "original": 1},
            args.rounds,
        )
    print(f"frame: {FIXTURE.name}, {len(data):,} bytes, 1920x1080; medians, {args.rounds} rounds")
    print(f"  original script cycle      {ms['original']:7.2f} ms")
    print(f"  lyoncam check+fingerprint  {ms['ours']:7.2f} ms "
          f"({algo} {size}x{size}, threshold {threshold})")
    print(f"  draft('L', (64, 64)) floor {ms['decode_floor']:7.2f} ms")
    print(f"  original / ours = {ms['original'] / ms['ours']:.1f}x (target >= 12), "
          f"ours / floor = {ms['ours'] / ms['decode_floor']:.2f} (target <= 1.3)")

    pairs = labelled_pairs(data)
    n_new = sum(p.label == "new" for p in pairs)
    print(f"labelled pairs: {n_new} new (car-sized object appears or moves), "
          f"{len(pairs) - n_new} same (noise, re-encode, brightness)")
    rules = {
        f"lyoncam {algo} {size}, threshold {threshold}": ours_is_new(algo, size, threshold),
        "lyoncam phash 16, threshold 12 (the first default)": ours_is_new("phash", 16, 12),
        f"original average_hash 8, > {ORIGINAL_MIN_BITS}": original_is_new(),
    }
    scores = {name: score(pairs, fn) for name, fn in rules.items()}
    print(f"  {'rule':55s} {'kept when new':>14s} {'dropped when same':>18s}")
    for name, s in scores.items():
        print(f"  {name:55s} {s.kept_when_new:14.1%} {s.dropped_when_same:18.1%}")
        if s.missed_new:
            print(f"      missed: {s.missed_new}")
        if s.worst_same[1]:
            print(f"      kept most often although same: {s.worst_same[0]} ({s.worst_same[1]}x)")
    new_d, same_d = distances(pairs, algo, size)
    print(f"  {algo} {size}: same-scene distance max {max(same_d)}, "
          f"new-scene distance min {min(new_d)}, median {statistics.median(new_d):g} "
          f"(of {size * size} bits)")
    if args.sweep:
        for a, n in [("phash", 16), ("phash", 32), ("phash", 48), ("phash", 64),
                     ("dhash", 16), ("dhash", 32), ("ahash", 16), ("whash", 16)]:
            nd, sd = distances(pairs, a, n)
            print(f"    sweep {a:5s} {n:2d}: same max {max(sd):4d}  new min {min(nd):4d}  "
                  f"new p5 {np.percentile(nd, 5):6.1f}  new median {statistics.median(nd):g}")

    ours_s = scores[next(iter(scores))]
    orig_s = scores[f"original average_hash 8, > {ORIGINAL_MIN_BITS}"]
    result = {
        "ours_ms": round(ms["ours"], 3),
        "original_ms": round(ms["original"], 3),
        "decode_floor_ms": round(ms["decode_floor"], 3),
        "speedup": round(ms["original"] / ms["ours"], 2),
        "ours_over_floor": round(ms["ours"] / ms["decode_floor"], 3),
        "algo": algo,
        "hash_size": size,
        "threshold": threshold,
        "pairs_new": n_new,
        "pairs_same": len(pairs) - n_new,
        "ours_kept_when_new": round(ours_s.kept_when_new, 4),
        "ours_dropped_when_same": round(ours_s.dropped_when_same, 4),
        "original_kept_when_new": round(orig_s.kept_when_new, 4),
        "original_dropped_when_same": round(orig_s.dropped_when_same, 4),
        "same_distance_max": max(same_d),
        "new_distance_min": min(new_d),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
