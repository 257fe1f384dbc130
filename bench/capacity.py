"""How many cameras one daemon process keeps, against the original one-process-per-camera
model measured in the same run.

Run: ``.venv/bin/python -m bench.capacity`` (20,000 cameras, both stores, about 13 min on
2 cores); ``--cameras 2000 --stores filesystem --window 120`` for a quick look.

- The simulator (``python -m lyoncam_daemon simulate``, its own process, loopback, port 0)
  serves N cameras; each publishes a new, distinct 1920x1080 frame (real CriTer frame with
  moved vehicle-sized patches, ~320 KB: the size is printed at start) every 60 s, staggered
  over the minute.
- The daemon is ``python -m lyoncam_daemon run`` itself, polling all N at a 60 s interval,
  with the settings a user of that many cameras would set (docs/sharding.md, "How far one
  process goes"): more request slots (all cameras share one host, as on CriTer), per-camera series
  off in ``/metrics``, logging at ``warning``. Everything else is the default, enrichers
  (daylight, image statistics), the SQLite index and fsynced writes included. With
  ``--stores s3`` the frames go to a real SeaweedFS (``weed mini``, loopback) instead.
- After a warm-up (the first round, start-up recovery: at 10,000 cameras on 2 cores the first
  round's backlog takes about 4 minutes, so use ``--warmup 300`` there), a window of
  ``--window`` seconds is measured: from ``/metrics`` at its edges, the polls, stored
  frames, skipped polls and the lateness histogram (how late each poll started against its
  schedule; p50 and p99 interpolated within buckets); from /proc, the CPU time of the
  daemon, the simulator and SeaweedFS; peak RSS (VmHWM) of the daemon over its whole life.
- The status endpoint under load: during the window, ``/``, ``/?show=problems``, ``/healthz``
  and ``/metrics`` are requested every ``--scrape-every`` seconds (as a browser, Docker's
  health check and Prometheus would), and the daemon's own
  ``lyoncam_status_loop_hold_max_seconds`` says the longest any one request held the event
  loop at once, per endpoint (since the start: warm-up included). The target is 20 ms.
- The event loop's lag, whatever held it (the heartbeat, /metrics, a busy CPU, a thread
  keeping the GIL): the daemon's ``lyoncam_daemon_loop_lag_seconds`` histogram over the
  window (p99), and the longest lag: ``lyoncam_daemon_loop_lag_max_seconds`` (the last
  minute's longest) read at every scrape from a minute into the window on, and the window
  histogram's highest non-empty bucket as a check over the whole window.
- Bytes per camera: peak RSS (VmHWM, start-up and warm-up included) and the median RSS over
  the window, each divided by the cameras. Both include the interpreter, the libraries and
  the frames in flight (the pipeline and request slots), which do not grow with cameras.
  The RSS at each minute of the window is printed too: a longer ``--window`` shows whether
  it levels off.
- Expected frames: each camera publishes one new frame a minute and is polled once a
  minute, so a daemon that keeps up stores N x window / 60 frames in the window.
- Decode floor: the DCT-scaled decode the dedup check needs (``frames.decode_gray`` at the
  phash working size), timed here on the simulator's own frames in one thread: the least
  CPU a poll of a new frame can cost.
- BASELINE: the original script's loop (``bench.capture.child_original``: blocking GET,
  full decode, ``average_hash`` of the new and previous frame, re-encode), one process per
  camera as it was run, on ``--original-processes`` cameras of the same simulator at its own
  20 s interval. Its CPU per stored frame and memory per camera are measured; what N
  cameras would take is that times N (N processes cannot be started on this machine, which
  is the point).

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.capture import (
    Processes,
    Sampled,
    measure_original,
    sample_until,
    wait_for,
)

INTERVAL_S = 60.0
#: No request to the status endpoint may hold the event loop longer (issue 17).
LOOP_HOLD_TARGET_S = 0.020
SCRAPED = ("/", "/?show=problems", "/healthz", "/metrics", "/cameras/SIM001/latest.jpg")
#: The original script slept 20 s between polls.
ORIGINAL_INTERVAL_S = 20.0
LATENESS_TARGET_S = 2.0
RSS_TARGET_MB = 400.0


# --- the decode floor ------------------------------------------------------------------------


def decode_floor_ms(frames: list[bytes], seconds: float = 3.0) -> float:
    """CPU milliseconds of one DCT-scaled grayscale decode, the dedup check's only decode."""
    from lyoncam_daemon.frames.fingerprint import decode_gray, working_size

    size = working_size("phash", 64)
    for body in frames[:4]:
        decode_gray(body, size)  # warm caches and imports
    n = 0
    cpu0 = time.thread_time()
    while time.thread_time() - cpu0 < seconds:
        decode_gray(frames[n % len(frames)], size)
        n += 1
    return (time.thread_time() - cpu0) * 1000 / n


