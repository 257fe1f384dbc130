"""Weather in sidecars, against a local Open-Meteo stand-in that also fails and stalls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.cli import main
from lyoncam_daemon.config import ConfigError, WeatherSettings, parse_config
from lyoncam_daemon.curation.index import index_path, refresh
from lyoncam_daemon.devtools.simulator import CriterSimulator, demo_config
from lyoncam_daemon.enrich.build import build_enrichers
from lyoncam_daemon.enrich.daylight import daylight_fields
from lyoncam_daemon.enrich.weather import (
    RateLimit,
    WeatherEnricher,
    cell_of,
    label,
    parse_current,
)
from lyoncam_daemon.storage import StoredFrame, encode_sidecar
from tests._curation import Spec, make_tree
from tests.conftest import make_config, stored_frames, until

WHEN = datetime(2026, 11, 26, 7, 3, tzinfo=UTC)
NEXT_SLOT = WHEN + timedelta(minutes=15)
#: Two places a few hundred metres apart (one 0.1° cell), one north-west of Lyon (another).
PERRACHE, BELLECOUR, ECULLY = (45.749, 4.826), (45.757, 4.832), (45.82, 4.76)


class OpenMeteo:
    """The forecast endpoint on 127.0.0.1: answers, fails (500), stalls, or talks nonsense."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[dict[str, str]] = []
        #: The mode each request met.
        self.modes: list[str] = []
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.query))
        self.modes.append(self.mode)
        if self.mode == "fail":
            return web.Response(status=500, text="upstream error")
        if self.mode == "stall":
            await self.release.wait()
        if self.mode == "nonsense":
            return web.Response(text="<html>maintenance</html>")
        if self.mode == "deep":  # valid JSON nested past Python's recursion limit
            return web.Response(text="[" * 100_000 + "]" * 100_000,
                                content_type="application/json")
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


async def test_an_unexpected_failure_answers_the_cells_waiters_at_once(
    meteo: tuple[OpenMeteo, str],
) -> None:
    """Not one of the failures it expects (RecursionError from an answer nested too deep):
    the waiters of the cell still get `None` at once, not each a whole wait until the slot
    ends."""
    stand_in, url = meteo
    stand_in.mode = "deep"
    weather = enricher(url, wait_s=60)
    with structlog.testing.capture_logs() as logs:
        first = asyncio.ensure_future(weather.conditions(*PERRACHE, WHEN))
        await until(lambda: not weather._tasks and bool(stand_in.requests), "the request")
        assert all(future.done() for future in weather._slots.values())
        assert await asyncio.wait_for(first, 10) is None
        assert await asyncio.wait_for(weather.conditions(*BELLECOUR, WHEN), 10) is None
    [warning] = [e for e in logs if e["event"].startswith("weather unavailable")]
    assert warning["error"].startswith("RecursionError")
    assert len(stand_in.requests) == 1


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
    """The stand-in answers, then fails (500), then stalls, then answers again, one-second
    slots apart: every frame is stored throughout, with `weather: null` while it cannot be
    had and the conditions again once it can."""
    stand_in, url = meteo
    async with CriterSimulator(["W1", "W2"], period=0.2) as sim:
        config = make_config(
            tmp_path, {"W1": sim.url("W1"), "W2": sim.url("W2")}, interval=0.1,
            extra=f"weather:\n  url: {url}\n  max_calls_per_minute: 60\n  timeout: 30",
            per_camera={"W1": "lat: 45.749\nlon: 4.826", "W2": "lat: 45.757\nlon: 4.832"})
        # The daemon's own enrichers, with a weather one whose slots last a second.
        enrichers = [e for e in build_enrichers(config) if e.name != "weather"]
        enrichers.append(WeatherEnricher(config.weather, wait_s=0.3, slot_s=1.0))
        daemon = Daemon(config, enrichers=enrichers)
        task = asyncio.create_task(daemon.run())

        def weathers() -> list[Any]:
            found = []
            for cam in ("W1", "W2"):
                for p in stored_frames(tmp_path, cam):
                    with contextlib.suppress(OSError, ValueError):
                        meta = json.loads(p.with_suffix(".json").read_text())
                        found.append((meta["captured_at"], meta.get("weather", "missing")))
            return [w for _, w in sorted(found, key=lambda f: f[0])]

        def then(want: Any, after: int, n: int = 4) -> bool:
            return sum(w == want for w in weathers()[after:]) >= n

        await until(lambda: then(RAIN, 0), "frames with the weather", 30)
        for mode in ("fail", "stall"):
            stand_in.mode = mode
            # Frames count once a request has met this mode (a new slot), not before.
            await until(lambda mode=mode: mode in stand_in.modes, f"a request while {mode}")
            start = len(weathers())
            await until(lambda start=start: then(None, start), f"frames while it is {mode}", 30)
        stand_in.mode = "ok"
        stand_in.release.set()
        start = len(weathers())
        await until(lambda: then(RAIN, start), "the weather back", 30)
        daemon.request_stop()
        assert await task == 0
    got = weathers()
    assert all(w in (RAIN, None) for w in got)
    # Each phase shows in capture order: weather, then null (fail, stall), then weather.
    first_null = got.index(None)
    last_null = len(got) - 1 - got[::-1].index(None)
    assert RAIN in got[:first_null] and RAIN in got[last_null:]
    assert all(daemon.stats.cameras[c].enrich_errors == 0 for c in ("W1", "W2"))
    assert all(daemon.stats.cameras[c].outcomes["stored"] >= 8 for c in ("W1", "W2"))


# --- enrich --backfill: the archive endpoint ---------------------------------------------------


