"""Benchmark of the frame index on a million frames, against reading the sidecars directly.

Run: ``.venv/bin/python -m bench.index`` (about 2-3 minutes on 2 cores, ~250 MB of disk in
a temp folder). Why: `report` and `sample` must stay quick when a collection reaches a
million frames (15 cameras, one new frame a minute each, for about 6 weeks), which is what
the index is for; without it every report walks and parses every sidecar.

- ``index``: a million synthetic sidecars (15 cameras, one a minute, dayparts from the real
  sun, weather labels drawn at random) turned into index rows with the same code as the hook
  (`index.row_of`, `index.upsert` in batches), then `dataset.report` timed on them (best of
  3) and `dataset.sample(n=500)` with no sidecar behind the rows: the index's part of a
  sample alone, and how many candidates' sidecars the real command would read.
- ``hook``: frames added one transaction each, as the daemon's post-store hook does.
- ``baseline``: the same report computed without an index from N real sidecar files written
  as the filesystem store writes them (walk, read, parse JSON, count), per frame (best of 3,
  the same rule as the index's report), and `index --rebuild` of that tree; both
  extrapolated linearly to a million frames.
- ``sample command``: the real `sample --n 500` (the CLI in this process: index, then each
  candidate's sidecar read and its fingerprint compared) on that tree of N frames, best of
  3. A million sidecar files are not written here; the million-row figure above is the
  index's part only, and its count of sidecar reads times the measured cost of one read is
  printed as an estimate, labelled so.

Prints each figure and the ratio baseline / index for a report; the last line is one JSON
object with everything.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lyoncam_daemon.curation.dataset import report, sample
from lyoncam_daemon.curation.index import connect, frame_keys, refresh, row_of, upsert
from lyoncam_daemon.enrich.daylight import daylight_fields
from lyoncam_daemon.enrich.weather import LABELS
from lyoncam_daemon.storage import Frame
from lyoncam_daemon.storage.filesystem import FilesystemStorage
from lyoncam_daemon.storage.layout import frame_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CAMERAS = [f"CWL90{n:02d}" for n in range(15)]


def sidecars(count: int, seed: int = 1) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, sidecar) of `count` frames: each camera one a minute, in time order."""
    rng = random.Random(seed)
    daylight: dict[datetime, dict[str, Any]] = {}
    for n in range(count):
        camera = CAMERAS[n % len(CAMERAS)]
        when = T0 + timedelta(minutes=n // len(CAMERAS), seconds=n % len(CAMERAS))
        minute = when.replace(second=0)
        if minute not in daylight:  # the sun moves little in a minute: one computation
            daylight = {minute: daylight_fields(45.76, 4.84, minute)}
        meta = {
            "camera_id": camera, "camera_name": camera, "lat": 45.76, "lon": 4.84,
            "captured_at": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "sha256": f"{rng.getrandbits(256):064x}", "bytes": 300_000, "width": 1920,
            "height": 1080,
            "fingerprint": {"algo": "phash", "hash_size": 64, "v": 1,
                            "hex": f"{rng.getrandbits(4096):01024x}"},
            **daylight[minute],
            "weather": {"code": 0, "label": rng.choice(LABELS)},
            "brightness": round(rng.uniform(10, 200), 2), "contrast": round(rng.uniform(5, 60), 2),
        }
        yield frame_key(camera, when), meta


def build_index(db: sqlite3.Connection, count: int, batch: int = 5000) -> float:
    """Seconds to turn `count` sidecars into index rows (generation excluded)."""
    spent, rows = 0.0, []
    for key, meta in sidecars(count):
        rows.append((key, meta))
        if len(rows) == batch:
            spent += _load(db, rows)
    return spent + _load(db, rows)


def _load(db: sqlite3.Connection, rows: list[tuple[str, dict[str, Any]]]) -> float:
    start = time.perf_counter()
    now = time.time()
    upsert(db, [row_of(k, m, now) for k, m in rows])
    rows.clear()
    return time.perf_counter() - start


def best_of(runs: int, fn: Any) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def report_from_sidecars(data_dir: Path) -> Counter[tuple[str, str, str]]:
    """What `report` would do without an index: walk, read and parse every sidecar."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for key in frame_keys(data_dir):
        meta = json.loads((data_dir / key).with_suffix(".json").read_bytes())
        weather = meta.get("weather") or {}
        counts[(meta["camera_id"], meta.get("daypart") or "unknown",
                weather.get("label") or "unknown")] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--baseline-files", type=int, default=20_000)
    parser.add_argument("--hook-frames", type=int, default=2_000)
    args = parser.parse_args()
    out: dict[str, Any] = {"frames": args.frames, "baseline_files": args.baseline_files}
    with tempfile.TemporaryDirectory(prefix="lyoncam-bench-index-") as tmp:
        base = Path(tmp)
        db = connect(base / "big" / "index.sqlite")
        out["index_build_s"] = build_index(db, args.frames)
        out["index_bytes"] = (base / "big" / "index.sqlite").stat().st_size
        print(f"index: {args.frames} rows in {out['index_build_s']:.1f} s "
              f"({args.frames / out['index_build_s']:.0f} rows/s), "
              f"{out['index_bytes'] / 1e6:.0f} MB")
        rep: dict[str, Any] = {}

        def run_report() -> None:
            rep.update(report(db))

        out["report_s"] = best_of(3, run_report)
        assert rep["total"] == args.frames
        print(f"report on {args.frames} frames: {out['report_s']:.2f} s")
        reads: list[str] = []

        def no_sidecar(key: str) -> None:
            reads.append(key)  # what the real command would read from disk here

        out["sample_index_only_s"] = best_of(1, lambda: sample(db, 500, no_sidecar))
        out["sample_sidecar_reads"] = len(reads)
        print(f"sample --n 500 on {args.frames} index rows, no sidecar read: "
              f"{out['sample_index_only_s']:.2f} s ({len(reads)} candidates' sidecars the "
              "command would read)")
        db.close()

        # The hook: one transaction per frame, as frames arrive.
        hook_db = connect(base / "hook" / "index.sqlite")
        now = time.time()
        frames = list(sidecars(args.hook_frames, seed=2))
        start = time.perf_counter()
        for key, meta in frames:
            upsert(hook_db, [row_of(key, meta, now)])
        out["hook_ms_per_frame"] = (time.perf_counter() - start) * 1000 / args.hook_frames
        hook_db.close()
        print(f"hook: {out['hook_ms_per_frame']:.3f} ms per frame")

        # Baseline: real sidecar files, as the filesystem store writes them.
        tree = base / "tree"
        store = FilesystemStorage(tree)
        for key, meta in sidecars(args.baseline_files, seed=3):
            when = datetime.fromisoformat(meta["captured_at"])
            stored = store.write(Frame(meta["camera_id"], when, b"\xff\xd8\xff\xd9", meta))
            assert stored.key == key
        counts: Counter[tuple[str, str, str]] = Counter()

        def walk() -> None:
            counts.clear()
            counts.update(report_from_sidecars(tree))

        walk_s = best_of(3, walk)
        assert sum(counts.values()) == args.baseline_files
        scale = args.frames / args.baseline_files
        out["baseline_report_s"] = walk_s * scale
        rebuild_s = best_of(1, lambda: refresh(tree, rebuild=True))
        out["rebuild_s"] = rebuild_s * scale
        print(f"baseline: report from {args.baseline_files} sidecar files {walk_s:.2f} s "
              f"-> {out['baseline_report_s']:.0f} s for {args.frames} (linear)")
        print(f"index --rebuild: {rebuild_s:.2f} s for {args.baseline_files} sidecars -> "
              f"{out['rebuild_s']:.0f} s for {args.frames}")
        out["ratio_report"] = out["baseline_report_s"] / out["report_s"]
        print(f"report: index is {out['ratio_report']:.0f}x faster than reading the sidecars "
              "(both best of 3)")

        # The real `sample` command on the tree of real sidecars (its index just rebuilt).
        picked = base / "sample.json"
        out["sample_command_s"] = best_of(3, lambda: _sample_command(tree, picked))
        got = len(json.loads(picked.read_text())["frames"])
        read_ms = walk_s * 1000 / args.baseline_files
        out["sample_command_frames"] = args.baseline_files
        out["sample_estimate_s"] = (out["sample_index_only_s"]
                                    + out["sample_sidecar_reads"] * read_ms / 1000)
        print(f"sample --n 500 command on {args.baseline_files} frames (sidecars read and "
              f"compared): {out['sample_command_s']:.2f} s, {got} frames picked")
        print(f"sample --n 500 on {args.frames} frames, ESTIMATE (index part measured + "
              f"{out['sample_sidecar_reads']} sidecar reads x {read_ms:.3f} ms measured "
              f"above): {out['sample_estimate_s']:.1f} s")
    print(json.dumps(out))


def _sample_command(tree: Path, out: Path) -> None:
    from lyoncam_daemon.cli import main as cli

    assert cli(["sample", "--data-dir", str(tree), "--n", "500", "--out", str(out)]) == 0


if __name__ == "__main__":
    main()
