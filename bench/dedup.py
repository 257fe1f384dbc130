"""Benchmark and accuracy check of the frame checks and the dedup stage (issues 3, 7, 16).

Run: ``.venv/bin/python -m bench.dedup`` (a few minutes; ``--no-accuracy`` for the cost
alone). Everything is measured in one run on the real 1920x1080 fixture frame, as medians of
many interleaved repetitions, per *new* frame (the one that costs most on both sides):

- ``ours_with_store`` against ``original``: lyoncam's whole path for a new frame and its
  durable store (SHA-256, byte checks, reduced-scale decode, fingerprint, local change test,
  decision, then frame and sidecar written as the daemon stores them: temp file, fsync,
  rename, directory fsync), against the original script's whole cycle (full decode,
  ``average_hash``, reopen the last saved frame and hash it, a re-encoded ``img.save``).
- ``ours`` against ``decode_floor``: checks + fingerprint + local test, against the bare
  ``draft('L', (64, 64))`` decode of the same bytes, the least any pixel-based check can cost;
  ``ours_before_issue16`` is the same chain without the local test, measured beside it.
  These three are compared by CPU time (this thread's clock: what a frame costs the pool,
  whatever else the machine runs), wall time printed beside it.

Then the road-user pair set (``bench/roadusers.py``, tuning and held-out halves) is judged
by lyoncam's whole decision, by the fingerprint rule alone (the rule before issue 16) and
by the original ``average_hash > 2``, per kind. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import imagehash
from PIL import Image

from bench.pairs import Pair, encode
from bench.roadusers import Half, road_user_pairs
from lyoncam_daemon import __version__
from lyoncam_daemon.config import CameraConfig, DedupSettings
from lyoncam_daemon.frames.change import Reference, reference
from lyoncam_daemon.frames.fingerprint import (
    Fingerprint,
    decode_gray,
    fingerprint,
    hash_pixels,
    working_size,
)
from lyoncam_daemon.frames.jpeg import sha256_hex
from lyoncam_daemon.frames.judge import (
    Judge,
    LastFrame,
    Looks,
    Outcome,
    Rules,
    Verdict,
    decide,
)

# The project's durable store, the one the daemon writes with. If it changes, these two
# imports and `make_ours_with_store` are the only places to follow it.
from lyoncam_daemon.storage import Frame
from lyoncam_daemon.storage.filesystem import FilesystemStorage

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "CWL9018_night.jpg"
#: The original script: average_hash distance above this counted as a new frame.
ORIGINAL_MIN_BITS = 2
#: The judge's pool is never used here: the benchmark calls its synchronous decision.
_NO_POOL = concurrent.futures.ThreadPoolExecutor(1)
_CAMERA = CameraConfig(id="CWL9018", url="http://127.0.0.1/CWL9018.JPG")


def change_reference(data: bytes) -> Reference:
    pixels, full = decode_gray(data, working_size("phash", 64))
    return reference(pixels, full)


# --- rules under test ------------------------------------------------------------------------


def ours_is_new(algo: str, size: int, threshold: int) -> Callable[[bytes, bytes], bool]:
    cache: dict[bytes, Fingerprint] = {}

    def fp(data: bytes) -> Fingerprint:
        if data not in cache:
            cache[data] = fingerprint(data, algo, size)
        return cache[data]

    return lambda prev, cur: fp(prev).distance(fp(cur)) > threshold


def judge_is_new(algo: str, size: int, threshold: int, sensitivity: float = 1.0
                 ) -> Callable[[bytes, bytes], bool]:
    """The daemon's whole decision (fingerprint and local test), the previous frame stored
    just before: its reference rebuilt as at a restart, noise not yet learnt (a fresh
    camera: the threshold as tuned, neither raised nor lowered)."""
    settings = DedupSettings(hash=algo, hash_size=size, sensitivity=sensitivity)
    judge = Judge(settings, (), _NO_POOL)
    state = judge.camera_state(_CAMERA.model_copy(update={"threshold": threshold}))

    def is_new(prev: bytes, cur: bytes) -> bool:
        last = judge.remembered(prev, LastFrame(sha256_hex(prev), fingerprint(prev, algo, size)))
        return judge.decide_now(cur, last, state).outcome is Outcome.STORED

    return is_new


def original_is_new() -> Callable[[bytes, bytes], bool]:
    cache: dict[bytes, imagehash.ImageHash] = {}

    def ah(data: bytes) -> imagehash.ImageHash:
        if data not in cache:
            cache[data] = imagehash.average_hash(Image.open(io.BytesIO(data)))
        return cache[data]

    return lambda prev, cur: int(ah(prev) - ah(cur)) > ORIGINAL_MIN_BITS


# --- timing ----------------------------------------------------------------------------------


def original_cycle(data: bytes, last_saved: Path, out_path: Path) -> Path:
    """BASELINE: the original script's cycle for a new frame, step for step."""
    img = Image.open(io.BytesIO(data))
    h = imagehash.average_hash(img)  # converts, so decodes the whole frame
    h_prev = imagehash.average_hash(Image.open(last_saved))  # liste_images[-1]
    if int(h - h_prev) > ORIGINAL_MIN_BITS:
        img.save(out_path)  # re-encoded at the default quality (75), not fsynced
    return out_path


