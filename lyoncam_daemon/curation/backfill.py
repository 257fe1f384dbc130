"""`enrich --backfill`: daylight and weather for frames stored without them.

Frames stored before the enrichers existed, or while Open-Meteo was unreachable (`weather:
null`), get `sun_elevation`/`daypart` computed and `weather` from the archive endpoint,
which serves hourly values for past days: one request per location cell and run of up to
`BATCH_DAYS` days, within `weather.max_calls_per_minute`. Each sidecar is rewritten
atomically as soon as its values are known, so an interrupted backfill resumes where it
stopped (a rerun only looks at what is still missing), and the index rows are updated too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from lyoncam_daemon.config import WeatherSettings
from lyoncam_daemon.curation.index import connect, frame_keys, index_path, row_of, upsert
from lyoncam_daemon.enrich.daylight import daylight_fields
from lyoncam_daemon.enrich.weather import Cell, RateLimit, cell_of, parse_conditions
from lyoncam_daemon.storage import encode_sidecar
from lyoncam_daemon.storage.atomic import write_atomic

#: Days per archive request: Open-Meteo answers a month of hourly values in one small JSON.
BATCH_DAYS = 31
HOURLY = "weather_code,cloud_cover,precipitation,is_day"


@dataclass
class Pending:
    key: str
    meta: dict[str, Any]
    when: datetime


@dataclass
class Backfilled:
    daylight: int = 0
    weather: int = 0
    #: Frames still without weather (the archive had no value, or its request failed).
    missing_weather: int = 0
    problems: list[str] = field(default_factory=list)


def _sidecar(data_dir: Path, key: str) -> Path:
    return (data_dir / key).with_suffix(".json")


def _where(meta: Mapping[str, Any]) -> tuple[float, float] | None:
    lat, lon = meta.get("lat"), meta.get("lon")
    if isinstance(lat, int | float) and isinstance(lon, int | float):
        return float(lat), float(lon)
    return None


def batches(days: list[date]) -> list[tuple[date, date]]:
    """Runs of sorted distinct days, each spanning at most BATCH_DAYS."""
    runs: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if runs and (day - runs[-1][0]).days < BATCH_DAYS:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def hourly_conditions(body: Any) -> dict[datetime, dict[str, Any]]:
    """The archive's answer → conditions per UTC hour; hours without a code are left out."""
    hourly = body.get("hourly") if isinstance(body, Mapping) else None
    if not isinstance(hourly, Mapping) or not isinstance(hourly.get("time"), list):
        raise ValueError("no `hourly.time` list in the answer")
    times = hourly["time"]
    columns = {name: hourly.get(name) or [None] * len(times)
               for name in ("weather_code", "cloud_cover", "precipitation", "is_day")}
    out = {}
    for i, stamp in enumerate(times):
        code = columns["weather_code"][i]
        if code is None:
            continue  # the archive lags a few days behind: leave null, a later run fills it
        value = parse_conditions(code, columns["cloud_cover"][i], columns["precipitation"][i],
                                 columns["is_day"][i], stamp)
        out[datetime.fromisoformat(stamp).replace(tzinfo=UTC)] = value
    return out


class Backfill:
    def __init__(self, data_dir: Path, weather: WeatherSettings | None,
                 say: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.data_dir = data_dir
        self.weather = weather
        self.say = say
        self.limit = RateLimit(weather.max_calls_per_minute if weather else 1, clock)
        self.done = Backfilled()
        self._index = connect(index_path(data_dir)) if index_path(data_dir).exists() else None

    def _write(self, item: Pending) -> None:
        write_atomic(_sidecar(self.data_dir, item.key), encode_sidecar(item.meta))
        if self._index is not None:
            upsert(self._index, [row_of(item.key, item.meta, time.time())])

    async def run(self) -> Backfilled:
        by_cell: dict[Cell, list[Pending]] = defaultdict(list)
        try:
            for key in frame_keys(self.data_dir):
                self._look_at(key, by_cell)
            if by_cell and self.weather is not None:
                await self._weather(by_cell)
        finally:
            if self._index is not None:
                self._index.close()
        return self.done

    def _look_at(self, key: str, by_cell: dict[Cell, list[Pending]]) -> None:
        path = _sidecar(self.data_dir, key)
        try:
            meta = json.loads(path.read_bytes())
            when = datetime.fromisoformat(meta["captured_at"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.done.problems.append(f"{path}: {exc}")
            return
        place = _where(meta)
        if place is None:
            return  # no location: neither sun nor weather can be known
        item = Pending(key, meta, when)
        if "sun_elevation" not in meta:
            meta.update(daylight_fields(*place, when))
            self._write(item)
            self.done.daylight += 1
        if self.weather is not None and meta.get("weather") is None:
            by_cell[cell_of(*place, self.weather.cell_degrees)].append(item)

    async def _weather(self, by_cell: Mapping[Cell, list[Pending]]) -> None:
        assert self.weather is not None
        timeout = aiohttp.ClientTimeout(total=self.weather.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for cell, items in by_cell.items():
                for start, end in batches([i.when.astimezone(UTC).date() for i in items]):
                    part = [i for i in items if start <= i.when.astimezone(UTC).date() <= end]
                    await self._batch(session, cell, start, end, part)

    async def _batch(self, session: aiohttp.ClientSession, cell: Cell, start: date, end: date,
                     items: list[Pending]) -> None:
        assert self.weather is not None
        # A backfill may wait its turn; it must never flood the service.
        await asyncio.sleep(self.limit.wait_s())
        self.limit.take()
        params = {"latitude": str(cell[0]), "longitude": str(cell[1]), "hourly": HOURLY,
                  "start_date": start.isoformat(), "end_date": end.isoformat(),
                  "timezone": "UTC"}
        try:
            async with session.get(self.weather.archive_url, params=params) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                hours = hourly_conditions(await response.json(content_type=None))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            self.done.problems.append(f"weather for cell {cell[0]},{cell[1]} {start}..{end}: "
                                      f"{reason or type(exc).__name__}")
            self.done.missing_weather += len(items)
            return
        for item in items:
            hour = (item.when.astimezone(UTC) + timedelta(minutes=30)).replace(
                minute=0, second=0, microsecond=0)
            value = hours.get(hour)
            if value is None:
                self.done.missing_weather += 1
                continue
            item.meta["weather"] = value
            self._write(item)
            self.done.weather += 1
