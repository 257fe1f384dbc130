"""What the collection covers and what to label next: `report` counts, `sample` picks.

Both read the frame index (index.py), never the million sidecars. A frame's *cell* is its
camera x daypart x weather label; frames without a daypart (a camera without lat/lon) or
without weather count under `unknown`, so nothing is left out of the totals.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from itertools import chain, groupby
from pathlib import Path
from typing import Any

from lyoncam_daemon.curation import predictions
from lyoncam_daemon.enrich.daylight import DAYPARTS
from lyoncam_daemon.enrich.weather import LABELS
from lyoncam_daemon.frames.fingerprint import Fingerprint

UNKNOWN = "unknown"
#: A non-empty cell with fewer frames than this is `thin`: too few for a varied labelled set.
THIN_BELOW = 20

CellKey = tuple[str, str, str]


def _name(v: str | None) -> str:
    return v if v else UNKNOWN


def _where(cell: CellKey | tuple[None, str, str]) -> tuple[str, list[str | None]]:
    """SQL condition and parameters selecting one cell (`unknown` is NULL in the index); a
    camera of None selects the daypart x weather over every camera."""
    camera, daypart, weather = cell
    cond = "daypart IS ? AND weather IS ?"
    params: list[str | None] = [None if daypart == UNKNOWN else daypart,
                                None if weather == UNKNOWN else weather]
    if camera is None:
        return cond, params
    return "camera = ? AND " + cond, [camera, *params]


# --- report --------------------------------------------------------------------------------


def report(db: sqlite3.Connection, thin_below: int = THIN_BELOW) -> dict[str, Any]:
    """`{"total", "cells": [{"camera", "daypart", "weather", "frames", "status"}],
    "overview": [{"daypart", "weather", "frames", "cameras", "status"}], "cameras", "days",
    "empty",
    "thin", "thin_below"}`. Every camera x daypart x weather is a cell, empty ones included
    (that is what is missing); `overview` sums them over the cameras (`cameras`: how many
    have frames there); `unknown` columns appear only when used."""
    counts: dict[CellKey, int] = {}
    for camera, daypart, weather, n in db.execute(
            "SELECT camera, daypart, weather, count(*) FROM frames "
            "GROUP BY camera, daypart, weather"):
        counts[(camera, _name(daypart), _name(weather))] = n
    cameras = sorted({c for c, _, _ in counts})
    dayparts = [*DAYPARTS, *([UNKNOWN] if any(d == UNKNOWN for _, d, _ in counts) else [])]
    weathers = [*LABELS, *([UNKNOWN] if any(w == UNKNOWN for _, _, w in counts) else [])]
    cells = []
    for camera in cameras:
        for daypart in dayparts:
            for weather in weathers:
                n = counts.get((camera, daypart, weather), 0)
                status = "empty" if n == 0 else "thin" if n < thin_below else "ok"
                cells.append({"camera": camera, "daypart": daypart, "weather": weather,
                              "frames": n, "status": status})
    overview = []
    for daypart in dayparts:
        for weather in weathers:
            ns = [counts.get((c, daypart, weather), 0) for c in cameras]
            n = sum(ns)
            overview.append({"daypart": daypart, "weather": weather, "frames": n,
                             "cameras": sum(1 for x in ns if x),
                             "status": "empty" if n == 0 else "thin" if n < thin_below
                             else "ok"})
    days = dict(db.execute("SELECT day, count(*) FROM frames GROUP BY day ORDER BY day"))
    return {
        "total": sum(counts.values()),
        "cells": cells,
        "overview": overview,
        "cameras": len(cameras),
        "days": days,
        "empty": sum(c["status"] == "empty" for c in cells),
        "thin": sum(c["status"] == "thin" for c in cells),
        "thin_below": thin_below,
    }


def spread(count: int, k: int) -> list[int]:
    """`k` positions among `count`, evenly spaced in order (the middle of each share)."""
    k = min(k, count)
    return [int((i + 0.5) * count / k) for i in range(k)]


def cell_examples(db: sqlite3.Connection, cell: CellKey | tuple[None, str, str], frames: int,
                  k: int) -> list[str]:
    """Keys of up to `k` frames of a cell (of every camera when its camera is None) spread
    over its time span."""
    cond, params = _where(cell)
    keys = []
    for offset in spread(frames, k):
        row = db.execute(f"SELECT key FROM frames WHERE {cond} ORDER BY captured_at "
                         "LIMIT 1 OFFSET ?", [*params, offset]).fetchone()
        if row is not None:
            keys.append(row[0])
    return keys


# --- sample --------------------------------------------------------------------------------


@dataclass
class Candidate:
    key: str
    camera: str
    captured_at: str
    daypart: str
    weather: str
    #: Why it was picked: `balanced`, or what the strategy saw in the frame.
    reason: str = "balanced"

    def as_json(self) -> dict[str, str]:
        return {"key": self.key, "camera": self.camera, "captured_at": self.captured_at,
                "daypart": self.daypart, "weather": self.weather, "reason": self.reason}


@dataclass(frozen=True)
class Wanted:
    """What a strategy looks for in a frame: how much of it (higher first) and why, in words."""

    priority: float
    reason: str


@dataclass
class _Stratum:
    cell: CellKey
    #: (key, captured_at), oldest first: plain tuples, a million of them load quickly.
    frames: list[tuple[str, str]]
    taken: set[int] = field(default_factory=set)
    #: Per frame, how much the strategy wants it (None: plain balanced sampling).
    wanted: list[Wanted] | None = None

    @property
    def left(self) -> int:
        return len(self.frames) - len(self.taken)

    def candidate(self, i: int) -> Candidate:
        key, captured = self.frames[i]
        reason = self.wanted[i].reason if self.wanted is not None else "balanced"
        return Candidate(key, self.cell[0], captured, self.cell[1], self.cell[2], reason)


def quotas(sizes: Sequence[int], n: int) -> list[int]:
    """Split `n` as evenly as the sizes allow (water-filling): small strata give all they
    have, the rest share what is left equally (earlier strata take the remainder)."""
    quota = [0] * len(sizes)
    open_ = sorted(range(len(sizes)), key=lambda i: sizes[i])
    left = min(n, sum(sizes))
    while open_ and left > 0:
        share, extra = divmod(left, len(open_))
        smallest = open_[0]
        if sizes[smallest] - quota[smallest] <= share:
            give = sizes[smallest] - quota[smallest]
            quota[smallest] += give
            left -= give
            open_.pop(0)
            continue
        for rank, i in enumerate(sorted(open_)):
            quota[i] += share + (1 if rank < extra else 0)
        left = 0
    return quota


class FrameGone(Exception):
    """The index lists a frame whose files are no longer on disk."""


#: A frame's fingerprint by key, None when it has none (or it cannot be read); FrameGone
#: when the frame itself is gone, so it is never offered.
FingerprintOf = Callable[[str], Fingerprint | None]


def sidecar_fingerprints(data_dir: Path) -> FingerprintOf:
    """Read from the frame's sidecar: the index stays slim (a 4096-bit phash is 1 KB of hex,
    a gigabyte over a million frames), and a sample only looks at a few frames per pick."""
    def load(key: str) -> Fingerprint | None:
        jpg = data_dir / key
        try:
            meta = json.loads(jpg.with_suffix(".json").read_bytes())
        except FileNotFoundError:
            raise FrameGone(key) from None
        except (OSError, ValueError):
            return None
        if not jpg.is_file():
            raise FrameGone(key)
        try:
            return Fingerprint.from_json(meta["fingerprint"])
        except (ValueError, KeyError, TypeError):
            return None
    return load


def _strata(db: sqlite3.Connection, only: Mapping[str, Wanted] | None = None,
            skip: Set[str] = frozenset()) -> list[_Stratum]:
    """Every non-empty cell's frames not pushed yet, oldest first: only those in `only` when
    given (with how much each is wanted), never those in `skip`."""
    groups: dict[CellKey, list[tuple[str, str]]] = defaultdict(list)
    rows = db.execute(
        "SELECT camera, daypart, weather, key, captured_at FROM frames "
        # The index's own order (frames_cell): no sort of a million rows.
        "WHERE key NOT IN (SELECT key FROM pushed) "
        "ORDER BY camera, daypart, weather, captured_at")
    for (camera, daypart, weather), frames in groupby(rows, key=lambda r: r[:3]):
        members = [r[3:] for r in frames
                   if (only is None or r[3] in only) and r[3] not in skip]
        if members:
            groups[(camera, _name(daypart), _name(weather))].extend(members)
    return [_Stratum(cell, groups[cell],
                     wanted=None if only is None else [only[k] for k, _ in groups[cell]])
            for cell in sorted(groups)]


class _Picked:
    """The chosen frames, and their fingerprints per camera for the near-duplicate test."""

    def __init__(self, threshold: int, fingerprint_of: FingerprintOf) -> None:
        self.threshold = threshold
        self.fingerprint_of = fingerprint_of
        self.frames: list[Candidate] = []
        self.fingerprints: dict[str, list[Fingerprint]] = defaultdict(list)
        self.near_duplicates = 0
        #: Keys the index lists whose frame is gone from disk: never picked.
        self.gone: list[str] = []

    def offer(self, c: Candidate) -> bool:
        """Take the frame unless it is gone, or a near-duplicate of one taken from its
        camera."""
        try:
            fp = self.fingerprint_of(c.key)
        except FrameGone:
            self.gone.append(c.key)
            return False
        if fp is not None and any(other.compatible(fp) and other.distance(fp) <= self.threshold
                                  for other in self.fingerprints[c.camera]):
            self.near_duplicates += 1
            return False
        self.frames.append(c)
        if fp is not None:
            self.fingerprints[c.camera].append(fp)
        return True


def _pick(stratum: _Stratum, k: int, picked: _Picked) -> int:
    """Up to `k` more frames of the stratum, spread in time: the frames not looked at yet
    are cut into `k` runs; in each, the most wanted frame (the one nearest the run's middle
    when all are equal) that is not a near-duplicate of a frame already picked, else the
    nearest such frame outside the run. Returns how many."""
    pool = [i for i in range(len(stratum.frames)) if i not in stratum.taken]
    k = min(k, len(pool))
    got = 0
    for run, middle in enumerate(spread(len(pool), k)):
        lo, hi = run * len(pool) // k, (run + 1) * len(pool) // k
        inside = sorted(range(lo, hi), key=lambda j: (
            -(stratum.wanted[pool[j]].priority if stratum.wanted is not None else 0.0),
            abs(j - middle), j))
        outside = (j for j in _outwards(middle, len(pool)) if not lo <= j < hi)
        for j in chain(inside, outside):
            i = pool[j]
            if i in stratum.taken:
                continue
            stratum.taken.add(i)  # looked at: a near-duplicate stays out for good
            if picked.offer(stratum.candidate(i)):
                got += 1
                break
    return got


def _outwards(start: int, n: int) -> Iterable[int]:
    yield start
    for step in range(1, n):
        for i in (start - step, start + step):
            if 0 <= i < n:
                yield i


def _fill(strata: list[_Stratum], n: int, picked: _Picked) -> None:
    """Pick up to `n` frames in all from the strata: equal shares per cell, then the
    shortfall near-duplicates left shared the same way until filled or nothing is left."""
    goal = len(picked.frames) + n
    for stratum, k in zip(strata, quotas([len(s.frames) for s in strata], n), strict=True):
        if k:
            _pick(stratum, k, picked)
    while len(picked.frames) < goal and any(s.left for s in strata):
        more = quotas([s.left for s in strata], goal - len(picked.frames))
        for stratum, k in zip(strata, more, strict=True):
            if k:
                _pick(stratum, k, picked)


@dataclass
class Sampled:
    frames: list[Candidate]
    #: Frames picked per reason kind (`balanced`, `uncertain`, `rare`).
    by_kind: dict[str, int]
    near_duplicates: int
    #: Frames left out because they were pushed already.
    pushed: int
    #: Keys the index lists whose frame is gone from disk (never picked).
    gone: list[str] = field(default_factory=list)


def sample(db: sqlite3.Connection, n: int, fingerprint_of: FingerprintOf,
           threshold: int = 64) -> list[Candidate]:
    """A balanced set of `n` frames (fewer if the index has fewer usable ones).

    Stratified by camera x daypart x weather (equal shares, small cells give all they have),
    spread in time within each cell, skipping frames within `threshold` bits of a frame
    already picked from the same camera, frames already pushed to Label Studio, and frames
    gone from disk (`Sampled.gone`).
    """
    return sample_by(db, n, fingerprint_of, threshold).frames


def sample_by(db: sqlite3.Connection, n: int, fingerprint_of: FingerprintOf,
              threshold: int = 64, wanted: Mapping[str, Wanted] | None = None) -> Sampled:
    """`sample`, first among the frames a strategy wants (`wanted`: how much, and why),
    most wanted first within each time run; what they cannot fill is taken balanced from
    the other frames."""
    picked = _Picked(threshold, fingerprint_of)
    if wanted:
        _fill(_strata(db, only=wanted), n, picked)
    if len(picked.frames) < n:
        _fill(_strata(db, skip=wanted.keys() if wanted else frozenset()),
              n - len(picked.frames), picked)
    kinds = Counter(c.reason.split(":", 1)[0] for c in picked.frames)
    (pushed,) = db.execute("SELECT count(*) FROM frames WHERE key IN (SELECT key FROM pushed)"
                           ).fetchone()
    return Sampled(sorted(picked.frames, key=lambda c: (c.camera, c.captured_at)),
                   dict(kinds), picked.near_duplicates, int(pushed), picked.gone)


STRATEGIES = ("balanced", "uncertain", "rare")
#: Scores a model hesitates over: above `predict`'s default threshold, below a sure box.
UNCERTAIN_BAND = (0.25, 0.6)


def wanted_by(db: sqlite3.Connection, strategy: str, model: str,
              band: tuple[float, float] = UNCERTAIN_BAND,
              rare_classes: Sequence[str] = predictions.RARE) -> dict[str, Wanted]:
    """The frames a strategy wants, from what `model` predicted on them (see `sample_by`).

    `uncertain`: frames with boxes scoring within `band`, more such boxes first; `rare`:
    frames with boxes of rare classes, more distinct rare classes first.
    """
    if strategy == "uncertain":
        low, high = band
        return {k: Wanted(n, f"uncertain: {n} box{'es' if n > 1 else ''} scoring "
                             f"{low:g}-{high:g}")
                for k, n in predictions.uncertain(db, model, low, high).items()}
    if strategy == "rare":
        return {k: Wanted(len(names), f"rare: {', '.join(names)}")
                for k, names in predictions.rare(db, model, rare_classes).items()}
    return {}