def floor_decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as im:
        im.draft("L", (64, 64))
        im.load()


def make_ours(algo: str, size: int, threshold: int, local: bool = True
              ) -> Callable[[bytes], Verdict]:
    """The decision chain as the daemon runs it, the last stored frame another real scene
    (the fixture mirrored). `local=False` is the chain before issue 16: the same decode,
    fingerprint and image statistics as the judge's look, no local test."""
    other = encode(Image.open(FIXTURE).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    if local:
        judge = Judge(DedupSettings(hash=algo, hash_size=size), (), _NO_POOL)
        state = judge.camera_state(_CAMERA.model_copy(update={"threshold": threshold}))
        last_frame = judge.remembered(other, LastFrame("0" * 64, fingerprint(other, algo, size)))
        return lambda data: judge.decide_now(data, last_frame, state)
    rules = Rules(threshold=threshold)
    last = LastFrame("0" * 64, fingerprint(other, algo, size))
    need = working_size(algo, size)

    def look(data: bytes) -> Looks:
        pixels, full = decode_gray(data, need)
        return Looks(hash_pixels(pixels, full, algo, size), None,
                     round(float(pixels.mean()), 2), round(float(pixels.std()), 2))

    return lambda data: decide(data, last, rules, look)


def sidecar(data: bytes, v: Verdict, moment: datetime) -> dict[str, Any]:
    """The fields the daemon writes beside a frame (camera.build_sidecar's, same types)."""
    return {
        "camera_id": "CWL9018", "camera_name": "Pont Clemenceau", "lat": 45.77, "lon": 4.82,
        "captured_at": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "url": "http://127.0.0.1/CWL9018.JPG", "sha256": v.sha256, "bytes": len(data),
        "width": v.width, "height": v.height, "etag": None, "last_modified": None,
        "exif_datetime": v.exif_datetime,
        "fingerprint": v.fingerprint.to_json() if v.fingerprint else None,
        "distance": v.distance, "truncated": v.truncated, "fetch_ms": 12.3,
        "lyoncam_version": __version__,
    }


def make_ours_with_store(ours: Callable[[bytes], Verdict], data_dir: Path
                         ) -> Callable[[bytes], Path]:
    store = FilesystemStorage(data_dir)
    # One second apart, so each frame gets its own name, as in the daemon.
    moments = (datetime(2026, 11, 26, tzinfo=UTC) + timedelta(seconds=i) for i in range(10**9))

    def new_frame(data: bytes) -> Path:
        verdict = ours(data)
        moment = next(moments)
        # `write` is the blocking body of `await store.save(frame)`, which runs it in a
        # worker thread: all of the store's work but the thread hop (tens of microseconds).
        stored = store.write(Frame("CWL9018", moment, data, sidecar(data, verdict, moment)))
        return store.path_of(stored.key)

    return new_frame


def timed(fns: dict[str, Callable[[], object]], reps: dict[str, int], rounds: int
          ) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms per call, by the wall clock and by this thread's CPU clock; the candidates
    take turns so drift hits them alike. The CPU clock is what a frame costs the daemon's
    pool and does not count the time another process held the core, so its ratios hold on
    a busy machine; the wall clock counts the waits for the disk that a store makes. A file
    a candidate returns is deleted (with its sidecar) after the clocks stop, so the data
    folder stays small."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    gc.disable()
    try:
        for _ in range(rounds):
            for name, fn in fns.items():
                for _ in range(reps[name]):
                    t, c = time.perf_counter(), time.thread_time()
                    result = fn()
                    cpu[name].append((time.thread_time() - c) * 1000)
                    samples[name].append((time.perf_counter() - t) * 1000)
                    if isinstance(result, Path):
                        result.unlink(missing_ok=True)
                        result.with_suffix(".json").unlink(missing_ok=True)
    finally:
        gc.enable()
    return ({k: statistics.median(v) for k, v in samples.items()},
            {k: statistics.median(v) for k, v in cpu.items()})


def measure(data: bytes, algo: str, size: int, threshold: int, rounds: int
            ) -> tuple[dict[str, float], dict[str, float]]:
    ours = make_ours(algo, size, threshold)
    before = make_ours(algo, size, threshold, local=False)
    assert ours(data).outcome is Outcome.STORED, "the benchmark frame must take the whole path"
    verdict = ours(data)
    assert verdict.decision is not None and verdict.decision.tile_score is not None, \
        "the local test must run"
    frame = Image.open(io.BytesIO(data)).convert("RGB")
    # Beside the checkout, not in /tmp (a tmpfs on many servers): fsync must cost what it
    # costs on the disk a data_dir lives on.
    with tempfile.TemporaryDirectory(prefix=".lyoncam-bench-", dir=REPO) as tmp:
        last_saved = Path(tmp) / "flat" / "CWL9018_previous.jpg"
        last_saved.parent.mkdir()
        # The original's previous frame: another scene, saved by it, so a default re-encode.
        frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(last_saved)
        assert original_cycle(data, last_saved, Path(tmp) / "check.jpg").exists(), \
            "the original must take its whole path (save) too"
        with_store = make_ours_with_store(ours, Path(tmp) / "data")
        return timed(
            {
                "decode_floor": lambda: floor_decode(data),
                "ours": lambda: ours(data),
                "ours_before_issue16": lambda: before(data),
                "ours_with_store": lambda: with_store(data),
                "original": lambda: original_cycle(data, last_saved,
                                                   last_saved.with_name("CWL9018_new.jpg")),
            },
            {"decode_floor": 10, "ours": 10, "ours_before_issue16": 10, "ours_with_store": 3,
             "original": 1},
            rounds,
        )


# --- main ------------------------------------------------------------------------------------


def per_kind(pairs: list[Pair], rules: dict[str, Callable[[bytes, bytes], bool]]
             ) -> dict[str, dict[str, list[int]]]:
    """rule -> kind -> [right, total] ("right": a new pair stored, a copy dropped)."""
    out: dict[str, dict[str, list[int]]] = {}
    for name, is_new in rules.items():
        table = out.setdefault(name, {})
        for p in pairs:
            right = is_new(p.previous, p.current) == (p.label == "new")
            cell = table.setdefault(f"{p.label}: {p.kind}", [0, 0])
            cell[0] += right
            cell[1] += 1
    return out


def print_kinds(title: str, table: dict[str, dict[str, list[int]]]) -> dict[str, Any]:
    names = list(table)
    kinds = sorted(table[names[0]])
    print(f"\n{title}")
    print(f"  {'kind (new: % kept; same: % dropped)':58s}"
          + "".join(f"{n[:16]:>18s}" for n in names))
    for kind in kinds:
        cells = [table[n][kind] for n in names]
        print(f"  {kind[:58]:58s}"
              + "".join(f"{r:>9d}/{t:<3d}{r / t:5.0%}" for r, t in cells))
    figures: dict[str, Any] = {}
    for n in names:
        for label, people in (("new", False), ("same", False), ("new", True)):
            rows = [v for k, v in table[n].items() if k.startswith(label + ":")
                    and (not people or ("person" in k and " 28 px" not in k))]
            right, total = sum(r[0] for r in rows), sum(r[1] for r in rows)
            what = "people_32px_up_kept" if people else ("new_kept" if label == "new"
                                                         else "same_dropped")
            figures[f"{n}: {what}"] = round(right / total, 4) if total else None
    for k, v in figures.items():
        print(f"  {k:70s} {v:.1%}" if v is not None else f"  {k}: -")
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--algo", default="phash")
    ap.add_argument("--hash-size", type=int, default=64)
    ap.add_argument("--threshold", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--per-kind", type=int, default=10,
                    help="instances of each kind per base frame in the road-user set")
    ap.add_argument("--no-accuracy", action="store_true", help="the cost figures only")
    args = ap.parse_args(argv)
    data = FIXTURE.read_bytes()
    algo, size, threshold = args.algo, args.hash_size, args.threshold

    ms, cpu = measure(data, algo, size, threshold, args.rounds)
    print(f"frame: {FIXTURE.name}, {len(data):,} bytes, 1920x1080; per new frame, medians of "
          f"{args.rounds} interleaved rounds")
    print(f"  {'path':52s} {'ms':>8s}   baseline")
    print(f"  {'original script: whole cycle, re-encoded save':52s} {ms['original']:8.2f}")
    print(f"  {'lyoncam: checks + fingerprint + local test + store':52s} "
          f"{ms['ours_with_store']:8.2f}   original / this = "
          f"{ms['original'] / ms['ours_with_store']:.1f}x")
    print(f"  {'CPU ms (wall ms)':>61s}")
    for name, label in (("decode_floor", "bare draft(L, 64x64) decode (floor)"),
                        ("ours_before_issue16", "lyoncam before issue 16: checks + fingerprint"),
                        ("ours", "lyoncam: checks + fingerprint + local test")):
        line = f"  {label:52s} {cpu[name]:8.2f} ({ms[name]:.2f})"
        if name != "decode_floor":
            line += (f"   this / floor = {cpu[name] / cpu['decode_floor']:.2f} CPU, "
                     f"{ms[name] / ms['decode_floor']:.2f} wall")
        print(line + ("  (target <= 1.35)" if name == "ours" else ""))
    ref = change_reference(data)
    print(f"  reference kept per camera: {ref.nbytes:,} bytes of cells "
          f"({ref.cells.shape[1]}x{ref.cells.shape[0]} at 1920x1080)")

    result: dict[str, Any] = {
        "ours_ms": round(ms["ours"], 3),
        "ours_before_issue16_ms": round(ms["ours_before_issue16"], 3),
        "decode_floor_ms": round(ms["decode_floor"], 3),
        "ours_with_store_ms": round(ms["ours_with_store"], 3),
        "original_ms": round(ms["original"], 3),
        "speedup_with_store": round(ms["original"] / ms["ours_with_store"], 2),
        "ours_cpu_ms": round(cpu["ours"], 3),
        "ours_before_issue16_cpu_ms": round(cpu["ours_before_issue16"], 3),
        "decode_floor_cpu_ms": round(cpu["decode_floor"], 3),
        "ours_over_floor": round(cpu["ours"] / cpu["decode_floor"], 3),
        "before_issue16_over_floor": round(cpu["ours_before_issue16"] / cpu["decode_floor"], 3),
        "ours_over_floor_wall": round(ms["ours"] / ms["decode_floor"], 3),
        "reference_bytes": ref.nbytes,
        "algo": algo, "hash_size": size, "threshold": threshold,
        "store": f"{FilesystemStorage.__module__}.{FilesystemStorage.__qualname__}.write",
    }
    if not args.no_accuracy:
        rules = {
            "lyoncam (fingerprint + local test)": judge_is_new(algo, size, threshold),
            # What the one knob does, for users choosing it; nothing is chosen on this.
            "sensitivity 0.75": judge_is_new(algo, size, threshold, 0.75),
            "sensitivity 1.5": judge_is_new(algo, size, threshold, 1.5),
            f"today: phash {size} > {threshold}": ours_is_new(algo, size, threshold),
            f"original average_hash > {ORIGINAL_MIN_BITS}": original_is_new(),
        }
        halves: tuple[tuple[Half, str], ...] = (
            ("tuning", "tuning half (every constant was chosen on it)"),
            ("heldout", "held-out half (other seeds, positions, base frames; nothing chosen "
                        "on it)"))
        for half, title in halves:
            pairs = road_user_pairs(data, half, args.per_kind)
            figures = print_kinds(f"{title}: {len(pairs)} pairs", per_kind(pairs, rules))
            result |= {f"{half} {k}": v for k, v in figures.items()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
