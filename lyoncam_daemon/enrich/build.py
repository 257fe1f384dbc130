"""The built-in enrichers (enrich.py runs them): daylight, image statistics, weather."""

from __future__ import annotations

from lyoncam_daemon.config import Config
from lyoncam_daemon.enrich.daylight import DaylightEnricher
from lyoncam_daemon.enrich.imagestats import ImageStatsEnricher
from lyoncam_daemon.enrich.stage import Enricher
from lyoncam_daemon.enrich.weather import WeatherEnricher


def build_enrichers(config: Config) -> list[Enricher]:
    """What `run` adds to every sidecar."""
    enrichers: list[Enricher] = [DaylightEnricher(), ImageStatsEnricher()]
    if config.weather.enabled:
        enrichers.append(WeatherEnricher(config.weather, user_agent=config.http.user_agent))
    return enrichers
