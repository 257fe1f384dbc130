"""Benchmark of the capture daemon's CPU and memory, against the original one-process-per-camera
script measured in the same run.

Run: ``.venv/bin/python -m bench.capture`` (about 2 min on 2 cores). Why: lyoncam must run
for months on a small server, and the original script needed one ~65 MB process per camera and
a full decode, hash, re-read of the previous frame and re-encode on every new frame
(FIELD_NOTES.md). Speed and memory targets live here, never in timed unit tests.

Everything runs on loopback against simulated CriTer servers
(``python -m lyoncam_daemon simulate``, own processes, ports picked by the kernel) whose
cameras publish a new frame every ``--period`` seconds. Every client polls every
``--interval`` seconds; the default 1 s / 3 s keeps the real ratio (original: polled every
20 s, cameras republish every 60 s), so two polls in three see a repeat.

- ``ours``: the daemon (``Daemon(config).run()``, what ``run`` calls) in its own process, on
  N cameras (15 like the real catalogue, then 100). The config floor of 10 s is lowered to
  0.5 s through ``parse_config(context=...)``; otherwise it is ``run`` with logging at
  ``warning`` and the health record rewritten every second (default: every 300 s; a little
  CPU is counted for it). The window is aligned on those rewrites so the poll count and the
  CPU time cover the same span. Whether CriTer sends ETags is unconfirmed, so each count is
  measured against a server without ETags (every poll downloads the whole frame; the
  headline) and one with them (a repeat costs a 304); ``--etag`` picks one.
- ``original``: the original script's loop re-created step for step (``child_original``,
  clearly labelled), one process per camera (``--original-processes``, default 5), same
  interval, against the server without ETags (it sends no validators, so they would change
  nothing for it).

Measured from /proc, for the measured processes only (not the simulator): CPU time
(utime + stime, all threads) over a window after a warm-up, divided by the polls completed
in that window; RSS (VmRSS) sampled every 0.5 s, its peak (VmHWM), and PSS (which shares
library pages fairly among the original's processes). Printed as ratios original / ours;
the memory ratio compares PSS with PSS (RSS counts the libraries every one of the
original's processes maps once per process, which would inflate its side);
the last line printed is one JSON object: top-level figures for the smallest camera count
against the server without ETags (``polls`` in the window, ``stored_frames`` over the whole
run), the same against the server with ETags under ``with_etag``, every run under ``ours``
and ``original``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
#: The original script: an average_hash distance at or under this was a repeat.
ORIGINAL_MAX_REPEAT_BITS = 2
SAMPLE_EVERY = 0.5


# --- /proc -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # fields 14 and 15 of proc(5)


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Sampled:
    """RSS of a group of processes over time, and their CPU time at the window's edges."""

    pids: list[int]
    times: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    cpu0: float = 0.0
    cpu1: float = 0.0
    t0: float = 0.0
    t1: float = 0.0

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids)

    def start(self) -> None:
        self.t0, self.cpu0 = time.monotonic(), self.cpu()

    def end(self) -> None:
        self.t1, self.cpu1 = time.monotonic(), self.cpu()

    def sample(self) -> None:
        self.times.append(time.monotonic())
        self.rss_kb.append(sum(status_kb(p, "VmRSS") for p in self.pids))

    def peak_kb(self) -> int:
        return sum(status_kb(p, "VmHWM") for p in self.pids)

    def pss_kb(self) -> int:
        return sum(pss_kb(p) for p in self.pids)

    def growth_mb_per_min(self) -> float:
        if len(self.times) < 3:
            return 0.0
        slope, _ = statistics.linear_regression(self.times, self.rss_kb)
        return slope * 60 / 1024


def sample_until(group: Sampled, deadline: float) -> None:
    while True:
        group.sample()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(SAMPLE_EVERY, left))


# --- processes -------------------------------------------------------------------------------


