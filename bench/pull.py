"""Benchmark `pull`: images/s from a local Label Studio, with no limit and at the default
``--rate`` (5), against the original downloader measured on the same server in the same run.

Starts its own Label Studio on loopback (``LYONCAM_LABEL_STUDIO`` or scripts/labelstudio-venv.sh),
uploads N copies of the real CriTer fixture frame under distinct names with one box each, then:

- ``original``: the original downloader, re-created (``original_download``): one blocking GET
  per image of the export, in order, each written to a folder, then ``time.sleep(5)``. Run
  on a few images only (``--original-images``, default 3: about 15 s), since its rate is
  set by the sleep; images/s = images / elapsed, sleeps included.
- ``pull``: ``run_pull`` (what the ``pull`` command runs) into a fresh folder, once with no
  limit and once per ``--rates`` value; images/s over the whole pull (task listing
  included) and steady (between the first and the last image).

Prints a table of ratios against the original, then one JSON line. Usage::

    .venv/bin/python -m bench.pull [--images 60] [--rates 5] [--original-images 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lyoncam_daemon.labelstudio.auth import Credentials, Secret  # noqa: E402
from lyoncam_daemon.labelstudio.client import LabelStudioClient  # noqa: E402
from lyoncam_daemon.labelstudio.pull import ImageResult, PullOptions, run_pull  # noqa: E402

TOKEN = "benchtoken0123456789abcdef0123456789abcd"
#: The original downloader's pause after each image, seconds.
ORIGINAL_SLEEP = 5.0
CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" '
          'toName="image"><Label value="Car"/></RectangleLabels></View>')


def api(url: str, method: str, path: str, body: Any = None,
        files: list[tuple[str, bytes]] | None = None) -> Any:
    headers = {"Authorization": f"Token {TOKEN}"}
    data = None
    if files is not None:
        b = uuid.uuid4().hex
        data = b"".join(
            f'--{b}\r\nContent-Disposition: form-data; name="f{i}"; filename="{name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n".encode() + content + b"\r\n"
            for i, (name, content) in enumerate(files)
        ) + f"--{b}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={b}"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=120) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = os.environ.get("LYONCAM_LABEL_STUDIO") or subprocess.run(
        ["bash", str(REPO / "scripts" / "labelstudio-venv.sh")],
        check=True, capture_output=True, text=True).stdout.strip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LABEL_STUDIO_LATEST_VERSION_CHECK": "false", "SENTRY_DSN": "",
           "FRONTEND_SENTRY_DSN": ""}
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [exe, "start", "--no-browser", "--data-dir", str(workdir / "data"), "--internal-host",
         "127.0.0.1", "--port", str(port), "--username", "bench@lyoncam.invalid", "--password",
         "bench-password", "--user-token", TOKEN, "--enable-legacy-api-token"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"Label Studio exited; see {workdir / 'server.log'}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if json.loads(r.read()).get("status") == "UP":
                    return proc, url
        except OSError:
            pass
        time.sleep(1)
    stop(proc)
    raise SystemExit("Label Studio did not come up within 180 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=15)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


class Timing:
    def __init__(self) -> None:
        self.times: list[float] = []

    def start(self, total: int) -> None:
        self.t0 = time.monotonic()

    def advance(self, result: ImageResult) -> None:
        if result == "fetched":
            self.times.append(time.monotonic())

    def close(self) -> None:
        pass


async def one_pull(url: str, project: int, out: Path, rate: float | None,
                   concurrency: int) -> tuple[float, float, int]:
    """(images/s over the whole pull, steady images/s between first and last image, n)."""
    timing = Timing()
    client = LabelStudioClient(url, Credentials(Secret(TOKEN)), rate=rate,
                               concurrency=concurrency)
    start = time.monotonic()
    async with client:
        summary = await run_pull(client, PullOptions(project=project, out=out), timing)
    total = time.monotonic() - start
    n = summary.fetched
    steady = (n - 1) / (timing.times[-1] - timing.times[0]) if n > 1 else float("nan")
    return n / total, steady, n


def original_download(url: str, paths: list[str], out: Path) -> float:
    """BASELINE: the original downloader, step for step: for each image of the export, a
    blocking GET, the bytes written to a file, then ``time.sleep(5)``. Returns images/s."""
    out.mkdir()
    start = time.monotonic()
    for path in paths:
        req = urllib.request.Request(urljoin(url, path),
                                     headers={"Authorization": f"Token {TOKEN}"})
        with urllib.request.urlopen(req, timeout=60) as resp:  # requests.get(url)
            (out / Path(path).name).write_bytes(resp.read())
        time.sleep(ORIGINAL_SLEEP)
    return len(paths) / (time.monotonic() - start)


def setup_project(url: str, frame: bytes, images: int) -> tuple[int, list[str]]:
    """A project of `images` annotated tasks; returns its id and the image paths."""
    pid: int = api(url, "POST", "/api/projects",
                   {"title": "bench pull", "label_config": CONFIG})["id"]
    names = [f"CWL9018_20250301T{h:02d}{m:02d}00Z.jpg" for h in range(24) for m in range(60)]
    for start in range(0, images, 100):
        batch = [(n, frame) for n in names[start:min(images, start + 100)]]
        api(url, "POST", f"/api/projects/{pid}/import", files=batch)
    tasks = api(url, "GET", f"/api/tasks/?project={pid}&page_size=1000")["tasks"]
    for task in tasks:
        api(url, "POST", f"/api/tasks/{task['id']}/annotations/", {"result": [{
            "from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "value": {"x": 10, "y": 10, "width": 5, "height": 5, "rotation": 0,
                      "rectanglelabels": ["Car"]}}]})
    return pid, [str(task["data"]["image"]) for task in tasks]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--rates", default="5", help="limited runs, requests/s (default: 5, "
                        "the default --rate)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--original-images", type=int, default=3,
                        help="images the original downloader fetches (5 s each)")
    args = parser.parse_args()
    if args.original_images < 1 or args.images < args.original_images:
        parser.error("--original-images must be between 1 and --images")
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    frame = (REPO / "tests" / "fixtures" / "CWL9018_night.jpg").read_bytes()
    workdir = Path(tempfile.mkdtemp(prefix="lyoncam-bench-"))
    t = time.monotonic()
    proc, url = start_server(workdir)
    print(f"Label Studio up in {time.monotonic() - t:.0f} s at {url}", flush=True)
    runs: list[dict[str, Any]] = []
    try:
        pid, paths = setup_project(url, frame, args.images)
        mb = len(frame) * args.images / 1e6
        print(f"{args.images} frames of {len(frame)} B ({mb:.1f} MB), concurrency "
              f"{args.concurrency}\n", flush=True)
        original = original_download(url, paths[: args.original_images], workdir / "original")
        print(f"{'run':<24}{'images/s':>10}{'steady img/s':>14}{'vs --rate':>11}"
              f"{'vs original':>13}")
        print(f"{'original (' + str(args.original_images) + ' images)':<24}{original:>10.3f}"
              f"{'':>14}{'':>11}{'1x':>13}", flush=True)
        limits: list[float | None] = [None, *(float(r) for r in args.rates.split(",") if r)]
        for i, rate in enumerate(limits):
            overall, steady, n = asyncio.run(
                one_pull(url, pid, workdir / f"out{i}", rate, args.concurrency))
            assert n == args.images, f"fetched {n} of {args.images}"
            label = "pull, no limit" if rate is None else f"pull --rate {rate:g}"
            versus = "" if rate is None else f"{(steady - rate) / rate:+.1%}"
            print(f"{label:<24}{overall:>10.2f}{steady:>14.2f}{versus:>11}"
                  f"{overall / original:>12.1f}x", flush=True)
            runs.append({"rate": rate, "images_per_s": round(overall, 3),
                         "steady_images_per_s": round(steady, 3),
                         "vs_original": round(overall / original, 2)})
    finally:
        stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({"images": args.images, "concurrency": args.concurrency,
                      "original_images": args.original_images,
                      "original_images_per_s": round(original, 4), "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
