"""Logging set-up: JSON lines stay JSON, even when a library warns."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from lyoncam_daemon.observe.logs import configure_logging


def test_json_logs_and_library_warnings_are_json_lines() -> None:
    out = io.StringIO()
    saved = warnings.showwarning
    try:
        configure_logging("json", "info", stream=out)
        structlog.get_logger().info("hello", camera="A")
        structlog.get_logger().debug("hidden at info")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("Corrupt EXIF data", UserWarning, stacklevel=1)
    finally:
        warnings.showwarning = saved
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["hello", "python warning"]
    assert records[0]["camera"] == "A" and records[0]["level"] == "info"
    assert records[1]["message"] == "Corrupt EXIF data" and records[1]["category"] == "UserWarning"


async def test_malformed_requests_to_the_status_port_are_one_json_line_each(
    tmp_path: Path,
) -> None:
    """aiohttp's own loggers go through structlog: a client's mistake is one JSON line naming
    it, never a plain-text traceback in the daemon's JSON log (its stderr)."""
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nstatus:\n  port: 0\n"
                   "weather:\n  enabled: false\n"
                   "cameras:\n  - id: A\n    url: http://127.0.0.1:9/a.jpg\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lyoncam_daemon", "run", "--config", str(cfg),
        "--log-format", "json", stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    lines: list[bytes] = []
    try:
        while True:  # the `started` line says where the endpoint listens
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, b"".join(lines).decode()
            lines.append(line)
            if b'"started"' in line:
                break
        status = urlsplit(json.loads(line)["status"])
        assert status.port
        hello = bytes.fromhex("16030100a5010000a10303") + bytes(range(150))  # TLS ClientHello
        for request in (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n",
                        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                        hello):
            reader, writer = await asyncio.open_connection(status.hostname, status.port)
            writer.write(request)
            assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.")
            writer.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    text = (b"".join(lines) + rest).decode()
    assert "Traceback" not in text
    records = [json.loads(line) for line in text.splitlines() if line.strip()]  # all JSON
    bad = [r for r in records if r.get("logger") == "aiohttp.server"]
    errors = " ".join(r["error"] for r in bad)
    assert len(bad) == 2, bad  # the TLS hello is aiohttp's debug line, below info
    assert "LineTooLong" in errors and "Content-Length" in errors
    assert all("exception" not in r for r in bad)
