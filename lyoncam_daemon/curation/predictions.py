"""What `predict` found, per frame, in the index: for `sample --strategy uncertain|rare`.

Two tables beside `frames`, created by `CREATE TABLE IF NOT EXISTS` on every connect, so an
index file made before them opens as it is and simply has no predictions yet:

- `predictions`: one row per frame and model version (the frame was looked at, and how
  many boxes were found: a frame where the model saw nothing counts too);
- `predicted_boxes`: one row per box kept after NMS: class id, class name (when the model
  or `--names` gave names) and score.

A frame predicted again by the same model version replaces its rows; another version adds
its own. Rows of a frame deleted from the tree go with its `frames` row
(`forget`).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    boxes INTEGER NOT NULL,
    predicted_at REAL NOT NULL,
    PRIMARY KEY (key, model)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS predictions_model ON predictions (model, predicted_at);
CREATE TABLE IF NOT EXISTS predicted_boxes (
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    n INTEGER NOT NULL,
    class_id INTEGER NOT NULL,
    label TEXT,
    score REAL NOT NULL,
    PRIMARY KEY (key, model, n)
) WITHOUT ROWID;
"""

#: The tables holding rows per frame key (dropped with the frame's row).
TABLES = ("predictions", "predicted_boxes")

#: The classes `--strategy rare` looks for: the ones a street camera sees least (on the
#: labelled CWL9018 sets, 57 buses and 57 motorbikes against 3,230 cars).
RARE = ("bicycle", "scooter", "motorbike", "bus", "pedestrian")

#: Other names of the same things, as COCO-trained models and earlier label sets spell them.
SYNONYMS = {"person": "pedestrian", "motorcycle": "motorbike", "motor scooter": "scooter",
            "bike": "bicycle", "cyclist": "bicycle", "people": "pedestrian"}


def canonical(label: str) -> str:
    """`Motor_Scooter` → `motor scooter` → `scooter`: one spelling per class."""
    name = re.sub(r"[\s_-]+", " ", label.strip().lower())
    return SYNONYMS.get(name, name)


@dataclass(frozen=True)
class FoundBox:
    class_id: int
    label: str | None
    score: float


def record(db: sqlite3.Connection, model: str, frames: Iterable[tuple[str, Sequence[FoundBox]]],
           now: float) -> None:
    """Replace the predictions of `model` for these frames, in one transaction."""
    rows = list(frames)
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany("DELETE FROM predicted_boxes WHERE key = ? AND model = ?",
                       [(key, model) for key, _ in rows])
        db.executemany("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?)",
                       [(key, model, len(boxes), now) for key, boxes in rows])
        db.executemany("INSERT INTO predicted_boxes VALUES (?, ?, ?, ?, ?, ?)",
                       [(key, model, n, b.class_id, b.label, b.score)
                        for key, boxes in rows for n, b in enumerate(boxes)])
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def forget(db: sqlite3.Connection, keys: Iterable[str]) -> None:
    """Drop the predictions of frames that are gone (inside the caller's transaction)."""
    pairs = [(k,) for k in keys]
    for table in TABLES:
        db.executemany(f"DELETE FROM {table} WHERE key = ?", pairs)


def latest_model(db: sqlite3.Connection) -> str | None:
    """The model version that predicted last: what `sample` uses unless told otherwise."""
    row = db.execute("SELECT model FROM predictions ORDER BY predicted_at DESC LIMIT 1"
                     ).fetchone()
    return str(row[0]) if row else None


def models(db: sqlite3.Connection) -> dict[str, int]:
    """Frames predicted per model version."""
    return {str(m): int(n) for m, n in db.execute(
        "SELECT model, count(*) FROM predictions GROUP BY model")}


def uncertain(db: sqlite3.Connection, model: str, low: float, high: float) -> dict[str, int]:
    """Per frame, its boxes scoring within [low, high): what the model hesitated over."""
    return {str(k): int(n) for k, n in db.execute(
        "SELECT key, count(*) FROM predicted_boxes WHERE model = ? AND score >= ? "
        "AND score < ? GROUP BY key", (model, low, high))}


def rare(db: sqlite3.Connection, model: str, wanted: Iterable[str] = RARE
         ) -> dict[str, list[str]]:
    """Per frame with boxes of a rare class, those classes (canonical names, sorted)."""
    want = {canonical(w) for w in wanted}
    found: dict[str, set[str]] = {}
    for key, label in db.execute(
            "SELECT key, label FROM predicted_boxes WHERE model = ? AND label IS NOT NULL",
            (model,)):
        name = canonical(str(label))
        if name in want:
            found.setdefault(str(key), set()).add(name)
    return {k: sorted(v) for k, v in found.items()}
