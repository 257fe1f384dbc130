"""Enriching a stored frame's sidecar with what the pixels do not say.

Lives here: the stage (stage.py: enrichers awaited in turn under one deadline; a failing
one never costs the frame), the enrichers themselves (daylight.py: sun elevation and
daypart, imagestats.py: brightness from the judge's decode, weather.py: Open-Meteo, one
request per cell and slot) and build.py, which picks the enrichers a config asks for.
`enrich --backfill` over frames already stored is a curation command (curation/backfill.py).

May import: config, frames.
"""
