"""One pull from start to end: check the output folder, read the project, plan, sync, write."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from lyoncam_daemon.labelstudio.client import HTTPError, LabelStudioClient, display_base
from lyoncam_daemon.labelstudio.pull import disk
from lyoncam_daemon.labelstudio.pull.manifest import (
    check_owner,
    document,
    load_manifest,
    previous_entries,
)
from lyoncam_daemon.labelstudio.pull.model import PullError, PullOptions, Seed, Summary
from lyoncam_daemon.labelstudio.pull.plan import plan, unmatched_labels
from lyoncam_daemon.labelstudio.pull.seed import read_seed
from lyoncam_daemon.labelstudio.pull.sync import NoProgress, Progress, sync

log = structlog.get_logger(__name__)


async def run_pull(
    client: LabelStudioClient, opts: PullOptions, progress: Progress | None = None
) -> Summary:
    """Pull the project into ``opts.out``; the summary says what the dataset holds and what
    changed. Raises PullError (or the client's errors) when the pull cannot proceed at all."""
    summary = Summary()
    manifest = await asyncio.to_thread(load_manifest, opts.out)
    check_owner(manifest, opts.out, client.base_url, opts.project)
    label_config = _label_config(await _project(client, opts.project), opts.project)
    seed: Seed | None = None
    if opts.labels_dir is not None:
        seed = await asyncio.to_thread(read_seed, opts.labels_dir, opts.classes)
        log.info("labels_dir_read", files=len(seed.labels), classes=len(seed.classes))
    tasks = [t async for t in client.iter_tasks(opts.project, opts.page_size)]
    log.info("tasks_listed", project=opts.project, tasks=len(tasks))
    items = plan(tasks, label_config, opts, summary, seed)
    if seed is not None:
        for stem in unmatched_labels(tasks, seed):
            summary.failed += 1
            summary.failures.append(f"label file {stem}.txt: no task of the project has its image")
    await asyncio.to_thread(opts.out.mkdir, parents=True, exist_ok=True)
    entries = await sync(
        client, items, opts, summary, progress or NoProgress(), previous_entries(manifest)
    )
    new_manifest = document(client.base_url, opts.project, summary.classes, entries)
    await asyncio.to_thread(disk.write_dataset_files, opts.out, summary.classes, new_manifest)
    if summary.split["val"] == 0 and summary.split["train"] > 0:
        log.warning("empty_val_split", note="no image fell in val: too few camera-hour groups?")
    return summary


async def _project(client: LabelStudioClient, project: int) -> dict[str, Any]:
    try:
        return await client.get_project(project)
    except HTTPError as exc:
        if exc.status != 404:
            raise
        raise PullError(f"project {project} not found on {display_base(client.base_url)}") from None


def _label_config(project: dict[str, Any], project_id: int) -> str:
    label_config = project.get("label_config")
    if not isinstance(label_config, str):
        raise PullError(f"project {project_id} has no label config")
    return label_config