class Archive:
    """The archive endpoint on 127.0.0.1: hourly codes, 3 (overcast) on even hours and 61
    (rain) on odd ones; `fail` answers 502."""

    def __init__(self) -> None:
        self.fail = False
        self.requests: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.query))
        if self.fail:
            return web.Response(status=502, text="bad gateway")
        day = datetime.fromisoformat(request.query["start_date"])
        end = datetime.fromisoformat(request.query["end_date"]) + timedelta(days=1)
        times = []
        while day < end:
            times.append(day.strftime("%Y-%m-%dT%H:%M"))
            day += timedelta(hours=1)
        hours = [int(t[11:13]) for t in times]
        return web.json_response({"hourly": {
            "time": times, "weather_code": [61 if h % 2 else 3 for h in hours],
            "cloud_cover": [100] * len(times), "precipitation": [0.0] * len(times),
            "is_day": [int(8 <= h < 16) for h in hours]}})


@pytest.fixture
async def archive() -> AsyncIterator[tuple[Archive, str]]:
    stand_in = Archive()
    app = web.Application()
    app.router.add_get("/v1/archive", stand_in.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield stand_in, f"http://127.0.0.1:{port}/v1/archive"
    await runner.cleanup()


def bare_tree(data_dir: Path) -> list[StoredFrame]:
    """Frames stored before the enrichers: no daylight, no weather (B has no location)."""
    specs = [Spec("A", m) for m in (7 * 60 + 40, 7 * 60 + 50, 13 * 60 + 10)]
    specs += [Spec("A", 40 * 1440 + 60), Spec("B", 100)]
    stored = make_tree(data_dir, specs)
    for frame in stored:
        sidecar = (data_dir / frame.key).with_suffix(".json")
        meta = json.loads(sidecar.read_text())
        for field in ("sun_elevation", "daypart", "weather"):
            del meta[field]
        if meta["camera_id"] == "B":
            meta["lat"] = meta["lon"] = None
        sidecar.write_text(json.dumps(meta))
    return stored


def backfill(data_dir: Path, config: Path) -> int:
    return main(["enrich", "--backfill", "--data-dir", str(data_dir), "--config", str(config)])


async def test_backfill_fills_daylight_and_weather_in_batches_and_resumes(
    tmp_path: Path, archive: tuple[Archive, str], capsys: pytest.CaptureFixture[str],
) -> None:
    stand_in, url = archive
    data = tmp_path / "data"
    stored = bare_tree(data)
    refresh(data)
    config = tmp_path / "cameras.yaml"
    config.write_text(f"weather:\n  archive_url: {url}\n"
                      "cameras:\n  - id: A\n    url: http://127.0.0.1:9/a.jpg\n")
    assert await asyncio.to_thread(backfill, data, config) == 0
    assert "daylight added to 4 frames, weather to 4" in capsys.readouterr().out
    # Two batches: the first day, and 40 days later (over BATCH_DAYS apart).
    assert [(r["start_date"], r["end_date"]) for r in stand_in.requests] == [
        ("2026-11-20", "2026-11-20"), ("2026-12-30", "2026-12-30")]
    raws = [(data / s.key).with_suffix(".json").read_bytes() for s in stored]
    metas = [json.loads(raw) for raw in raws]
    assert all(raw == encode_sidecar(meta) for raw, meta in zip(raws[:4], metas[:4], strict=True))
    for meta in metas[:4]:
        when = datetime.fromisoformat(meta["captured_at"])
        assert meta["sun_elevation"] == daylight_fields(45.76, 4.84, when)["sun_elevation"]
    # 07:40 and 07:50 take the 08:00 value (overcast); 13:10 the 13:00 one (rain).
    assert [m["weather"]["label"] for m in metas[:3]] == ["overcast", "overcast", "rain"]
    assert metas[0]["weather"]["observed_at"] == "2026-11-20T08:00:00Z"
    assert "sun_elevation" not in metas[4] and "weather" not in metas[4]  # B: no location
    with sqlite3.connect(index_path(data)) as db:  # the index follows
        labels = dict(db.execute("SELECT key, weather FROM frames"))
    assert labels[stored[2].key] == "rain"
    # A rerun finds nothing missing: no request at all.
    assert await asyncio.to_thread(backfill, data, config) == 0
    assert "daylight added to 0 frames, weather to 0" in capsys.readouterr().out
    assert len(stand_in.requests) == 2


async def test_backfill_with_the_archive_down_keeps_what_it_can(
    tmp_path: Path, archive: tuple[Archive, str], capsys: pytest.CaptureFixture[str],
) -> None:
    stand_in, url = archive
    stand_in.fail = True
    data = tmp_path / "data"
    stored = bare_tree(data)
    config = tmp_path / "cameras.yaml"
    config.write_text(f"weather:\n  archive_url: {url}\n"
                      "cameras:\n  - id: A\n    url: http://127.0.0.1:9/a.jpg\n")
    assert await asyncio.to_thread(backfill, data, config) == 1
    captured = capsys.readouterr()
    assert "4 still without weather" in captured.out
    assert "warning: weather for cell 45.75,4.85 2026-11-20..2026-11-20: HTTP 502" in captured.err
    meta = json.loads((data / stored[0].key).with_suffix(".json").read_text())
    assert "sun_elevation" in meta and "weather" not in meta
    stand_in.fail = False
    assert await asyncio.to_thread(backfill, data, config) == 0
    assert "daylight added to 0 frames, weather to 4" in capsys.readouterr().out


def test_the_simulator_demo_config_never_asks_for_weather() -> None:
    config = parse_config(demo_config("http://127.0.0.1:8090", ["SIM001"]))
    assert config.weather.enabled is False
