"""Crash safety (issue 7): SIGKILL the daemon at random moments while 50 cameras write.

After every kill the daemon is started again. What must hold, over the whole data tree:
no undecodable JPEG, no JPEG without its sidecar (or it was removed at the next start, and
the daemon said so), no temp file after a start, no frame stored twice across restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
from PIL import Image

from lyoncam_daemon.devtools.simulator import CriterSimulator, camera_ids, fixture_frame
from tests._procs import STATE_DIR, TMP_MARK, DaemonProcess, log_events

CAMERAS = 50
KILLS = 20
#: Kills go on past KILLS until this many left something to repair and that repair was
#: checked (a quiet machine writes so quickly that few random kills land mid-write), at most
#: MAX_KILLS in all.
MIN_CRASH_ROUNDS = 3
MAX_KILLS = 80
SEED = 7
#: Every camera publishes a new frame each PERIOD s and is polled every INTERVAL s, with no
#: ETag (the real server's is unconfirmed), so only the recovered SHA-256 tells a restarted
#: daemon that the frame on show is stored already. A restart takes one or two seconds, so
#: about half the cameras still show the frame they showed when the daemon was killed.
PERIOD = 3.0
INTERVAL = 0.5
#: A camera walks a cycle of this many distinct frames; the run must stay inside one cycle
#: (checked), or a legitimately republished old frame would look like a duplicate.
VARIANTS = 128
#: A kill comes once the daemon has fetched a random number of new frames in its run, plus
#: a short random delay: tied to the writes rather than the clock, so that on a loaded
#: machine too it lands among frames being checked, written, fsynced and renamed.
KILL_AFTER_FRAMES = (1, 20)
KILL_JITTER_S = (0.0, 0.05)
#: What the daemon logs when it deletes what a killed run left (camera.py `recover`).
REPAIR_EVENT = "removed incomplete files"


def small_frame() -> bytes:
    """The real CriTer frame at a quarter of its size (with its EXIF): 50 cameras writing
    ~35 KB frames keep the test's disk use and decode checks small, and the crash windows
    (temp file written, fsynced, renamed) are the same as for a full frame."""
    img = Image.open(io.BytesIO(fixture_frame()))
    out = io.BytesIO()
    img.resize((480, 270)).save(out, "JPEG", quality=85, exif=img.info.get("exif", b""))
    return out.getvalue()


def write_config(path: Path, data_dir: Path, sim: CriterSimulator) -> None:
    lines = [
        f"data_dir: {data_dir}",
        "shutdown_grace: 5",
        # Health is rewritten every half second, so kills also land around that write.
        "log:\n  format: json\n  level: info\n  summary_interval: 0.5",
        "status:\n  port: 0",  # the endpoint runs too, on a free port
        f"defaults:\n  interval: {INTERVAL}\n  timeout: 5",
        "cameras:",
    ]
    lines += [f"  - id: {cid}\n    url: {sim.url(cid)}" for cid in sim.camera_ids]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class Leftover(NamedTuple):
    """A file a kill left; the inode tells a new file under a reused name from the old one."""

    path: Path
    inode: int


class Snapshot(NamedTuple):
    """The tree after a run, by camera: what a kill left, and the complete frames."""

    left: dict[str, set[Leftover]]
    frames: dict[str, set[Path]]


def snapshot(data_dir: Path, ids: list[str]) -> Snapshot:
    """Leftovers are temp files and JPEGs without a sidecar (the state folder is checked at
    the end); a frame is complete once its sidecar exists (it is renamed last)."""
    left: dict[str, set[Leftover]] = {cid: set() for cid in ids}
    frames: dict[str, set[Path]] = {cid: set() for cid in ids}
    for cid in ids:
        for path in (data_dir / cid).rglob("*"):
            if TMP_MARK in path.name or (path.suffix == ".jpg"
                                         and not path.with_suffix(".json").exists()):
                left[cid].add(Leftover(path, path.stat().st_ino))
            elif path.suffix == ".json":
                frames[cid].add(path)
    return Snapshot(left, frames)


def repairs_logged(daemon: DaemonProcess) -> Counter[str]:
    """Files the daemon says it removed at start, by camera."""
    logged: Counter[str] = Counter()
    for event in daemon.events():
        if str(event.get("event", "")).startswith(REPAIR_EVENT):
            logged[str(event["camera"])] += int(event["files"])
    return logged


def check_repairs(before: Snapshot, after: Snapshot, logged: Counter[str]) -> int:
    """What one run did with what the previous kill left; returns the files it verified.

    A camera repairs before its first poll, so one that stored a new frame in this run has
    removed all it had left and logged exactly that. A camera the kill caught before its
    first frame may have repaired or not; it never claims more than it removed.
    """
    verified = 0
    for cid, was_left in before.left.items():
        gone = was_left - after.left[cid]
        if after.frames[cid] - before.frames[cid]:
            assert gone == was_left, f"{cid}: left after a start: {was_left - gone}"
            assert logged[cid] == len(was_left), (cid, logged[cid], was_left)
            verified += len(was_left)
        else:
            assert logged[cid] <= len(gone), (cid, logged[cid], gone)
    return verified


@pytest.mark.timeout(600)
async def test_sigkill_at_random_moments_leaves_a_clean_tree_without_duplicates(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    data = tmp_path / "data"
    config = tmp_path / "cameras.yaml"
    ids = camera_ids(CAMERAS)
    rounds_with_leftovers = verified = 0
    async with CriterSimulator(ids, period=PERIOD, frame=small_frame(), etag=False,
                               variants=VARIANTS) as sim:
        write_config(config, data, sim)
        new = NewFrames(sim)
        before = snapshot(data, ids)
        run, last = 0, False
        while not last:
            last = run >= MAX_KILLS or (run >= KILLS and min(rounds_with_leftovers, verified)
                                        >= MIN_CRASH_ROUNDS)
            daemon = DaemonProcess(config, tmp_path / f"run{run:02d}.log")
            await daemon.start()
            try:
                await daemon.wait_started()
                if not last:
                    await kill_among_writes(daemon, new, rng)
                else:
                    await stop_after_a_new_frame_each(daemon, new)
            finally:
                await daemon.ensure_dead()
            after = snapshot(data, ids)
            verified += check_repairs(before, after, repairs_logged(daemon))
            rounds_with_leftovers += any(after.left.values())
            before = after
            run += 1
        # A camera shows its cycle of distinct frames once at most: any repeat is the daemon's.
        assert max(sim.tick(cid) for cid in ids) < VARIANTS
        served = {cid: set(sim.stats[cid].served_sha256) for cid in ids}

    assert log_events(tmp_path / f"run{run - 1:02d}.log")[-1]["event"] == "stopped"
    # Some kills did land mid-write (8-17 of 20 in loaded trials, 1 of 20 on a quiet machine,
    # hence the extra kills), and their repairs were checked exactly: else this run proved
    # nothing about crash windows.
    assert rounds_with_leftovers >= MIN_CRASH_ROUNDS and verified >= MIN_CRASH_ROUNDS, (
        rounds_with_leftovers, verified, run)
    await asyncio.to_thread(check_tree, data, ids, served)


class NewFrames:
    """Distinct frames the simulator has sent in full, all cameras together. With no ETag a
    frame is sent again at every poll; only one never sent before leads to a write."""

    def __init__(self, sim: CriterSimulator) -> None:
        self.sim = sim
        self.seen: dict[str, set[str]] = {cid: set() for cid in sim.camera_ids}
        self.read = dict.fromkeys(sim.camera_ids, 0)

    def count(self, camera_id: str | None = None) -> int:
        for cid, stats in self.sim.stats.items():
            fresh = stats.served_sha256[self.read[cid]:]
            self.read[cid] += len(fresh)
            self.seen[cid].update(fresh)
        if camera_id is not None:
            return len(self.seen[camera_id])
        return sum(len(shas) for shas in self.seen.values())


async def kill_among_writes(daemon: DaemonProcess, new: NewFrames, rng: random.Random) -> None:
    goal = new.count() + rng.randint(*KILL_AFTER_FRAMES)
    await daemon.until(lambda: new.count() >= goal, f"{goal} new frames served")
    await asyncio.sleep(rng.uniform(*KILL_JITTER_S))
    await daemon.kill()


async def stop_after_a_new_frame_each(daemon: DaemonProcess, new: NewFrames) -> None:
    """The clean run after the last kill: every camera fetches a new frame, so each one's
    repair is checked exactly, then a normal stop (which lets that frame be written)."""
    was = {cid: new.count(cid) for cid in new.seen}
    await daemon.until(lambda: all(new.count(cid) > n for cid, n in was.items()),
                       "a new frame for every camera")
    assert await daemon.stop() == 0, daemon.tail()


def check_tree(data: Path, ids: list[str], served: dict[str, set[str]]) -> None:
    """Every file of the tree, after the last (clean) run."""
    temps = [p for p in data.rglob("*") if TMP_MARK in p.name]
    assert temps == [], f"temp files left after a start: {temps[:5]}"
    for cid in ids:
        jpgs = sorted((data / cid).rglob("*.jpg"))
        sidecars = sorted((data / cid).rglob("*.json"))
        assert jpgs, f"{cid}: no frame stored in the whole run"
        assert [p.with_suffix(".json") for p in jpgs] == sidecars, f"{cid}: unpaired files"
        seen: dict[str, Path] = {}
        for jpg in jpgs:
            body = jpg.read_bytes()
            meta = json.loads(jpg.with_suffix(".json").read_text(encoding="utf-8"))
            sha = hashlib.sha256(body).hexdigest()
            assert meta["sha256"] == sha and meta["bytes"] == len(body), jpg
            assert sha in served[cid], f"{jpg}: not a body the camera served in full"
            assert sha not in seen, f"{cid}: frame stored twice: {seen[sha].name}, {jpg.name}"
            seen[sha] = jpg
            if not meta["truncated"]:
                with Image.open(io.BytesIO(body)) as img:
                    img.load()  # raises on a truncated or corrupt JPEG


async def test_what_a_kill_can_leave_anywhere_is_removed_at_start_and_said_so(
    tmp_path: Path,
) -> None:
    """The leftovers random kills rarely produce, planted as a kill leaves them.

    A JPEG without its sidecar needs a kill between two renames microseconds apart, and the
    health record's temp file a kill inside its short unsynced write: the random test above
    meets them only now and then. docs/data-layout.md: temp files and a JPEG left without its
    sidecar are removed at the next start — the health record's temp file too.
    """
    data = tmp_path / "data"
    config = tmp_path / "cameras.yaml"
    moment = datetime.now(UTC) - timedelta(minutes=1)
    day = data / "LEFT1" / f"{moment:%Y}" / f"{moment:%m}" / f"{moment:%d}"
    orphan = day / f"LEFT1_{moment:%Y%m%dT%H%M%S}Z.jpg"
    day.mkdir(parents=True)
    orphan.write_bytes(small_frame())  # renamed; its sidecar's rename never came
    frame_temp = day / f".{orphan.name}{TMP_MARK}0badcafe"
    frame_temp.write_bytes(small_frame()[:1000])  # killed mid-write
    (data / STATE_DIR).mkdir()
    health_temp = data / STATE_DIR / f".health.json{TMP_MARK}0badcafe"
    health_temp.write_bytes(b'{"pid": 1, "heartbe')
    async with CriterSimulator(["LEFT1"], period=60, etag=False) as sim:
        write_config(config, data, sim)
        daemon = DaemonProcess(config, tmp_path / "run.log")
        await daemon.start()
        try:
            await daemon.wait_started()
            # A camera repairs before its first poll: once it stored a frame, it has.
            await daemon.until(lambda: any(day.parent.parent.rglob("*.json")), "a new frame")
            assert await daemon.stop() == 0, daemon.tail()
        finally:
            await daemon.ensure_dead()
    assert not orphan.exists() and not frame_temp.exists()
    assert repairs_logged(daemon) == {"LEFT1": 2}
    assert [p.name for p in data.rglob(f"*{TMP_MARK}*")] == []
