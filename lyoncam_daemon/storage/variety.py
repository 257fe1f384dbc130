"""`retention.keep_variety`: when size forces deletion, delete from the most common cells first.

Oldest-days-first throws away a rare night-rain frame as readily as the thousandth clear
midday one. With `keep_variety`, frames forced out by `max_bytes` are taken one at a time
from whichever (camera, daypart, weather) cell holds the most frames at that moment, oldest
first within it, so the common cells shrink towards the others and the thin cells keep what
they have. Never deleted: a camera's newest frame (a restart dedups against it) and a cell's
last `floor` frames (a thin cell is never emptied).

Pure: the caller lists the frames (from the index, which knows each frame's cell and size)
and applies the plan.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

CellKey = tuple[str, str, str]


@dataclass(frozen=True)
class CellFrame:
    """One stored frame as the plan sees it: its key, cell, capture time (ISO 8601, UTC;
    sorts as time) and bytes (JPEG and sidecar)."""

    key: str
    cell: CellKey
    captured_at: str
    bytes: int

    @property
    def camera(self) -> str:
        return self.cell[0]


class CellSource(Protocol):
    """Where the pass learns each frame's cell (the index, which the capture layer hands
    over: storage knows nothing of dayparts), and tells it which frames are gone. Both are
    called from the pass's own thread."""

    def frames(self) -> list[CellFrame]: ...

    def forget(self, keys: Iterable[str]) -> None: ...

    def forget_under(self, prefixes: Iterable[str]) -> None:
        """Every frame whose key starts with one of these folder prefixes (`CAM/Y/M/D/`)."""


@dataclass(frozen=True)
class VarietyPlan:
    doomed: list[CellFrame]
    #: Bytes still over the limit when every cell is down to its floor (0 when met).
    short: int

    def per_cell(self) -> dict[CellKey, int]:
        return dict(Counter(f.cell for f in self.doomed))


def plan_variety(frames: Sequence[CellFrame], excess: int, floor: int) -> VarietyPlan:
    """Frames to delete to free `excess` bytes, from the fullest cells first (see module)."""
    newest: dict[str, CellFrame] = {}
    for f in frames:
        if f.camera not in newest or f.captured_at > newest[f.camera].captured_at:
            newest[f.camera] = f
    keep = {f.key for f in newest.values()}
    cells: dict[CellKey, list[CellFrame]] = defaultdict(list)
    for f in frames:
        cells[f.cell].append(f)
    # Per cell, the deletable frames oldest first; a cell's count includes its kept frame.
    queue: dict[CellKey, list[CellFrame]] = {}
    size: dict[CellKey, int] = {}
    for cell, members in cells.items():
        size[cell] = len(members)
        queue[cell] = sorted((f for f in members if f.key not in keep),
                             key=lambda f: (f.captured_at, f.key), reverse=True)
    heap = [(-size[c], c) for c in cells if queue[c] and size[c] > floor]
    heapq.heapify(heap)
    doomed: list[CellFrame] = []
    while excess > 0 and heap:
        _, cell = heapq.heappop(heap)
        victim = queue[cell].pop()  # the oldest left
        doomed.append(victim)
        excess -= victim.bytes
        size[cell] -= 1
        if queue[cell] and size[cell] > floor:
            heapq.heappush(heap, (-size[cell], cell))
    return VarietyPlan(doomed, max(0, excess))


def describe(per_cell: Mapping[CellKey, int]) -> str:
    """`CWL9018/day/clear: 120, CWL9018/night/rain: 2`, fullest first: the log line's cells."""
    return ", ".join(f"{'/'.join(c)}: {n}"
                     for c, n in sorted(per_cell.items(), key=lambda kv: (-kv[1], kv[0])))
