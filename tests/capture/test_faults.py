"""Fault matrix (issue 7): every simulator failure mode at once, beside healthy cameras.

All cameras share one host and the default `http.max_per_host: 4`, as every CriTer camera
does. Healthy cameras must keep at least 99 % of the frames published while the daemon ran,
and each failure must be counted under its own outcome or error kind in health.json.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from lyoncam_daemon.devtools.simulator import MODES, CriterSimulator, placeholder_sha256
from tests._procs import DaemonProcess, read_health

#: Where each failure mode must be counted in health.json: (section, kind). docs/commands.md,
#: `run`: outcomes for answers that arrived, errors for polls that failed.
EXPECTED_COUNT = {
    "placeholder": ("outcomes", "placeholder"),
    "truncated": ("outcomes", "truncated"),  # policy `drop`, the default
    "error": ("errors", "http"),              # 500
    "slow": ("errors", "timeout"),            # body dribbled past the camera's timeout
    "html": ("outcomes", "not_image"),        # 200 text/html
    "empty": ("outcomes", "not_image"),       # 200, no body
    "oversized": ("errors", "too_large"),     # body over http.max_frame_bytes
    "reset": ("errors", "connection"),        # connection cut mid-body
    "notfound": ("errors", "http"),           # 404
}
#: As many cameras per failure mode as a host has request slots (`http.max_per_host`, 4 by
#: default): a mode that holds a slot (slow, oversized, reset) gets the chance to hold them
#: all, as when the one CriTer server turns slow for many cameras at once.
PER_MODE = 4
HEALTHY = [f"OK{i}" for i in range(1, 9)]
FAILING = {f"BAD-{mode}-{i}": mode for mode in EXPECTED_COUNT for i in range(1, PER_MODE + 1)}

#: A new frame every PERIOD s, polled every INTERVAL s: each frame is on show for three
#: polls, so only a camera kept from polling for a whole period can lose one.
PERIOD = 1.0
INTERVAL = 0.3
#: Generous for a loaded machine: a healthy frame takes 5-200 ms here. (Scaled like the
#: retry settings it would be 0.33 s, and a start-up wait would then cost no frame.)
TIMEOUT = 2.0
SLOW_SECONDS = 10.0  # well past TIMEOUT: every poll of the slow camera times out
RUN_S = 40.0
#: More distinct frames than a camera publishes in the run, so none comes back.
VARIANTS = 64
KEEP = 0.99


@dataclass
class Published:
    """The frames the simulator published to one camera: sha256 -> when it was on show."""

    shown: dict[str, tuple[float, float]] = field(default_factory=dict)

    def within(self, start: float, end: float) -> set[str]:
        return {sha for sha, (a, b) in self.shown.items() if a >= start and b <= end}


async def watch(sim: CriterSimulator, camera: str, into: Published) -> None:
    """Note each frame the simulator publishes, just after it does, with its time on show.

    Only the simulator's public clock is used (`seconds_to_next_frame`, `current_frame`); a
    frame this watcher misses (a stalled test loop) is merely left out of the expectation.
    """
    while True:
        await asyncio.sleep(sim.seconds_to_next_frame(camera) + 0.05)
        now = time.monotonic()
        end = now + sim.seconds_to_next_frame(camera)
        sha = hashlib.sha256(sim.current_frame(camera)).hexdigest()
        into.shown.setdefault(sha, (end - sim.period, end))


def write_config(path: Path, data_dir: Path, sim: CriterSimulator) -> None:
    lines = [
        f"data_dir: {data_dir}",
        f"placeholder_sha256: [{placeholder_sha256()}]",
        # The slow camera's poll in flight at SIGTERM ends (timeout) inside the grace.
        f"shutdown_grace: {TIMEOUT + 3}",
        "log:\n  format: json\n  summary_interval: 1",
        # http.max_concurrent and max_per_host keep their defaults (8 and 4): one host.
        "http:\n  max_frame_bytes: 1MB",
        # The real retry settings scaled from a 60 s period down to PERIOD.
        "retry:\n  backoff_initial: 0.25\n  backoff_max: 5\n  down_after: 15\n"
        "  down_probe_interval: 10",
        "status:\n  port: 0",  # the endpoint runs too, on a free port
        f"defaults:\n  interval: {INTERVAL}\n  timeout: {TIMEOUT}",
        "cameras:",
    ]
    lines += [f"  - id: {cid}\n    url: {sim.url(cid)}" for cid in sim.camera_ids]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def stored_sha256(data_dir: Path, camera: str) -> list[str]:
    return [json.loads(p.read_text(encoding="utf-8"))["sha256"]
            for p in sorted((data_dir / camera).rglob(f"{camera}_*.json"))]


def test_every_failure_mode_is_covered() -> None:
    assert set(EXPECTED_COUNT) == set(MODES) - {"ok"}


async def test_failures_beside_healthy_cameras_are_counted_and_cost_them_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "cameras.yaml"
    # No ETag (the real server's is unconfirmed): every poll goes through every check.
    async with CriterSimulator([*HEALTHY, *FAILING], period=PERIOD, modes=FAILING, etag=False,
                               slow_seconds=SLOW_SECONDS, oversize_bytes=3_000_000,
                               variants=VARIANTS) as sim:
        write_config(config, data, sim)
        published = {cid: Published() for cid in HEALTHY}
        watchers = [asyncio.create_task(watch(sim, cid, published[cid])) for cid in HEALTHY]
        daemon = DaemonProcess(config, tmp_path / "run.log")
        try:
            await daemon.start()
            await daemon.wait_started()
            await asyncio.sleep(RUN_S)
            stopping_at = time.monotonic()
            assert await daemon.stop() == 0, daemon.tail()
        finally:
            for task in watchers:
                task.cancel()
            await daemon.ensure_dead()
        assert max(sim.tick(cid) for cid in HEALTHY) < VARIANTS  # no frame came back

    # Frames shown wholly between the end of start-up and SIGTERM; the frames on show at
    # either edge are partial periods and are left out of the count. Start-up ends when
    # every camera has polled once (one INTERVAL after "started": phases are spread over
    # one interval) and the slow cameras' first poll has timed out: until then nobody knows
    # they are slow, and they may hold every slot of the host for that one TIMEOUT.
    start = daemon.started_at + INTERVAL + TIMEOUT
    health = read_health(data)
    cams = health["cameras"]
    short = {}
    for cid in HEALTHY:
        expected = published[cid].within(start, stopping_at)
        assert len(expected) >= 20, f"{cid}: only {len(expected)} frames watched"
        kept = expected & set(stored_sha256(data, cid))
        if len(kept) < KEEP * len(expected):
            short[cid] = f"{len(kept)}/{len(expected)}, polls {cams[cid]['polls']}, " \
                         f"errors {cams[cid]['errors']}"
    # Every healthy camera on its own: one starved camera must not hide behind the others.
    assert short == {}, f"healthy cameras that lost frames (kept/published): {short}"

    for cid, mode in FAILING.items():
        section, kind = EXPECTED_COUNT[mode]
        counted = {f"{s}.{k}": n for s in ("outcomes", "errors")
                   for k, n in cams[cid][s].items() if n}
        # Every poll ended, and each under this mode's kind, never under another.
        assert counted == {f"{section}.{kind}": cams[cid]["polls"]}, (cid, cams[cid])
        assert cams[cid]["polls"] >= 2, (cid, cams[cid])
        assert stored_sha256(data, cid) == [], cid
