"""Weather in sidecars, against a local Open-Meteo stand-in that also fails and stalls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from lyoncam_daemon.config import ConfigError, WeatherSettings, parse_config
from lyoncam_daemon.daemon import Daemon
from lyoncam_daemon.enrichers import build_enrichers
from lyoncam_daemon.enrichers.weather import (
    RateLimit,
    WeatherEnricher,
    cell_of,
    label,
    parse_current,
)
from lyoncam_daemon.simulator import CriterSimulator

from .conftest import make_config, stored_frames, until

WHEN = datetime(2026, 11, 26, 7, 3, tzinfo=UTC)
NEXT_SLOT = WHEN + timedelta(minutes=15)
#: Two places a few hundred metres apart (one 0.1° cell), one north-west of Lyon (another).
PERRACHE, BELLECOUR, ECULLY = (45.749, 4.826), (45.757, 4.832), (45.82, 4.76)


class OpenMeteo:
    """The forecast endpoint on 127.0.0.1: answers, fails (500), stalls, or talks nonsense."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[dict[str, str]] = []
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.query))
        if self.mode == "fail":
            return web.Response(status=500, text="upstream error")
        if self.mode == "stall":
            await self.release.wait()
        if self.mode == "nonsense":
            return web.Response(text="<html>maintenance</html>")
        return web.json_response({"current": {
            "time": "2026-11-26T07:00", "interval": 900, "weather_code": 61,
            "cloud_cover": 100, "precipitation": 0.4, "is_day": 0}})


