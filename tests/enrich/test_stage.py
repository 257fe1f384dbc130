"""The enrich seam: fields added to a sidecar, and failures that never cost the frame."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.config import CameraConfig, parse_config
from lyoncam_daemon.devtools.simulator import CriterSimulator
from lyoncam_daemon.enrich.stage import enrich
from lyoncam_daemon.frames.judge import Outcome, Verdict
from tests.conftest import make_config, stored_frames, until

CAMERA = parse_config("cameras:\n  - id: A\n    url: http://127.0.0.1:9/a.jpg\n").cameras[0]
VERDICT = Verdict(Outcome.STORED, "0" * 64)
WHEN = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class Fields:
    def __init__(self, name: str, fields: Mapping[str, Any], delay: float = 0.0,
                 error: Exception | None = None) -> None:
        self.name, self.fields, self.delay, self.error = name, fields, delay, error
        self.calls: list[tuple[str, datetime]] = []

    async def __call__(self, camera: CameraConfig, captured_at: datetime,
                       verdict: Verdict) -> Mapping[str, Any]:
        self.calls.append((camera.id, captured_at))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.fields


async def test_fields_of_every_enricher_are_merged_and_failures_named() -> None:
    good = Fields("daylight", {"daypart": "day", "sun_elevation": 20.5})
    broken = Fields("weather", {}, error=RuntimeError("502 from the weather service"))
    late = Fields("slowpoke", {"never": True}, delay=5)
    result = await enrich([good, broken, late], CAMERA, WHEN, VERDICT, limit_s=0.2)
    assert result.fields == {"daypart": "day", "sun_elevation": 20.5}
    assert result.failures == [("weather", "RuntimeError: 502 from the weather service"),
                               ("slowpoke", "no answer within 0.2 s")]
    assert good.calls == [("A", WHEN)]


async def test_no_enricher_no_fields() -> None:
    result = await enrich([], CAMERA, WHEN, VERDICT)
    assert result.fields == {} and result.failures == []


async def test_the_daemon_stores_enriched_sidecars_and_survives_a_broken_enricher(
    tmp_path: Path,
) -> None:
    good = Fields("daylight", {"daypart": "night", "camera_id": "forged"})
    broken = Fields("weather", {}, error=ValueError("bad json"))
    async with CriterSimulator(["E1"], period=0.2) as sim:
        config = make_config(tmp_path, {"E1": sim.url("E1")}, interval=0.1)
        daemon = Daemon(config, enrichers=[good, broken])
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(daemon.run())
            await until(lambda: daemon.stats.camera("E1").outcomes["stored"] >= 3, "3 frames")
            daemon.request_stop()
            assert await task == 0
    frames = stored_frames(tmp_path, "E1")
    assert len(frames) >= 3
    for jpg in frames:
        meta = json.loads(jpg.with_suffix(".json").read_text())
        assert meta["daypart"] == "night"
        assert meta["camera_id"] == "E1"  # an enricher adds fields, never rewrites the facts
    cam = daemon.stats.cameras["E1"]
    assert cam.enrich_errors == cam.outcomes["stored"]
    failures = [e for e in logs if e["event"].startswith("enricher failed")]
    assert len(failures) == 1 and failures[0]["enricher"] == "weather"
