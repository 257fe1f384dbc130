"""Logging set-up: JSON lines stay JSON, even when a library warns."""

from __future__ import annotations

import io
import json
import warnings

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
