"""The manifest, ``.lyoncam-pull.json``: what a previous pull wrote, so the next one resumes.

It names the server and project the folder was pulled from (a pull of another one is refused)
and, per image stem, the task, the image's source reference, the files written and the image's
SHA-256. Only files it lists are ever moved or removed by a later pull.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from lyoncam_daemon.labelstudio.client import strip_query
from lyoncam_daemon.labelstudio.pull.model import Item, PullError

log = structlog.get_logger(__name__)

MANIFEST = ".lyoncam-pull.json"
VERSION = 1

Entry = dict[str, Any]
"""One image's record: task, source, image, label (paths relative to the dataset), sha256, size."""


def load_manifest(out: Path) -> dict[str, Any]:
    """The manifest in ``out``; empty when there is none or it is unreadable. Blocking."""
    path = out / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("manifest_unreadable", path=str(path), note="starting afresh")
        return {}
    return data if isinstance(data, dict) else {}


def check_owner(manifest: Mapping[str, Any], out: Path, base_url: str, project: int) -> None:
    """Refuse an ``out`` holding a pull of another server or project."""
    if manifest and (manifest.get("base_url"), manifest.get("project")) != (base_url, project):
        raise PullError(
            f"{out} holds a pull of project {manifest.get('project')} from "
            f"{manifest.get('base_url')}; choose another --out"
        )


def previous_entries(manifest: Mapping[str, Any]) -> dict[str, Entry]:
    """stem → entry of the previous run; entries that are not objects are ignored."""
    items = manifest.get("items")
    if not isinstance(items, Mapping):
        return {}
    return {str(stem): entry for stem, entry in items.items() if isinstance(entry, dict)}


def source_ref(source: str) -> str:
    """An image's source as the manifest keeps it: without its query, where a presigned
    URL carries its signature (a dataset folder is shared; the signature must not be)."""
    return strip_query(source)


def entry(item: Item, digest: str, size: int) -> Entry:
    return {
        "task": item.task_id,
        "source": source_ref(item.source),
        "image": item.image_rel,
        "label": item.label_rel,
        "sha256": digest,
        "size": size,
    }


def document(
    base_url: str, project: int, classes: Sequence[str], entries: Mapping[str, Entry]
) -> dict[str, Any]:
    """The manifest to write at the end of a pull."""
    return {
        "version": VERSION,
        "base_url": base_url,
        "project": project,
        "classes": list(classes),
        "items": dict(sorted(entries.items())),
    }
