"""Weather at capture time: Open-Meteo current conditions, shared by every camera nearby.

One request per location cell (`weather.cell_degrees`) and 15-minute slot, whatever the
number of cameras in the cell: the first frame of a slot starts the request, the others
wait for the same answer (the in-flight future is shared). A failed or slow request leaves
`weather: null` for the rest of the slot and is tried again in the next one, and a small
limiter keeps to `weather.max_calls_per_minute` whatever happens: Open-Meteo is free for
a few thousand calls a day, not for a retry storm.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from lyoncam_daemon.config import CameraConfig, WeatherSettings
from lyoncam_daemon.frames.judge import Verdict

#: Open-Meteo's current values come from 15-minute model data.
SLOT_S = 900
#: A frame waits this long at most for its cell's answer (under enrich's 2 s deadline), then
#: is stored with `weather: null`; the request itself goes on for the next frames.
WAIT_S = 1.5
LABELS = ("clear", "partly_cloudy", "overcast", "fog", "drizzle", "rain", "snow", "storm")
CURRENT = "weather_code,cloud_cover,precipitation,is_day"

Cell = tuple[float, float]
Clock = Callable[[], float]


def label(code: int) -> str | None:
    """The WMO weather code's class (FIELD_NOTES: WMO codes), None for a code outside them."""
    if code == 0:
        return "clear"
    if code in (1, 2):
        return "partly_cloudy"
    if code == 3:
        return "overcast"
    if code in (45, 48):
        return "fog"
    if 51 <= code <= 57:
        return "drizzle"
    if 61 <= code <= 67 or 80 <= code <= 82:
        return "rain"
    if 71 <= code <= 77 or code in (85, 86):
        return "snow"
    if 95 <= code <= 99:
        return "storm"
    return None


def cell_of(lat: float, lon: float, size: float) -> Cell:
    """The centre of the grid cell holding lat/lon: the place the request is made for."""
    def centre(v: float) -> float:
        return round((math.floor(v / size) + 0.5) * size, 4)
    return centre(lat), centre(lon)


def slot_of(when: datetime, slot_s: float = SLOT_S) -> int:
    return int(when.timestamp() // slot_s)


def parse_conditions(code: Any, cloud: Any, precipitation: Any, is_day: Any,
                     observed: Any) -> dict[str, Any]:
    """One `weather` sidecar value from Open-Meteo's fields; ValueError if they are not."""
    if not isinstance(code, int) or isinstance(code, bool):
        raise ValueError(f"weather_code {code!r} is not an integer")
    if not isinstance(observed, str):
        raise ValueError(f"time {observed!r} is not a string")
    try:
        stamp = datetime.fromisoformat(observed).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"time {observed!r} is not ISO 8601") from None
    return {
        "code": code,
        "label": label(code),
        "cloud_cover": _number(cloud, "cloud_cover"),
        "precipitation": _number(precipitation, "precipitation"),
        "is_day": None if is_day is None else bool(is_day),
        "observed_at": stamp.isoformat().replace("+00:00", "Z"),
    }


def _number(v: Any, name: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{name} {v!r} is not a number")
    return float(v)


def parse_current(body: Any) -> dict[str, Any]:
    """The forecast endpoint's answer → the sidecar's `weather`; ValueError if malformed."""
    current = body.get("current") if isinstance(body, Mapping) else None
    if not isinstance(current, Mapping):
        raise ValueError("no `current` object in the answer")
    return parse_conditions(current.get("weather_code"), current.get("cloud_cover"),
                            current.get("precipitation"), current.get("is_day"),
                            current.get("time"))


class RateLimit:
    """At most `per_minute` calls in any 60 s window; `take()` says whether one may go now."""

    def __init__(self, per_minute: int, clock: Clock = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._calls: deque[float] = deque()

    def take(self) -> bool:
        if self.wait_s() > 0:
            return False
        self._calls.append(self.clock())
        return True

    def wait_s(self) -> float:
        """Seconds until a call may go (0: now)."""
        now = self.clock()
        while self._calls and now - self._calls[0] >= 60:
            self._calls.popleft()
        if len(self._calls) < self.per_minute:
            return 0.0
        return 60 - (now - self._calls[0])


class WeatherEnricher:
    """Adds `weather` (conditions or null) to frames of cameras with lat/lon."""

    name = "weather"

    def __init__(self, settings: WeatherSettings, *, user_agent: str | None = None,
                 wait_s: float = WAIT_S, clock: Clock = time.monotonic,
                 slot_s: float = SLOT_S) -> None:
        self.settings = settings
        self.headers = {"User-Agent": user_agent} if user_agent else {}
        self.wait_s = wait_s
        #: Open-Meteo's 15 minutes; a test passes a second to see several slots in one run.
        self.slot_s = slot_s
        self.limit = RateLimit(settings.max_calls_per_minute, clock)
        #: (cell, slot) → the request's future: the answer, or None after a failure.
        self._slots: dict[tuple[Cell, int], asyncio.Future[dict[str, Any] | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.requests = 0
        self.log = structlog.get_logger("lyoncam.weather")

    async def __call__(self, camera: CameraConfig, captured_at: datetime,
                       verdict: Verdict) -> Mapping[str, Any]:
        if camera.lat is None or camera.lon is None:
            return {}
        return {"weather": await self.conditions(camera.lat, camera.lon, captured_at)}

    async def conditions(self, lat: float, lon: float, when: datetime) -> dict[str, Any] | None:
        cell, slot = cell_of(lat, lon, self.settings.cell_degrees), slot_of(when, self.slot_s)
        future = self._slots.get((cell, slot))
        if future is None:
            if not self.limit.take():
                return None  # not cached: a later frame of this slot tries again
            future = self._start(cell, slot)
        # Waiting never cancels the shared request: a frame gives up, the request goes on.
        done, _ = await asyncio.wait({future}, timeout=self.wait_s)
        return future.result() if done else None

    def _start(self, cell: Cell, slot: int) -> asyncio.Future[dict[str, Any] | None]:
        for key in [k for k in self._slots if k[1] < slot - 1]:
            del self._slots[key]  # old slots are never asked again
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._slots[(cell, slot)] = future
        task = asyncio.create_task(self._request(cell, future), name=f"weather {cell}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return future

    async def _request(self, cell: Cell, future: asyncio.Future[dict[str, Any] | None]) -> None:
        self.requests += 1
        result: dict[str, Any] | None = None
        try:
            result = await self._fetch(cell)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            self.log.warning("weather unavailable; frames get weather: null until the next slot",
                             cell=list(cell), error=reason or type(exc).__name__)
        except Exception as exc:  # anything else (a bug, an answer nested too deep): the same
            self.log.warning("weather unavailable; frames get weather: null until the next slot",
                             cell=list(cell), error=f"{type(exc).__name__}: {exc}"[:300])
        finally:
            # Whatever happened, even a cancel: the cell's waiters get their answer now, not
            # the wait of every frame until the slot ends.
            if not future.done():
                future.set_result(result)

    async def _fetch(self, cell: Cell) -> dict[str, Any]:
        params = {"latitude": str(cell[0]), "longitude": str(cell[1]), "current": CURRENT,
                  "timezone": "UTC"}
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        # A session per request: a few calls an hour do not need a pool, and nothing is left
        # open when the daemon stops.
        async with aiohttp.ClientSession(timeout=timeout, headers=self.headers) as session, \
                session.get(self.settings.url, params=params) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status} from {self.settings.url}")
            try:
                body = await response.json(content_type=None)
            except ValueError:
                raise ValueError(f"{self.settings.url} did not answer JSON") from None
        return parse_current(body)