# --- /metrics --------------------------------------------------------------------------------


_SAMPLE = re.compile(r'^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$')


def scrape(url: str) -> dict[tuple[str, str], float]:
    """`/metrics` as {(name, labels): value}."""
    with urllib.request.urlopen(url, timeout=30) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[(m["name"], m["labels"] or "")] = float(m["value"])
    return out


def histogram(metrics: dict[tuple[str, str], float], family: str
              ) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a daemon-wide histogram, +Inf last."""
    found = []
    for (name, labels), value in metrics.items():
        if name == f"{family}_bucket":
            le = labels.split('"')[1]
            found.append((float("inf") if le == "+Inf" else float(le), value))
    return sorted(found)


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket holding the q-th sample."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, cumulative
    return lower


def window_figures(m0: dict[tuple[str, str], float], m1: dict[tuple[str, str], float]
                   ) -> dict[str, Any]:
    def delta(name: str, labels: str = "") -> float:
        return m1.get((name, labels), 0.0) - m0.get((name, labels), 0.0)

    def window(family: str) -> list[tuple[float, float]]:
        before = dict(histogram(m0, family))
        return [(bound, n - before.get(bound, 0.0)) for bound, n in histogram(m1, family)]

    late, fetch = window("lyoncam_daemon_lateness_seconds"), window("lyoncam_daemon_fetch_seconds")
    lag = window("lyoncam_daemon_loop_lag_seconds")
    slot, pipe = (window("lyoncam_daemon_slot_wait_seconds"),
                  window("lyoncam_daemon_pipeline_wait_seconds"))
    outcomes = {labels.split('"')[1]: delta(name, labels)
                for (name, labels) in m1 if name == "lyoncam_daemon_frames_total"}
    p50, p99 = quantile(late, 0.50), quantile(late, 0.99)
    return {
        "polls": int(delta("lyoncam_daemon_polls_total")),
        "skipped": int(delta("lyoncam_daemon_polls_skipped_total")),
        "outcomes": {k: int(v) for k, v in sorted(outcomes.items()) if v},
        "stored": int(outcomes.get("stored", 0)),
        "lateness_p50_s": None if p50 is None else round(p50, 3),
        "lateness_p99_s": None if p99 is None else round(p99, 3),
        "fetch_p50_s": _rounded(quantile(fetch, 0.50)),
        "fetch_p99_s": _rounded(quantile(fetch, 0.99)),
        "loop_lag_p99_s": _rounded(quantile(lag, 0.99)),
        "loop_lag_at_most_s": highest_bucket(lag),
        # Lateness is the loop's lag plus the wait for a request turn; a turn is held while
        # the fetched frame waits for room in the pipeline (the judge's CPU).
        "slot_wait_p99_s": _rounded(quantile(slot, 0.99)),
        "pipeline_wait_p99_s": _rounded(quantile(pipe, 0.99)),
    }


def highest_bucket(buckets: list[tuple[float, float]]) -> float | None:
    """Upper bound of the highest bucket holding any sample: the longest is at most this."""
    below = 0.0
    highest = None
    for bound, cumulative in buckets:
        if cumulative > below:
            highest = bound
        below = cumulative
    return highest


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


# --- the runs --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_simulator(procs: Processes, tmp: Path, cameras: int) -> tuple[Any, list[str]]:
    import yaml

    config, log = tmp / "simulator.yaml", tmp / "simulator.log"
    proc = procs.start([sys.executable, "-m", "lyoncam_daemon", "simulate", "--cameras",
                        str(cameras), "--period", str(INTERVAL_S), "--host", "127.0.0.1",
                        "--port", "0", "--write-config", str(config)], log)
    wait_for("simulator", config.exists, 120, [proc], [log])
    doc = yaml.safe_load(config.read_text())
    return proc, [str(cam["url"]) for cam in doc["cameras"]]


def simulator_frames(urls: list[str], count: int = 8) -> list[bytes]:
    """Frames as the simulator serves them (also renders its variants before the runs)."""
    frames = []
    for url in urls[:count]:
        with urllib.request.urlopen(url, timeout=60) as resp:
            frames.append(resp.read())
    return frames


def daemon_config(urls: list[str], data_dir: Path, port: int,
                  s3: Any | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "data_dir": str(data_dir),
        "shutdown_grace": 10,
        "log": {"format": "json", "level": "warning", "summary_interval": 60},
        # All cameras are on one host, as on CriTer: the default 4 turns would cap a poll
        # rate of ~333/s at 4 / (fetch time), far below it.
        "http": {"max_concurrent": 64, "max_per_host": 64},
        "status": {"port": port, "camera_metrics": False},
        "weather": {"enabled": False},  # simulated cameras have no place; no internet here
        "defaults": {"interval": INTERVAL_S, "timeout": 20},
        "cameras": [{"id": f"SIM{i:03d}", "url": url} for i, url in enumerate(urls, 1)],
    }
    if s3 is not None:
        doc["storage"] = {"kind": "s3", "endpoint": s3.endpoint, "bucket": s3.bucket,
                          "region": "us-east-1"}
    return doc


class Scraper:
    """Requests the status endpoint's pages every `every` seconds in a thread of its own,
    counting answers by path and status, and their wall-clock time (which includes waiting
    for the loop: a daemon busy with 20,000 cameras answers late even when no request
    holds the loop long)."""

    def __init__(self, base: str, every: float) -> None:
        import threading

        self.base, self.every = base, every
        self.answers: dict[str, dict[int, int]] = {p: {} for p in SCRAPED}
        self.slowest_s: dict[str, float] = dict.fromkeys(SCRAPED, 0.0)
        #: (monotonic time, lyoncam_daemon_loop_lag_max_seconds) of every /metrics answer.
        self.lag_max: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        import urllib.error

        while not self._stop.wait(self.every):
            for path in SCRAPED:
                began = time.monotonic()
                try:
                    with urllib.request.urlopen(self.base + path, timeout=30) as resp:
                        body = resp.read()
                        status = resp.status
                    if path == "/metrics":
                        found = _LAG_MAX.search(body.decode())
                        if found:
                            self.lag_max.append((time.monotonic(), float(found[1])))
                except urllib.error.HTTPError as exc:
                    status = exc.code
                except OSError:
                    status = 0
                took = time.monotonic() - began
                self.slowest_s[path] = max(self.slowest_s[path], took)
                self.answers[path][status] = self.answers[path].get(status, 0) + 1


_LAG_MAX = re.compile(r"^lyoncam_daemon_loop_lag_max_seconds (\S+)$", re.M)


def loop_holds(metrics: dict[tuple[str, str], float]) -> dict[str, float]:
    """Longest hold of the event loop by one request, per endpoint, in milliseconds."""
    return {labels.split('"')[1]: round(value * 1000, 2)
            for (name, labels), value in metrics.items()
            if name == "lyoncam_status_loop_hold_max_seconds"}


def measure_ours(procs: Processes, tmp: Path, urls: list[str], store: str,
                 others: dict[str, int], warmup: float, window: float,
                 s3: Any | None = None, scrape_every: float = 5.0) -> dict[str, Any]:
    import yaml

    run = tmp / f"ours-{store}"
    run.mkdir()
    port = free_port()
    config = run / "cameras.yaml"
    config.write_text(yaml.safe_dump(daemon_config(urls, run / "data", port, s3),
                                     sort_keys=False))
    log = run / "daemon.log"
    proc = procs.start([sys.executable, "-m", "lyoncam_daemon", "run", "--config", str(config)],
                       log, env=s3.env if s3 is not None else None)
    url = f"http://127.0.0.1:{port}/metrics"

    def answering() -> dict[tuple[str, str], float] | None:
        try:
            return scrape(url)
        except OSError:
            return None

    wait_for("daemon", answering, 180, [proc], [log])
    started = time.monotonic()
    daemon = Sampled([proc.pid])
    other = {name: Sampled([pid]) for name, pid in others.items()}
    sample_until(daemon, started + warmup)
    m0 = scrape(url)
    window_unix = [time.time()]
    daemon.start()
    for group in other.values():
        group.start()
    with Scraper(f"http://127.0.0.1:{port}", scrape_every) as scraper:
        sample_until(daemon, daemon.t0 + window)
    m1 = scrape(url)
    daemon.end()
    window_unix.append(time.time())
    for group in other.values():
        group.end()
    peak_kb = daemon.peak_kb()
    window_rss = [kb for t, kb in zip(daemon.times, daemon.rss_kb, strict=True) if t >= daemon.t0]
    # The gauge is the last minute's longest lag: from a minute into the window on, each
    # reading covers only the window.
    lag_max = [v for t, v in scraper.lag_max if t >= daemon.t0 + 60]
    procs.stop([proc], grace=30)
    if proc.returncode != 0:
        raise RuntimeError(f"daemon exited {proc.returncode}:\n"
                           + log.read_text(errors="replace")[-2000:])
    span = daemon.t1 - daemon.t0
    figures = window_figures(m0, m1)
    cpu_s = daemon.cpu1 - daemon.cpu0
    n = len(urls)
    return {
        "store": store,
        "cameras": n,
        "window_s": round(span, 1),
        # Unix times of the window's edges, to read the daemon's log or a profile beside it.
        "window_unix": [round(t, 1) for t in window_unix],
        "expected": round(n * span / INTERVAL_S),
        **figures,
        "cpu_share": round(cpu_s / span, 3),
        "cpu_ms_per_poll": round(cpu_s * 1000 / max(figures["polls"], 1), 3),
        "cpu_ms_per_stored": round(cpu_s * 1000 / max(figures["stored"], 1), 3),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "rss_kb_per_camera": round(peak_kb / n, 2),
        "rss_window_median_kb_per_camera": round(statistics.median(window_rss) / n, 2)
        if window_rss else None,
        "rss_growth_mb_per_min": round(daemon.growth_mb_per_min(), 2),
        "rss_mb_by_minute": rss_by_minute(daemon),
        "loop_lag_max_s": round(max(lag_max), 3) if lag_max else None,
        "loop_hold_max_ms": loop_holds(m1),
        "status_answers": scraper.answers,
        "status_slowest_answer_s": {p: round(t, 3) for p, t in scraper.slowest_s.items()},
        **{f"{name}_cpu_share": round((g.cpu1 - g.cpu0) / span, 3)
           for name, g in other.items()},
        "warnings": [line for line in log.read_text(errors="replace").splitlines()
                     if '"level": "warning"' in line or '"level": "error"' in line][:5],
    }


def rss_by_minute(daemon: Sampled) -> list[float]:
    """The daemon's RSS at the window's start and at each full minute into it (the sample
    nearest each mark): whether memory levels off or keeps rising, which one peak hides."""
    marks = [daemon.t0 + 60 * k for k in range(int((daemon.t1 - daemon.t0) // 60) + 1)]
    out = []
    for mark in marks:
        i = min(range(len(daemon.times)), key=lambda j: abs(daemon.times[j] - mark))
        out.append(round(daemon.rss_kb[i] / 1024, 1))
    return out


def start_seaweed(tmp: Path) -> Any:
    from tests._seaweed import SeaweedS3  # `python -m bench.capacity` runs from the repo root

    s3 = SeaweedS3(tmp / "seaweed")
    s3.start()
    asyncio.run(s3.wait_ready(120))
    return s3


# --- report ----------------------------------------------------------------------------------


def verdict(r: dict[str, Any]) -> str:
    late_ok = r["lateness_p99_s"] is not None and r["lateness_p99_s"] < LATENESS_TARGET_S
    kept = r["stored"] >= 0.99 * r["expected"] and r["skipped"] == 0
    return "yes" if late_ok and kept and r["peak_rss_mb"] < RSS_TARGET_MB else "no"


def report(runs: list[dict[str, Any]], floor_ms: float, orig: dict[str, Any] | None,
           n: int) -> dict[str, Any]:
    print()
    print(f"decode floor (DCT-scaled decode, one thread): {floor_ms:.2f} ms CPU per frame")
    print()
    head = ("store", "cameras", "expected", "stored", "skipped", "p50 s", "p99 s",
            "loop lag p99 / max s", "CPU %", "ms/poll", "x floor", "peak MB", "KB/cam peak",
            "KB/cam median", "sim CPU %", "keeps up")
    print(" | ".join(head))
    for r in runs:
        print(" | ".join(str(x) for x in (
            r["store"], r["cameras"], r["expected"], r["stored"], r["skipped"],
            r["lateness_p50_s"], r["lateness_p99_s"],
            f"{r['loop_lag_p99_s']} / {r['loop_lag_max_s']} (<= {r['loop_lag_at_most_s']})",
            round(100 * r["cpu_share"], 1),
            r["cpu_ms_per_poll"], round(r["cpu_ms_per_poll"] / floor_ms, 2),
            r["peak_rss_mb"], r["rss_kb_per_camera"], r["rss_window_median_kb_per_camera"],
            round(100 * r.get("simulator_cpu_share", 0.0), 1), verdict(r))))
        print(f"   lateness p99 {r['lateness_p99_s']} s = loop lag + waits for a turn (p99"
              f" {r['slot_wait_p99_s']} s); turns held by frames waiting for the judge (p99"
              f" {r['pipeline_wait_p99_s']} s); RSS MB by minute {r['rss_mb_by_minute']}")
        if r.get("seaweed_cpu_share") is not None:
            print(f"   (SeaweedFS took {100 * r['seaweed_cpu_share']:.1f} % of a core)")
        holds = r.get("loop_hold_max_ms", {})
        worst = max(holds.values(), default=0.0)
        print("   status endpoint, longest hold of the event loop by one request: "
              + ", ".join(f"{e} {ms:.1f} ms" for e, ms in sorted(holds.items()))
              + f" (target {LOOP_HOLD_TARGET_S * 1000:.0f} ms: "
              + ("met" if worst <= LOOP_HOLD_TARGET_S * 1000 else "missed") + ")")
    result: dict[str, Any] = {
        "cameras": n,
        "decode_floor_ms": round(floor_ms, 3),
        "runs": runs,
    }
    if orig is not None:
        per_frame = orig["cpu_s"] * 1000 / max(orig["outcomes"].get("stored", 0), 1)
        mb = orig["pss_mb_per_camera"]
        print()
        print(f"original model, {orig['processes']} processes measured at its own "
              f"{ORIGINAL_INTERVAL_S:g} s interval: {orig['cpu_ms_per_poll']} ms CPU per poll, "
              f"{per_frame:.1f} ms per stored frame, {mb} MB (PSS) per camera")
        # What the original stores per poll depends on its 20 s interval (a camera changing
        # once a minute: one poll in three stores), lyoncam's on its 60 s one (every poll
        # stores): per stored frame mixes the two schedules, per poll does not.
        need_cores = n * per_frame / 1000 / INTERVAL_S
        need_gb = n * mb / 1024
        print(f"  {n} cameras that way: {n} processes, {need_gb:,.0f} GB and "
              f"{need_cores:.1f} cores for the new frames alone")
        result["original"] = {**orig, "cpu_ms_per_stored": round(per_frame, 2),
                              "for_n_cameras": {"processes": n, "memory_gb": round(need_gb, 1),
                                                "cores": round(need_cores, 2)}}
        for r in runs:
            r["vs_original"] = {
                "cpu_per_poll_x": round(orig["cpu_ms_per_poll"]
                                        / max(r["cpu_ms_per_poll"], 1e-9), 2),
                "cpu_per_stored_x": round(per_frame / max(r["cpu_ms_per_stored"], 1e-9), 2),
                "memory_per_camera_x": round(mb * 1024 / max(r["rss_kb_per_camera"], 1e-9), 1),
            }
            v = r["vs_original"]
            print(f"  {r['store']}: {v['cpu_per_poll_x']}x less CPU per poll "
                  f"({v['cpu_per_stored_x']}x per stored frame: the original stores one poll "
                  f"in three at its {ORIGINAL_INTERVAL_S:g} s interval), "
                  f"{v['memory_per_camera_x']}x less memory per camera (PSS against peak "
                  "RSS)")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=20_000)
    parser.add_argument("--stores", default="filesystem,s3",
                        help="comma-separated: filesystem, s3 (default: both)")
    parser.add_argument("--warmup", type=float, default=90.0,
                        help="seconds before the window: one round and start-up (default 90)")
    parser.add_argument("--window", type=float, default=180.0,
                        help="seconds measured (default 180: three rounds)")
    parser.add_argument("--original-processes", type=int, default=4)
    parser.add_argument("--scrape-every", type=float, default=5.0,
                        help="seconds between rounds of requests to /, /healthz and /metrics "
                        "during the window (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not stores or set(stores) - {"filesystem", "s3"}:
        parser.error("--stores takes filesystem and/or s3")
    tmp = Path(tempfile.mkdtemp(prefix="lyoncam-capacity-"))
    runs: list[dict[str, Any]] = []
    with Processes() as procs:
        sim, urls = start_simulator(procs, tmp, args.cameras)
        frames = simulator_frames(urls)
        print(f"simulator: {len(urls)} cameras, frames of {statistics.mean(map(len, frames)):,.0f}"
              " bytes", flush=True)
        floor = decode_floor_ms(frames)
        for store in stores:
            s3 = start_seaweed(tmp) if store == "s3" else None
            others = {"simulator": sim.pid}
            if s3 is not None:
                others["seaweed"] = s3.process.pid
            try:
                r = measure_ours(procs, tmp, urls, store, others, args.warmup, args.window, s3,
                                 args.scrape_every)
            finally:
                if s3 is not None:
                    s3.stop()
            runs.append(r)
            print(json.dumps(r), flush=True)
        orig = None
        if args.original_processes > 0:
            orig = measure_original(procs, tmp, urls[: args.original_processes],
                                    ORIGINAL_INTERVAL_S, warmup=ORIGINAL_INTERVAL_S,
                                    window=4 * INTERVAL_S / 2)
    result = report(runs, floor, orig, args.cameras)
    print(json.dumps(result))
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
