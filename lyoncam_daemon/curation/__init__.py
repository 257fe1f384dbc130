"""Curating what was captured into something worth labelling.

Lives here: the frame index (index.py: SQLite, rebuildable from the sidecars, kept current
by a post-store hook), coverage counts and the sample strategies (dataset.py), the report
page (report_page.py), pre-annotation with the user's own ONNX detector (predict.py, and
predictions.py for its boxes), `enrich --backfill` (backfill.py) and the commands `index`,
`report`, `sample`, `predict` and `enrich` (commands.py).

May import: config, frames, storage, enrich, observe.
"""
