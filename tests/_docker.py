"""Helpers of the deployment tests (test_docker.py, test_systemd.py): the Docker client,
the lyoncam image built once per session, and a simulator process on loopback.

scripts/test.sh starts a private dockerd and exports DOCKER_HOST and LYONCAM_DOCKER
(scripts/docker-env.sh). Without them these tests fail with one line saying so, unless
LYONCAM_SKIP_DOCKER=1 opts out explicitly (they are then reported as skipped).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from lyoncam_daemon.config import load_config

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "lyoncam:test"
SYSTEMD_IMAGE = "lyoncam-systemd:test"
SKIP_VAR = "LYONCAM_SKIP_DOCKER"


def docker_client() -> str:
    """The Docker client to use, or fail/skip the test with one clear line."""
    if os.environ.get(SKIP_VAR) == "1":
        pytest.skip(f"{SKIP_VAR}=1: Docker and systemd tests opted out")
    client = os.environ.get("LYONCAM_DOCKER", "")
    if not client or not os.environ.get("DOCKER_HOST"):
        pytest.fail(f"no private Docker daemon: run scripts/test.sh (it starts one), or "
                    f"set {SKIP_VAR}=1 to skip the Docker and systemd tests", pytrace=False)
    return client


def docker(*args: str, check: bool = True, timeout: float = 120,
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([docker_client(), *args], capture_output=True, text=True,
                            timeout=timeout, input=stdin, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}): "
                             f"{result.stderr.strip()[-2000:]}")
    return result


def _pip_setting(env: str, key: str) -> str:
    """A pip setting as pip itself resolves it: environment first, then pip's config files."""
    if os.environ.get(env):
        return os.environ[env]
    got = subprocess.run([sys.executable, "-m", "pip", "config", "get", key],
                         capture_output=True, text=True, check=False)
    return got.stdout.strip() if got.returncode == 0 else ""


def pip_build_options() -> list[str]:
    """Reach PyPI from inside the build the way pip on this machine does: its index (when
    not the default, and not a local file:// one) and its CA bundle as the `cacert` secret."""
    options: list[str] = []
    index = _pip_setting("PIP_INDEX_URL", "global.index-url")
    if index and not index.startswith("file:"):
        options += ["--build-arg", f"PIP_INDEX_URL={index}"]
    cert = _pip_setting("PIP_CERT", "global.cert")
    if cert and Path(cert).is_file():
        options += ["--secret", f"id=cacert,src={cert}"]
    return options


def build(context: Path, tag: str, *extra: str) -> str:
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    result = subprocess.run(
        [docker_client(), "build", "--network", "host", "--quiet", *pip_build_options(),
         *extra, "-t", tag, str(context)],
        capture_output=True, text=True, env=env, timeout=900, check=False)
    if result.returncode != 0:
        raise AssertionError(f"docker build {context} failed: {result.stderr.strip()[-3000:]}")
    return tag


@functools.cache
def lyoncam_image() -> str:
    """The repository's image, built once per session (Docker's layer cache does the rest)."""
    return build(ROOT, IMAGE)


@functools.cache
def systemd_image(context: Path) -> str:
    """systemd + lyoncam; `context` holds Dockerfile and lyoncam.service (see the caller)."""
    return build(context, SYSTEMD_IMAGE, "--build-arg", f"LYONCAM_IMAGE={lyoncam_image()}")


def wait_for(what: str, check: object, timeout: float, every: float = 0.5) -> None:
    """Poll `check()` (a callable returning truthy when done) until it holds or fail."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


@contextmanager
def simulator(tmp_path: Path, cameras: int = 2, period: float = 2.0) -> Iterator[list[str]]:
    """`lyoncam simulate` in a process on 127.0.0.1 (any free port); yields camera URLs.

    A process, not the in-test server: containers poll it while the test blocks on docker.
    """
    config = tmp_path / "sim.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lyoncam_daemon", "simulate", "--cameras", str(cameras),
         "--period", str(period), "--port", "0", "--write-config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("the simulator", lambda: config.exists() or proc.poll() is not None, 30, 0.1)
        assert proc.poll() is None, "the simulator exited"
        yield [cam.url for cam in load_config(config).cameras]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def free_ports(n: int = 1) -> int:
    """The first of `n` ports in a row free on loopback now: the containers share the host's
    network (to reach the simulator), so the daemon in them must not take 9120, which any
    daemon on the machine may hold."""
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = int(s.getsockname()[1])
        try:
            for i in range(1, n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", first + i))
        except OSError:
            continue
        return first


def config_yaml(urls: Sequence[str], *, status_port: int, summary_interval: float = 2.0) -> str:
    """A real config (10 s floor) polling `urls` as SIM001, SIM002, ..., its endpoint on
    `status_port` (shard I on `status_port` + I - 1)."""
    lines = ["shutdown_grace: 5", f"log:\n  summary_interval: {summary_interval}",
             f"status:\n  port: {status_port}",
             "defaults:\n  interval: 10\n  timeout: 5", "cameras:"]
    for i, url in enumerate(urls, 1):
        lines += [f"  - id: SIM{i:03d}", f"    url: {url}"]
    return "\n".join(lines) + "\n"




def json_lines(text: str) -> list[dict[str, object]]:
    """Every line must be one JSON object: the log contract of the image."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
