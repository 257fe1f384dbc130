"""A real Label Studio server for the session, on loopback, stopped afterwards even on failure.

The executable comes from ``LYONCAM_LABEL_STUDIO`` or ``scripts/labelstudio-venv.sh`` (which
installs Label Studio into a cached virtualenv outside the checkout). If it cannot be found or
started the tests FAIL with the reason; set ``LYONCAM_SKIP_LABEL_STUDIO=1`` to skip them instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from .helpers import Shown, StandIn

REPO = Path(__file__).resolve().parents[2]
USER_TOKEN = "lyoncamtest0123456789abcdef0123456789ab"
USERNAME = "pull-test@lyoncam.invalid"
PASSWORD = "lyoncam-pull-test-pw"
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class LabelStudio:
    url: str
    token: str
    log: Path

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        scheme: str = "Token",
        files: dict[str, tuple[str, bytes]] | None = None,
    ) -> Any:
        """One JSON (or multipart) call with the legacy token; raises on HTTP errors."""
        headers = {"Authorization": f"{scheme} {token or self.token}"}
        data: bytes | None = None
        if files is not None:
            boundary = uuid.uuid4().hex
            parts = []
            for field, (name, content) in files.items():
                parts.append(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                    f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
                    + content + b"\r\n"
                )
            data = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None


def _find_executable() -> str:
    exe = os.environ.get("LYONCAM_LABEL_STUDIO")
    if exe:
        if not os.access(exe, os.X_OK):
            pytest.fail(f"LYONCAM_LABEL_STUDIO={exe} is not an executable", pytrace=False)
        return exe
    script = REPO / "scripts" / "labelstudio-venv.sh"
    try:
        out = subprocess.run(["bash", str(script)], check=True, capture_output=True, text=True,
                             timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        stderr = getattr(exc, "stderr", "") or ""
        pytest.fail(f"cannot install Label Studio with {script}: {exc}\n{stderr[-2000:]}",
                    pytrace=False)
    exe = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if not exe or not os.access(exe, os.X_OK):
        pytest.fail(f"{script} printed no usable executable: {out.stdout!r}", pytrace=False)
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return bool(json.loads(resp.read()).get("status") == "UP")
    except (OSError, ValueError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server's whole process group (it forks), then kill what remains."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            # the group may outlive its leader: make sure nothing is left
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    if os.environ.get("LYONCAM_SKIP_LABEL_STUDIO") == "1":
        pytest.skip("LYONCAM_SKIP_LABEL_STUDIO=1: Label Studio tests skipped on request")
    exe = _find_executable()
    data_dir = tmp_path_factory.mktemp("label-studio")
    log_path = data_dir / "server.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
    }
    env.pop("LABEL_STUDIO_API_KEY", None)
    cmd = [exe, "start", "--no-browser", "--data-dir", str(data_dir / "data"),
           "--internal-host", "127.0.0.1", "--port", str(port), "--username", USERNAME,
           "--password", PASSWORD, "--user-token", USER_TOKEN, "--enable-legacy-api-token"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=data_dir, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"Label Studio exited with {proc.returncode} before /health:\n"
                            f"{_tail(log_path)}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"Label Studio not UP on {url} after {START_TIMEOUT_S:.0f} s:\n"
                            f"{_tail(log_path)}", pytrace=False)
            time.sleep(1.0)
        # It silently moves to the next port when ours is taken: check it is ours answering.
        # Our /health answering UP plus our fresh user token working (below) says it is ours;
        # a start-up line naming another port says it is not.
        text = log_path.read_text(errors="replace")
        started = [line for line in text.splitlines() if "Starting development server at" in line]
        if any(f"127.0.0.1:{port}/" not in line for line in started):
            pytest.fail(f"Label Studio did not start on the port asked for ({port}):\n"
                        f"{_tail(log_path)}", pytrace=False)
        server = LabelStudio(url, USER_TOKEN, log_path)
        server.api("GET", "/api/projects")  # the legacy token works
        yield server
    finally:
        _stop(proc)
        shutil.rmtree(data_dir / "data", ignore_errors=True)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def personal_access_token(label_studio: LabelStudio) -> str:
    """A PAT (JWT refresh token) issued by the server: POST /api/token/ as the user."""
    settings = label_studio.api("GET", "/api/jwt/settings")
    if not settings.get("api_tokens_enabled"):
        label_studio.api("POST", "/api/jwt/settings",
                         {**settings, "api_tokens_enabled": True})
    try:
        token = label_studio.api("POST", "/api/token/", {})["token"]
    except urllib.error.HTTPError as exc:
        pytest.fail(f"the server would not issue a personal access token: HTTP {exc.code}",
                    pytrace=False)
    assert isinstance(token, str) and token.count(".") == 2
    return token


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    """A stand-in Label Studio on loopback (see helpers.StandIn), inside the test's loop."""
    state = StandIn()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


@pytest.fixture
def shown(capsys: pytest.CaptureFixture[str]) -> Iterator[Shown]:
    """Collects stdout, stderr and every structlog event, debug included (see helpers.Shown).

    A pull CLI run inside the test configures logging itself: its lines then go to stderr,
    which this still sees."""
    seen = Shown(capsys)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, seen.capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    yield seen
    structlog.reset_defaults()
