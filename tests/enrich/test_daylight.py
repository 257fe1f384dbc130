"""Daylight and image statistics in sidecars: sun elevation, daypart, brightness, contrast."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.devtools.simulator import CriterSimulator
from lyoncam_daemon.enrich.build import build_enrichers
from lyoncam_daemon.enrich.daylight import daylight_fields, daypart, sun_elevation
from tests.conftest import make_config, stored_frames, until

LYON = (45.76, 4.84)

#: Published sunrise and sunset in Lyon (Lyon Capitale, "Le jour le plus long : 15h43 de soleil
#: à Lyon ce dimanche", 21 June 2020: 5h51 and 21h34 CEST; and "Rester à l'heure d'hiver ou
#: d'été", 21 December: 8h19 and 16h59 CET), converted to UTC. The times are rounded to the
#: minute, during which the sun moves about 0.15°.
PUBLISHED = [
    ("sunrise", datetime(2020, 6, 21, 3, 51, tzinfo=UTC)),
    ("sunset", datetime(2020, 6, 21, 19, 34, tzinfo=UTC)),
    ("sunrise", datetime(2018, 12, 21, 7, 19, tzinfo=UTC)),
    ("sunset", datetime(2018, 12, 21, 15, 59, tzinfo=UTC)),
]


@pytest.mark.parametrize(("event", "when"), PUBLISHED)
def test_sun_is_on_the_horizon_at_published_sunrise_and_sunset(event: str,
                                                                 when: datetime) -> None:
    # Sunrise is the upper limb on the horizon: the apparent centre is a few tenths of a
    # degree below it. An hour's error (a time zone slip) would put the sun ~8° off.
    assert -0.75 < sun_elevation(*LYON, when) < 0.0
    fields = daylight_fields(*LYON, when)
    assert fields["daypart"] == ("dawn" if event == "sunrise" else "dusk")
    ten_minutes = timedelta(minutes=10)
    before, after = (sun_elevation(*LYON, when + d) for d in (-ten_minutes, ten_minutes))
    assert (before < -1 and after > 0.5) if event == "sunrise" else (before > 0.5 and after < -1)


def test_dayparts_over_a_winter_day_in_lyon() -> None:
    day = datetime(2026, 11, 26, tzinfo=UTC)
    at = {h: daylight_fields(*LYON, day + timedelta(hours=h))["daypart"] for h in range(24)}
    assert at[0] == at[3] == at[22] == "night"
    assert at[11] == at[12] == "day"  # solar noon in Lyon is about 11:40 UTC
    assert at[7] == "dawn" and at[16] == "dusk"
    # One run of each, in order: night, dawn, day, dusk, night.
    runs = [p for h, p in sorted(at.items()) if h == 0 or at[h - 1] != p]
    assert runs == ["night", "dawn", "day", "dusk", "night"]


@pytest.mark.parametrize(
    ("elev", "rising", "expected"),
    [(-12.01, True, "night"), (-11.99, True, "dawn"), (-11.99, False, "dusk"),
     (11.99, False, "dusk"), (12.01, False, "day"), (12.01, True, "day")],
)
def test_daypart_thresholds(elev: float, rising: bool, expected: str) -> None:
    assert daypart(elev, rising) == expected


async def test_run_writes_daylight_and_image_stats(tmp_path: Path) -> None:
    async with CriterSimulator(["D1", "D2"], period=0.2) as sim:
        config = make_config(tmp_path, {"D1": sim.url("D1"), "D2": sim.url("D2")}, interval=0.1,
                             per_camera={"D1": "lat: 45.76\nlon: 4.84"})
        daemon = Daemon(config, enrichers=build_enrichers(config))
        task = asyncio.create_task(daemon.run())
        await until(lambda: all(daemon.stats.camera(c).outcomes["stored"] >= 2
                                for c in ("D1", "D2")), "2 frames per camera")
        daemon.request_stop()
        assert await task == 0
    for jpg in stored_frames(tmp_path, "D1"):
        meta = json.loads(jpg.with_suffix(".json").read_text())
        when = datetime.fromisoformat(meta["captured_at"])
        assert meta["sun_elevation"] == pytest.approx(sun_elevation(*LYON, when), abs=0.01)
        assert meta["daypart"] == daylight_fields(*LYON, when)["daypart"]
        assert 0 < meta["brightness"] < 255 and meta["contrast"] > 0
    for jpg in stored_frames(tmp_path, "D2"):  # no lat/lon: no daylight, still image stats
        meta = json.loads(jpg.with_suffix(".json").read_text())
        assert "sun_elevation" not in meta and "daypart" not in meta
        assert meta["brightness"] > 0
    assert daemon.stats.cameras["D1"].enrich_errors == 0