@pytest.fixture
async def meteo() -> AsyncIterator[tuple[OpenMeteo, str]]:
    stand_in = OpenMeteo()
    app = web.Application()
    app.router.add_get("/v1/forecast", stand_in.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield stand_in, f"http://127.0.0.1:{port}/v1/forecast"
    stand_in.release.set()
    await runner.cleanup()


def enricher(url: str, **kw: Any) -> WeatherEnricher:
    settings = WeatherSettings(url=url, timeout=kw.pop("timeout", 5.0),
                               max_calls_per_minute=kw.pop("per_minute", 4))
    return WeatherEnricher(settings, **kw)


RAIN = {"code": 61, "label": "rain", "cloud_cover": 100.0, "precipitation": 0.4,
        "is_day": False, "observed_at": "2026-11-26T07:00:00Z"}


async def test_one_request_per_cell_and_slot_shared_by_its_cameras(
    meteo: tuple[OpenMeteo, str],
) -> None:
    stand_in, url = meteo
    weather = enricher(url)
    together = await asyncio.gather(*(weather.conditions(*place, WHEN + timedelta(seconds=s))
                                      for s, place in enumerate([PERRACHE, BELLECOUR] * 3)))
    assert together == [RAIN] * 6
    assert len(stand_in.requests) == 1
    asked = stand_in.requests[0]
    assert (float(asked["latitude"]), float(asked["longitude"])) == cell_of(*PERRACHE, 0.1)
    assert asked["current"].startswith("weather_code") and asked["timezone"] == "UTC"
    assert await weather.conditions(*ECULLY, WHEN) == RAIN  # another cell: its own request
    assert await weather.conditions(*PERRACHE, NEXT_SLOT) == RAIN  # another slot: asked again
    assert len(stand_in.requests) == 3


@pytest.mark.parametrize("mode", ["fail", "nonsense"])
async def test_a_failed_call_gives_null_for_its_slot_and_is_retried_next_slot(
    meteo: tuple[OpenMeteo, str], mode: str,
) -> None:
    stand_in, url = meteo
    weather = enricher(url)
    stand_in.mode = mode
    assert await weather.conditions(*PERRACHE, WHEN) is None
    assert await weather.conditions(*BELLECOUR, WHEN + timedelta(minutes=5)) is None
    assert len(stand_in.requests) == 1  # not hammered within the slot
    stand_in.mode = "ok"
    assert await weather.conditions(*PERRACHE, NEXT_SLOT) == RAIN
    assert len(stand_in.requests) == 2


async def test_a_stalled_call_gives_null_without_holding_frames(
    meteo: tuple[OpenMeteo, str],
) -> None:
    stand_in, url = meteo
    stand_in.mode = "stall"
    weather = enricher(url, wait_s=0.1, timeout=0.5)
    # The frames give up waiting (wait_s), the request goes on until its own timeout.
    assert await asyncio.wait_for(weather.conditions(*PERRACHE, WHEN), 5) is None
    assert await asyncio.wait_for(weather.conditions(*BELLECOUR, WHEN), 5) is None
    await until(lambda: not weather._tasks, "the stalled request to time out")
    assert len(stand_in.requests) == 1
    stand_in.mode = "ok"
    assert await weather.conditions(*PERRACHE, NEXT_SLOT) == RAIN


async def test_never_more_calls_a_minute_than_allowed(meteo: tuple[OpenMeteo, str]) -> None:
    stand_in, url = meteo
    now = [0.0]
    weather = enricher(url, per_minute=2, clock=lambda: now[0])
    places = [PERRACHE, ECULLY, (45.62, 5.05)]  # three cells
    got = [await weather.conditions(*p, WHEN) for p in places]
    assert got == [RAIN, RAIN, None] and len(stand_in.requests) == 2
    now[0] = 59.0
    assert await weather.conditions(*places[2], WHEN) is None
    now[0] = 60.0  # the first call left the window
    assert await weather.conditions(*places[2], WHEN) == RAIN
    assert len(stand_in.requests) == 3


def test_rate_limit_window() -> None:
    now = [100.0]
    limit = RateLimit(3, clock=lambda: now[0])
    assert [limit.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 159.9
    assert not limit.take()
    now[0] = 160.0
    assert limit.take()


@pytest.mark.parametrize(
    ("code", "expected"),
    [(0, "clear"), (2, "partly_cloudy"), (3, "overcast"), (48, "fog"), (55, "drizzle"),
     (63, "rain"), (81, "rain"), (75, "snow"), (86, "snow"), (95, "storm"), (99, "storm"),
     (4, None), (100, None)],
)
def test_wmo_labels(code: int, expected: str | None) -> None:
    assert label(code) == expected


@pytest.mark.parametrize(
    ("body", "problem"),
    [({}, "no `current`"), ({"current": {"weather_code": "61", "time": "2026-11-26T07:00"}},
                            "not an integer"),
     ({"current": {"weather_code": 61, "time": "yesterday"}}, "not ISO 8601"),
     ({"current": {"weather_code": 61, "time": "2026-11-26T07:00", "cloud_cover": "lots"}},
      "cloud_cover"),
     ([1, 2], "no `current`")],
)
def test_malformed_answers_are_named(body: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_current(body)


def test_weather_settings_in_the_config() -> None:
    config = parse_config("cameras:\n  - id: A\n    url: http://127.0.0.1/a.jpg\n")
    assert config.weather.enabled and config.weather.url.startswith("https://api.open-meteo.com")
    with pytest.raises(ConfigError, match=r"weather.url: must be an http"):
        parse_config("weather:\n  url: ftp://x\ncameras:\n  - id: A\n    url: http://h/a.jpg\n")


async def test_run_writes_weather_and_survives_its_outage(
    tmp_path: Path, meteo: tuple[OpenMeteo, str],
) -> None:
    stand_in, url = meteo
    async with CriterSimulator(["W1", "W2"], period=0.2) as sim:
        config = make_config(
            tmp_path, {"W1": sim.url("W1"), "W2": sim.url("W2")}, interval=0.1,
            extra=f"weather:\n  url: {url}",
            per_camera={"W1": "lat: 45.749\nlon: 4.826", "W2": "lat: 45.757\nlon: 4.832"})
        daemon = Daemon(config, enrichers=build_enrichers(config))
        task = asyncio.create_task(daemon.run())
        await until(lambda: all(daemon.stats.camera(c).outcomes["stored"] >= 3
                                for c in ("W1", "W2")), "3 frames per camera")
        daemon.request_stop()
        assert await task == 0
    sidecars = [json.loads(p.with_suffix(".json").read_text())
                for cam in ("W1", "W2") for p in stored_frames(tmp_path, cam)]
    assert all(meta["weather"] in (RAIN, None) for meta in sidecars)
    assert sum(meta["weather"] == RAIN for meta in sidecars) >= len(sidecars) - 2
    assert len(stand_in.requests) <= 2  # one cell: one per slot (a run may straddle two)
    assert all(daemon.stats.cameras[c].enrich_errors == 0 for c in ("W1", "W2"))
