"""Sync against a stand-in server: what a pull does to the disk, and that none of it (hashing,
decode checks, reads, writes, fsyncs, moves, removals) runs on the event loop.

The blocking functions are wrapped to note the thread they run in; a call on the event-loop
thread fails the pull. A twin test runs the same pull with ``asyncio.to_thread`` made inline,
to show the guard catches exactly that mistake.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from PIL import Image

from lyoncam_daemon.labelstudio.auth import Credentials, Secret
from lyoncam_daemon.labelstudio.client import LabelStudioClient
from lyoncam_daemon.labelstudio.pull import PullOptions, Summary, disk, run_pull
from lyoncam_daemon.labelstudio.pull.manifest import MANIFEST
from lyoncam_daemon.labelstudio.split import side_of

from .helpers import KEY, StandIn, ok

T = TypeVar("T")

CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" '
          'toName="image"><Label value="Car"/></RectangleLabels></View>')
STEMS = [f"CAM_A_20261126T{h:02d}1500Z" for h in range(6)]


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 9), (seed * 40 % 256, 90, 200)).save(buf, "JPEG")
    return buf.getvalue()


def box(x: float) -> dict[str, Any]:
    return {"type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "original_width": 16, "original_height": 9,
            "value": {"x": x, "y": 10, "width": 20, "height": 30, "rotation": 0,
                      "rectanglelabels": ["Car"]}}


@dataclass
class Project:
    """The stand-in's one project: tasks can be edited between pulls."""

    standin: StandIn
    tasks: list[dict[str, Any]] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)

    def serve(self) -> None:
        self.standin.plans["/api/projects/1"] = [ok(json.dumps({"id": 1,
                                                                "label_config": CONFIG}))]
        self.standin.plans["/api/tasks/"] = [
            lambda: web.json_response({"tasks": self.tasks, "total": len(self.tasks)})]
        for path, data in self.images.items():
            self.standin.plans[path] = [body(data)]


def body(data: bytes) -> Callable[[], web.Response]:
    return lambda: web.Response(body=data)


@pytest.fixture
def project(standin: StandIn) -> Project:
    p = Project(standin)
    for i, stem in enumerate(STEMS):
        path = f"/data/upload/1/ab12cd3{i}-{stem}.jpg"
        p.images[path] = jpeg(i)
        p.tasks.append({"id": i + 1, "data": {"image": path},
                        "annotations": [{"id": i + 1, "result": [box(10 + i)]}]})
    p.serve()
    return p


async def pull(url: str, out: Path, val_fraction: float) -> Summary:
    async with LabelStudioClient(url, Credentials(Secret(KEY)), rate=None) as client:
        return await run_pull(client, PullOptions(project=1, out=out, val_fraction=val_fraction))


class LoopGuard:
    """Wraps blocking functions: while active, a call on the event-loop thread raises (and is
    noted); calls in worker threads are counted by name."""

    BLOCKING: tuple[tuple[Any, str], ...] = (
        (os, "fsync"), (os, "replace"), (os, "unlink"), (Path, "read_bytes"),
        (Path, "read_text"), (Image, "open"), (disk, "sha256"),
    )

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.active = False
        self.on_loop: list[str] = []
        self.in_thread: Counter[str] = Counter()
        self._lock = threading.Lock()
        for owner, name in self.BLOCKING:
            monkeypatch.setattr(owner, name, self._guarded(getattr(owner, name), name))

    def _guarded(self, original: Callable[..., T], name: str) -> Callable[..., T]:
        def guarded(*args: Any, **kwargs: Any) -> T:
            if self.active:
                try:
                    asyncio.get_running_loop()
                except RuntimeError:  # no loop in this thread: a worker
                    with self._lock:
                        self.in_thread[name] += 1
                else:
                    self.on_loop.append(name)
                    raise AssertionError(f"{name} called on the event loop")
            return original(*args, **kwargs)

        return guarded

    @contextmanager
    def watching(self) -> Iterator[None]:
        self.active = True
        try:
            yield
        finally:
            self.active = False


async def edit_and_pull_again(project: Project, out: Path, guard: LoopGuard) -> list[Summary]:
    """A first pull, a pull where every group changes sides, a label changes and a task goes,
    and a pull after the manifest was lost."""
    summaries = []
    with guard.watching():
        summaries.append(await pull(project.standin.url, out, 0.0))
    project.tasks[0]["annotations"] = [{"id": 99, "result": [box(50)]}]
    del project.tasks[-1]
    with guard.watching():
        summaries.append(await pull(project.standin.url, out, 0.999999))
    (out / MANIFEST).unlink()
    with guard.watching():
        summaries.append(await pull(project.standin.url, out, 0.999999))
    return summaries


async def test_sync_does_no_blocking_file_work_on_the_event_loop(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard = LoopGuard(monkeypatch)
    out = tmp_path / "ds"
    first, second, third = await edit_and_pull_again(project, out, guard)
    assert guard.on_loop == []
    # every kind of work did happen (in threads): the guard watched something
    assert set(guard.in_thread) == {name for _, name in LoopGuard.BLOCKING}, guard.in_thread
    assert (first.fetched, first.split["train"], first.labels_new) == (6, 6, 6)
    moved = sum(side_of(s, 0.999999) == "val" for s in STEMS[:-1])
    assert moved >= 4  # nearly every group is val at this fraction
    assert (second.fetched, second.present, second.moved, second.labels_changed,
            second.removed) == (0, 5, moved, 1, 1)
    assert (third.fetched, third.present, third.moved) == (0, 5, 0)
    assert not (out / "images" / "train" / f"{STEMS[-1]}.jpg").exists()


async def test_the_guard_catches_file_work_on_the_loop(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same pull with asyncio.to_thread running its function inline, on the loop."""
    async def inline(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return func(*args, **kwargs)

    guard = LoopGuard(monkeypatch)
    monkeypatch.setattr(asyncio, "to_thread", inline)
    with pytest.raises(AssertionError, match="called on the event loop"):
        await edit_and_pull_again(project, tmp_path / "ds", guard)
    assert guard.on_loop


async def test_a_refetched_image_leaves_no_copy_on_its_old_side(
    project: Project, tmp_path: Path
) -> None:
    """An image damaged on disk whose group changed sides is fetched again into its new side;
    the damaged copy on the old side is removed (it is listed in the manifest)."""
    out = tmp_path / "ds"
    await pull(project.standin.url, out, 0.0)
    stem = next(s for s in STEMS if side_of(s, 0.999999) == "val")
    old = out / "images" / "train" / f"{stem}.jpg"
    old.write_bytes(b"damaged")
    summary = await pull(project.standin.url, out, 0.999999)
    assert summary.fetched == 1 and summary.failed == 0
    assert not old.exists() and not (out / "labels" / "train" / f"{stem}.txt").exists()
    assert (out / "images" / "val" / f"{stem}.jpg").read_bytes() == \
        project.images[f"/data/upload/1/ab12cd3{STEMS.index(stem)}-{stem}.jpg"]
