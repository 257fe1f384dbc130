"""Where the sun is for a frame: `sun_elevation` and `daypart`, from astral.

The elevation is apparent (refraction included), as a camera sees the sky. Dayparts follow
the usual twilight bands: `night` below -12° (nautical dusk), `day` above 12°, and between
them `dawn` while the sun climbs (before solar noon) or `dusk` while it sinks. Rising is
told by comparing the elevation a minute later, which is the same as "before solar noon"
(the sun climbs until noon) without choosing which local date's noon applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from astral import Observer
from astral.sun import elevation

from lyoncam_daemon.config import CameraConfig
from lyoncam_daemon.frames.judge import Verdict

Daypart = Literal["night", "dawn", "day", "dusk"]
DAYPARTS: tuple[Daypart, ...] = ("night", "dawn", "day", "dusk")
#: Degrees: below NIGHT_BELOW it is night, above DAY_ABOVE it is day.
NIGHT_BELOW = -12.0
DAY_ABOVE = 12.0


def sun_elevation(lat: float, lon: float, when: datetime) -> float:
    """Apparent elevation of the sun's centre in degrees (refraction included)."""
    return float(elevation(Observer(lat, lon), when, with_refraction=True))


def daypart(elev: float, rising: bool) -> Daypart:
    if elev < NIGHT_BELOW:
        return "night"
    if elev > DAY_ABOVE:
        return "day"
    return "dawn" if rising else "dusk"


def daylight_fields(lat: float, lon: float, when: datetime) -> dict[str, Any]:
    """The sidecar fields for a frame taken at `when` (aware) at lat/lon."""
    now = sun_elevation(lat, lon, when)
    later = sun_elevation(lat, lon, when + timedelta(minutes=1))
    return {"sun_elevation": round(now, 2), "daypart": daypart(now, later > now)}


class DaylightEnricher:
    """Adds `sun_elevation` and `daypart` to frames of cameras with lat/lon; nothing otherwise."""

    name = "daylight"

    async def __call__(self, camera: CameraConfig, captured_at: datetime,
                       verdict: Verdict) -> Mapping[str, Any]:
        # A few tens of microseconds of arithmetic: not worth a thread.
        if camera.lat is None or camera.lon is None:
            return {}
        return daylight_fields(camera.lat, camera.lon, captured_at)
