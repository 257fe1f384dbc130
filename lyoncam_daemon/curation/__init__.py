"""Curating what was captured into something worth labelling.

Lives here: the frame index (index.py: SQLite, rebuildable from the sidecars, kept current
by a post-store hook), coverage counts and the balanced sample (dataset.py), the report
page (report_page.py), `enrich --backfill` (backfill.py) and the commands `index`,
`report`, `sample` and `enrich` (commands.py).

May import: config, frames, storage, enrich, observe.
"""