class Processes:
    """Every process the benchmark starts; all stopped on exit, even on error or Ctrl-C."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.files: list[IO[bytes]] = []

    def start(self, args: Sequence[str], log: Path, stdout: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        err = log.open("wb")
        self.files.append(err)
        out: IO[bytes] | int = subprocess.DEVNULL
        if stdout is not None:
            out = stdout.open("wb")
            self.files.append(out)
        # A session of its own: a Ctrl-C reaches only us, and we stop the children in order.
        proc = subprocess.Popen(list(args), cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True,
                                env={**os.environ, **env} if env else None)
        self.procs.append(proc)
        return proc

    def stop(self, procs: Sequence[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        # A second Ctrl-C must not leave children behind; stop() is bounded by its grace.
        previous = {sig: signal.signal(sig, signal.SIG_IGN)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.stop(self.procs)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for f in self.files:
                f.close()


def child_command(role: str, *args: object) -> list[str]:
    return [sys.executable, "-m", "bench.capture", "--child", role, *map(str, args)]


def wait_for(what: str, check: Any, timeout: float, procs: Sequence[subprocess.Popen[bytes]],
             logs: Sequence[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for p, log in zip(procs, logs, strict=True):
            if p.poll() is not None:
                raise RuntimeError(f"{what}: process exited with {p.returncode}:\n"
                                   + log.read_text(errors="replace")[-2000:])
        time.sleep(0.01)
    raise RuntimeError(f"{what}: not ready after {timeout:g} s")


# --- the simulator ---------------------------------------------------------------------------


def start_simulator(procs: Processes, tmp: Path, cameras: int, period: float,
                    etag: bool) -> list[str]:
    """The simulator on 127.0.0.1, port 0; returns the camera URLs from its written config."""
    import yaml

    tag = "etag" if etag else "no-etag"
    config = tmp / f"simulator-{tag}.yaml"
    log = tmp / f"simulator-{tag}.log"
    args = [sys.executable, "-m", "lyoncam_daemon", "simulate", "--cameras", str(cameras),
            "--period", str(period), "--host", "127.0.0.1", "--port", "0",
            "--write-config", str(config)]
    if not etag:
        args.append("--no-etag")
    proc = procs.start(args, log)
    wait_for("simulator", config.exists, 30, [proc], [log])
    doc = yaml.safe_load(config.read_text())
    return [str(cam["url"]) for cam in doc["cameras"]]


# --- ours ------------------------------------------------------------------------------------


def child_daemon(config_path: str, seconds: str) -> int:
    """The daemon as `run` starts it, with the interval floor lowered and a safety stop."""
    import asyncio

    from lyoncam_daemon.capture.daemon import Daemon
    from lyoncam_daemon.config import parse_config
    from lyoncam_daemon.observe.logs import configure_logging

    path = Path(config_path)
    config = parse_config(path.read_text(), str(path), path.parent, {"min_interval": 0.5})
    configure_logging(config.log.format, config.log.level)

    async def main() -> int:
        daemon = Daemon(config)
        asyncio.get_running_loop().call_later(float(seconds), daemon.request_stop)
        return await daemon.run()

    return asyncio.run(main())


def write_daemon_config(path: Path, urls: Sequence[str], data_dir: Path,
                        interval: float) -> None:
    import yaml

    doc = {
        "data_dir": str(data_dir),
        "shutdown_grace": 2,
        "log": {"format": "json", "level": "warning", "summary_interval": 1},
        "defaults": {"interval": interval, "timeout": max(1.0, 5 * interval)},
        "cameras": [{"id": f"SIM{i:03d}", "url": url} for i, url in enumerate(urls, 1)],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def read_health(path: Path) -> dict[str, Any] | None:
    try:
        value: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value


def fresh_health(path: Path, proc: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """The health record just rewritten: the one on disk now may be up to a second old."""
    seen = read_health(path)
    after = seen["heartbeat_unix"] if seen else 0.0

    def rewritten() -> dict[str, Any] | None:
        health = read_health(path)
        return health if health is not None and health["heartbeat_unix"] > after else None

    value: dict[str, Any] = wait_for("health record", rewritten, 10, [proc], [log])
    return value


def measure_ours(procs: Processes, tmp: Path, urls: Sequence[str], interval: float,
                 warmup: float, window: float, etag: bool) -> dict[str, Any]:
    n = len(urls)
    run = tmp / f"ours-{n}-{'etag' if etag else 'no-etag'}"
    run.mkdir()
    data = run / "data"
    config = run / "cameras.yaml"
    write_daemon_config(config, urls, data, interval)
    log = run / "daemon.log"
    proc = procs.start(child_command("daemon", config, warmup + window + 60), log)
    health_path = data / ".lyoncam" / "health.json"
    wait_for("daemon", lambda: read_health(health_path), 60, [proc], [log])
    group = Sampled([proc.pid])
    sample_until(group, time.monotonic() + warmup)
    group.times.clear()
    group.rss_kb.clear()
    # Align the window on health rewrites: their poll totals and our CPU readings coincide.
    h0 = fresh_health(health_path, proc, log)
    group.start()
    sample_until(group, group.t0 + window)
    h1 = fresh_health(health_path, proc, log)
    group.end()
    group.sample()
    rss_kb, peak_kb, pss = group.rss_kb[-1], group.peak_kb(), group.pss_kb()
    procs.stop([proc])
    if proc.returncode != 0:
        raise RuntimeError(f"daemon exited {proc.returncode}:\n"
                           + log.read_text(errors="replace")[-2000:])
    final = read_health(health_path) or h1
    polls = h1["totals"]["polls"] - h0["totals"]["polls"]
    cpu_s = group.cpu1 - group.cpu0
    totals = final["totals"]
    return {
        "cameras": n,
        "etag": etag,
        "window_s": round(group.t1 - group.t0, 2),
        "polls": polls,
        "polls_total": totals["polls"],
        "outcomes_total": totals["outcomes"],
        "errors_total": totals["errors"],
        "stored_frames": sum(1 for _ in data.rglob("*.jpg")),
        "cpu_s": round(cpu_s, 3),
        "cpu_ms_per_poll": round(cpu_s * 1000 / max(polls, 1), 3),
        "cpu_share": round(cpu_s / (group.t1 - group.t0), 4),
        "rss_mb": round(rss_kb / 1024, 1),
        "rss_start_mb": round(group.rss_kb[0] / 1024, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "pss_mb": round(pss / 1024, 1),
        "rss_growth_mb_per_min": round(group.growth_mb_per_min(), 2),
    }


# --- the original script (baseline) ----------------------------------------------------------


def child_original(url: str, folder: str, interval: str, seconds: str) -> int:
    """BASELINE: the original capture script's loop, step for step, for one camera.

    As the original: the folder is listed once at start (``liste_images``) and every saved
    name is appended, so the previous frame is always ``liste_images[-1]``, the last one
    saved; a blocking GET; the new frame and the previous file are opened with PIL and
    hashed with ``average_hash``; a difference over 2 bits saves ``img.save(path)``, a
    re-encode at Pillow's default quality, in a flat folder. Then ``sleep(interval)``
    after the work, so the schedule drifts.

    The only additions: one line printed per poll (monotonic time, outcome) so the parent
    can count polls in its window; a stop time; an empty folder at start stores the first
    frame (the original indexed ``liste_images[-1]`` and assumed a non-empty folder); an
    exception is printed and the loop goes on (a crash would end the measurement).
    """
    import io
    import urllib.request

    import imagehash
    from PIL import Image

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    camera = url.rsplit("/", 1)[-1].removesuffix(".JPG")
    liste_images = os.listdir(out)  # read once, never again
    stop_at = time.monotonic() + float(seconds)
    print(f"{time.monotonic():.4f} ready", flush=True)
    while time.monotonic() < stop_at:
        try:
            with urllib.request.urlopen(url, timeout=20) as resp:  # requests.get(url)
                body = resp.read()
            img = Image.open(io.BytesIO(body))
            h = imagehash.average_hash(img)  # converts, so decodes the whole frame
            new = True
            if liste_images:
                h_prev = imagehash.average_hash(Image.open(out / liste_images[-1]))
                new = h - h_prev > ORIGINAL_MAX_REPEAT_BITS
            if new:
                name = f"{camera}_{time.strftime('%Y%m%d_%H%M%S')}_{time.time_ns():d}.jpg"
                img.save(out / name)  # re-encoded, quality 75, EXIF dropped
                liste_images.append(name)
                print(f"{time.monotonic():.4f} stored", flush=True)
            else:
                print(f"{time.monotonic():.4f} dropped", flush=True)
        except Exception as exc:  # keep measuring; the error is counted
            print(f"{time.monotonic():.4f} error {type(exc).__name__}", flush=True)
        time.sleep(float(interval))
    return 0


def poll_lines(path: Path) -> list[tuple[float, str]]:
    lines = []
    for line in path.read_text().splitlines():
        t, _, what = line.partition(" ")
        lines.append((float(t), what))
    return lines


def measure_original(procs: Processes, tmp: Path, urls: Sequence[str], interval: float,
                     warmup: float, window: float) -> dict[str, Any]:
    n = len(urls)
    run = tmp / f"original-{n}"
    run.mkdir()
    started: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    outs: list[Path] = []
    for i, url in enumerate(urls, 1):
        logs.append(run / f"original-{i}.log")
        outs.append(run / f"original-{i}.out")
        started.append(procs.start(
            child_command("original", url, run / f"frames-{i}", interval,
                          warmup + window + 60), logs[-1], outs[-1]))
    wait_for("original", lambda: all(o.stat().st_size for o in outs), 60, started, logs)
    group = Sampled([p.pid for p in started])
    sample_until(group, time.monotonic() + warmup)
    group.times.clear()
    group.rss_kb.clear()
    group.start()
    sample_until(group, group.t0 + window)
    group.end()
    group.sample()
    rss_kb, peak_kb, pss = group.rss_kb[-1], group.peak_kb(), group.pss_kb()
    procs.stop(started)
    events = [e for o in outs for e in poll_lines(o) if e[1] != "ready"]
    in_window = [what for t, what in events if group.t0 < t <= group.t1]
    cpu_s = group.cpu1 - group.cpu0
    polls = len(in_window)
    return {
        "processes": n,
        "window_s": round(group.t1 - group.t0, 2),
        "polls": polls,
        "polls_total": len(events),
        "outcomes": {w: in_window.count(w) for w in sorted(set(in_window))},
        "stored_frames": sum(1 for i in range(n) for _ in (run / f"frames-{i + 1}").iterdir()),
        "cpu_s": round(cpu_s, 3),
        "cpu_ms_per_poll": round(cpu_s * 1000 / max(polls, 1), 3),
        "rss_mb": round(rss_kb / 1024, 1),
        "rss_mb_per_camera": round(rss_kb / 1024 / n, 1),
        "peak_rss_mb_per_camera": round(peak_kb / 1024 / n, 1),
        "pss_mb_per_camera": round(pss / 1024 / n, 1),
        "rss_growth_mb_per_min": round(group.growth_mb_per_min(), 2),
    }


# --- main ------------------------------------------------------------------------------------


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGINT unwind through the `finally`s that stop the children (SIGINT too:
    a shell starts background jobs with it ignored)."""
    previous = {sig: signal.signal(sig, _interrupted) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def describe_ours(r: dict[str, Any]) -> str:
    return (f"  lyoncam, {r['cameras']:3d} cameras, 1 process, "
            f"{'ETag' if r['etag'] else 'no ETag'}: "
            f"{r['cpu_ms_per_poll']:6.2f} ms CPU/poll ({r['polls']} polls, "
            f"{r['cpu_share']:.1%} of a core), RSS {r['rss_mb']:.1f} MB "
            f"(peak {r['peak_rss_mb']:.1f}, PSS {r['pss_mb']:.1f}) = "
            f"{r['rss_mb'] / r['cameras']:.2f} MB/camera; "
            f"RSS {r['rss_start_mb']:.1f} -> {r['rss_mb']:.1f} MB "
            f"({r['rss_growth_mb_per_min']:+.2f} MB/min); stored {r['stored_frames']} frames, "
            f"outcomes {r['outcomes_total']}"
            + (f", errors {r['errors_total']}" if r["errors_total"] else ""))


def ratios(ours: list[dict[str, Any]], orig: dict[str, Any]) -> dict[str, Any]:
    """Original / lyoncam for one server behaviour; `ours` sorted by camera count."""
    base, big = ours[0], ours[-1]
    marginal = ((big["rss_mb"] - base["rss_mb"]) / (big["cameras"] - base["cameras"])
                if big["cameras"] > base["cameras"] else None)
    orig_pss = orig["pss_mb_per_camera"]
    return {
        "cameras": base["cameras"],
        "ours_rss_mb": base["rss_mb"],
        "ours_rss_mb_per_camera": round(base["rss_mb"] / base["cameras"], 2),
        "ours_pss_mb_per_camera": round(base["pss_mb"] / base["cameras"], 2),
        "original_rss_mb_per_camera": orig["rss_mb_per_camera"],
        "original_pss_mb_per_camera": orig_pss,
        # PSS against PSS: the original's RSS counts shared library pages in every process.
        "memory_ratio": round(orig_pss / (base["pss_mb"] / base["cameras"]), 2),
        "ours_cpu_ms_per_poll": base["cpu_ms_per_poll"],
        "original_cpu_ms_per_poll": orig["cpu_ms_per_poll"],
        "cpu_ratio": round(orig["cpu_ms_per_poll"] / base["cpu_ms_per_poll"], 2),
        "stored_frames": base["stored_frames"],
        "polls": base["polls"],
        "big_cameras": big["cameras"],
        "big_cpu_ms_per_poll": big["cpu_ms_per_poll"],
        "big_rss_mb_per_camera": round(big["rss_mb"] / big["cameras"], 2),
        "big_pss_mb_per_camera": round(big["pss_mb"] / big["cameras"], 2),
        "big_memory_ratio": round(orig_pss / (big["pss_mb"] / big["cameras"]), 2),
        "big_cpu_ratio": round(orig["cpu_ms_per_poll"] / big["cpu_ms_per_poll"], 2),
        "ours_marginal_rss_mb_per_camera": None if marginal is None else round(marginal, 3),
    }


def report(ours: dict[bool, list[dict[str, Any]]], orig: dict[str, Any],
           args: argparse.Namespace) -> dict[str, Any]:
    print(f"loopback simulator, new frame every {args.period:g} s per camera; every client "
          f"polls every {args.interval:g} s; {args.warmup:g} s warm-up, then "
          f"{args.window:g} s measured")
    for runs in ours.values():
        for r in runs:
            print(describe_ours(r))
    print(f"  original script, {orig['processes']} processes (1 per camera): "
          f"{orig['cpu_ms_per_poll']:6.2f} ms CPU/poll ({orig['polls']} polls), "
          f"RSS {orig['rss_mb_per_camera']:.1f} MB/camera (peak "
          f"{orig['peak_rss_mb_per_camera']:.1f}, PSS {orig['pss_mb_per_camera']:.1f}); "
          f"{orig['rss_growth_mb_per_min']:+.2f} MB/min in all; outcomes {orig['outcomes']} "
          f"in the window, {orig['stored_frames']} of {orig['polls_total']} polls stored "
          f"in all")
    by_mode = {etag: ratios(runs, orig) for etag, runs in ours.items()}
    print(f"\n  {'server':10s} {'cameras':>7s} {'lyoncam ms CPU/poll':>20s} "
          f"{'original':>9s} {'ratio':>7s} {'lyoncam PSS MB/cam':>18s} {'original':>9s} "
          f"{'ratio':>7s}")
    for etag, r in by_mode.items():
        for n, cpu, mem in ((r["cameras"], r["ours_cpu_ms_per_poll"],
                             r["ours_pss_mb_per_camera"]),
                            (r["big_cameras"], r["big_cpu_ms_per_poll"],
                             r["big_pss_mb_per_camera"])):
            print(f"  {'ETag' if etag else 'no ETag':10s} {n:7d} {cpu:20.2f} "
                  f"{orig['cpu_ms_per_poll']:9.2f} {orig['cpu_ms_per_poll'] / cpu:6.1f}x "
                  f"{mem:18.2f} {orig['pss_mb_per_camera']:9.1f} "
                  f"{orig['pss_mb_per_camera'] / mem:6.1f}x")
            if r["big_cameras"] == r["cameras"]:
                break
    # The headline is the server without ETags: whether CriTer sends them is unconfirmed.
    headline = by_mode.get(False) or by_mode[True]
    return {
        **headline,
        # Whether the top-level figures are the server with ETags (only with --etag yes).
        "etag": False not in by_mode,
        "with_etag": by_mode.get(True),
        "interval_s": args.interval,
        "period_s": args.period,
        "window_s": args.window,
        "ours": [r for runs in ours.values() for r in runs],
        "original": orig,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        role, rest = argv[1], argv[2:]
        if role == "daemon":
            return child_daemon(*rest)
        if role == "original":
            return child_original(*rest)
        raise SystemExit(f"unknown child role {role!r}")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", default="15,100",
                    help="lyoncam runs, comma-separated camera counts (default: 15,100)")
    ap.add_argument("--original-processes", type=int, default=5,
                    help="original script processes, one camera each (default: 5)")
    ap.add_argument("--interval", type=float, default=1.0, help="poll interval, s (default: 1)")
    ap.add_argument("--period", type=float, default=3.0,
                    help="seconds between new frames of a simulated camera (default: 3)")
    ap.add_argument("--warmup", type=float, default=4.0, help="seconds before measuring")
    ap.add_argument("--window", type=float, default=20.0, help="seconds measured per run")
    ap.add_argument("--etag", choices=["both", "yes", "no"], default="both",
                    help="server behaviours measured for lyoncam: with ETags (a repeat costs "
                         "a 304), without (every poll downloads the frame), or both (default)")
    args = ap.parse_args(argv)
    counts = sorted({int(c) for c in args.cameras.split(",")})
    if counts[0] < 1 or args.original_processes < 1:
        ap.error("camera counts and --original-processes must be >= 1")

    try:
        with interruptible(), Processes() as procs, \
                tempfile.TemporaryDirectory(prefix="lyoncam-bench-") as tmp_name:
            tmp = Path(tmp_name)
            modes = {"both": [False, True], "yes": [True], "no": [False]}[args.etag]
            cams = max(counts[-1], args.original_processes)
            urls = {etag: start_simulator(procs, tmp, cams, args.period, etag)
                    for etag in modes}
            ours = {etag: [measure_ours(procs, tmp, urls[etag][:n], args.interval,
                                        args.warmup, args.window, etag) for n in counts]
                    for etag in modes}
            # The original sends no validators: the server's ETags change nothing for it.
            orig = measure_original(procs, tmp, urls[modes[0]][: args.original_processes],
                                    args.interval, args.warmup, args.window)
            result = report(ours, orig, args)
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
