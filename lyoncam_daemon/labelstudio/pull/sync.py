"""Sync: make the output directory match the plan, fetching what is missing.

Images already present and intact are kept (moved if their side of the split changed), missing
ones are fetched through the client (rate-limited, retried), decode-checked and written
atomically, and files of images the plan no longer has are removed. Everything touching the
disk runs in a worker thread (see disk.py); the event loop only waits on the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Protocol
from urllib.parse import quote, urlsplit

import structlog

from lyoncam_daemon.labelstudio.client import HTTPError, LabelStudioClient, strip_query
from lyoncam_daemon.labelstudio.pull import disk
from lyoncam_daemon.labelstudio.pull.manifest import Entry, entry
from lyoncam_daemon.labelstudio.pull.model import ImageResult, Item, PullOptions, Summary

log = structlog.get_logger(__name__)


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, result: ImageResult) -> None: ...
    def close(self) -> None: ...


class NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, result: ImageResult) -> None:
        pass

    def close(self) -> None:
        pass


def image_urls(ref: str, base_url: str) -> list[str]:
    """Where to try to fetch an image, in order. Empty if the reference cannot be fetched."""
    parts = urlsplit(ref)
    own = not parts.netloc or (
        (parts.scheme.lower(), parts.netloc.lower())
        == (urlsplit(base_url).scheme.lower(), urlsplit(base_url).netloc.lower())
    )
    if parts.scheme and parts.scheme.lower() not in ("http", "https"):
        return []  # s3://, gs://, ...: cloud storage the server would have to presign
    if own and parts.path.startswith("/data/upload/"):
        rel = parts.path[len("/data/") :]
        return [ref, f"/storage-data/uploaded/?filepath={quote(rel, safe='/')}"]
    if not parts.scheme and not ref.startswith("/"):
        return []
    return [ref]


async def fetch_image(client: LabelStudioClient, item: Item) -> bytes:
    """The image's bytes, trying each of its URLs; ValueError naming the last HTTP status."""
    urls = image_urls(item.source, client.base_url)
    if not urls:
        raise ValueError(
            f"image reference {strip_query(item.source)!r} is not fetchable (cloud storage URI?)"
        )
    last = ""
    for url in urls:
        resp = await client.request("GET", url)
        if resp.status == 200:
            return resp.body
        last = f"HTTP {resp.status} for {urlsplit(url).path}"
        if resp.status not in (400, 403, 404):
            break
    raise ValueError(last)


async def sync(
    client: LabelStudioClient,
    items: Sequence[Item],
    opts: PullOptions,
    summary: Summary,
    progress: Progress,
    previous: Mapping[str, Entry],
) -> dict[str, Entry]:
    """Make the output directory match the plan; return the manifest entries of what it holds.

    `previous` is the previous run's manifest entries (see manifest.previous_entries), empty on
    a first run.
    """
    out = opts.out
    entries: dict[str, Entry] = {}
    todo: list[Item] = []

    progress.start(len(items))
    for item in items:
        kept = await asyncio.to_thread(disk.keep_present, out, item, previous.get(item.stem))
        if kept is None:
            todo.append(item)
            continue
        summary.present += 1
        _count(summary, item, kept)
        entries[item.stem] = entry(item, kept.sha256, kept.size)
        progress.advance("present")

    async def fetch(item: Item) -> None:
        try:
            data = await fetch_image(client, item)
            stored = await asyncio.to_thread(
                disk.store_fetched, out, item, previous.get(item.stem), data
            )
        except (ValueError, HTTPError, OSError) as exc:
            summary.failed += 1
            summary.failures.append(f"task {item.task_id} ({item.stem}): {exc}")
            log.error("image_failed", task=item.task_id, stem=item.stem, error=str(exc))
            progress.advance("failed")
            return
        summary.fetched += 1
        _count(summary, item, stored)
        entries[item.stem] = entry(item, stored.sha256, stored.size)
        log.debug("image_fetched", task=item.task_id, stem=item.stem, bytes=stored.size)
        progress.advance("fetched")

    # The client's semaphore caps concurrency; a bounded window keeps memory flat on big projects.
    window = asyncio.Semaphore(client.concurrency * 4)

    async def bounded(item: Item) -> None:
        async with window:
            await fetch(item)

    await asyncio.gather(*(bounded(item) for item in todo))
    progress.close()

    for stem, prev in await asyncio.to_thread(disk.tidy, out, previous, entries):
        summary.removed += 1
        log.info("removed", stem=stem, task=prev.get("task"))
    return entries


def _count(summary: Summary, item: Item, done: disk.OnDisk) -> None:
    summary.moved += done.moved
    if done.label == "new":
        summary.labels_new += 1
    elif done.label == "changed":
        summary.labels_changed += 1
        log.info("label_changed", stem=item.stem, task=item.task_id)
