"""The `pull` command's work (its arguments and description are in ../commands.py)."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import TextIO, cast
from urllib.parse import urlsplit

from lyoncam_daemon.arguments import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from lyoncam_daemon.labelstudio.auth import ENV_KEY, AuthError, Credentials, load_token
from lyoncam_daemon.labelstudio.client import (
    HTTPError,
    LabelStudioClient,
    RetryPolicy,
    Unreachable,
)
from lyoncam_daemon.labelstudio.progress import BarProgress, LogProgress, TqdmStream
from lyoncam_daemon.labelstudio.pull import Progress, PullError, PullOptions, Summary, run_pull
from lyoncam_daemon.observe.logs import configure_logging


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a Label Studio base URL, or None if it can."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    try:
        _ = parts.port  # raises on a port out of range or not a number
    except ValueError:
        return "the port must be a number from 1 to 65535"
    if "@" in parts.netloc:
        return (f"no user:password@ in the URL: the key goes in {ENV_KEY} or --token-file")
    return None


def shown_argument(text: str) -> str:
    """A --url value as given, for a usage error, without a query or a user:password@ part."""
    text = re.split(r"[?#]", text, maxsplit=1)[0]
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)?[^/]*@", r"\1***@", text)


def setup_logging(log_format: str, verbose: bool, bar: bool) -> None:
    """The daemon's log set-up (JSON lines unless stderr is a terminal), above the bar if any."""
    stream = cast(TextIO, TqdmStream()) if bar else sys.stderr
    configure_logging(log_format, "debug" if verbose else "info", stream=stream)


def options(args: argparse.Namespace) -> PullOptions:
    classes = None
    if args.classes:
        classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    return PullOptions(
        project=args.project,
        out=args.out,
        classes=classes,
        include_unlabelled=args.include_unlabelled,
        val_fraction=args.val_fraction,
        block_hours=args.split_hours,
        rotated=args.rotated,
        labels_dir=args.labels_dir,
        page_size=args.page_size,
    )


async def pull_async(args: argparse.Namespace, credentials: Credentials,
                     progress: Progress) -> int:
    client = LabelStudioClient(
        args.url,
        credentials,
        rate=args.rate or None,
        concurrency=args.concurrency,
        timeout=args.timeout,
        retry=RetryPolicy(attempts=args.retries + 1),
    )
    async with client:
        summary = await run_pull(client, options(args), progress)
    print(format_summary(summary, args.out))
    return EXIT_OK if summary.ok else EXIT_FAILED


def main(args: argparse.Namespace) -> int:
    args.url = args.url.strip()
    problem = url_problem(args.url)
    if problem is not None:
        print(f"error: --url {shown_argument(args.url)!r}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    bar = args.progress == "bar" or (args.progress == "auto" and sys.stderr.isatty())
    setup_logging(args.log_format, args.verbose, bar)
    progress: Progress = BarProgress() if bar else LogProgress()
    try:
        credentials = Credentials(load_token(token_file=args.token_file))
    except AuthError as exc:  # no key at all: a usage problem
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(pull_async(args, credentials, progress))
    except (AuthError, PullError, HTTPError, Unreachable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def format_summary(s: Summary, out: Path) -> str:
    lines = [
        f"dataset: {out}",
        f"tasks: {s.tasks} ({s.labelled} labelled of which {s.negatives} negatives, "
        f"{s.unlabelled_skipped} unlabelled skipped, {s.unlabelled_included} unlabelled included, "
        f"{s.excluded} left out for problems" + (
            f", {s.not_in_labels_dir} not in the labels dir" if s.not_in_labels_dir else "")
        + ")",
        f"split: train {s.split['train']}, val {s.split['val']}"
        + (f", unlabelled {s.split['unlabelled']}" if s.split["unlabelled"] else ""),
        "boxes per class: " + (", ".join(
            f"{name} {s.boxes.get(name, 0)}" for name in s.classes
        ) or "none") + f" (total {sum(s.boxes.values())})",
        f"images: fetched {s.fetched}, skipped (already present) {s.present}, failed {s.failed}",
        f"changes: {s.fetched} images added, {s.moved} moved between train/val, "
        f"{s.labels_new} labels new, {s.labels_changed} labels changed, {s.removed} removed",
    ]
    if s.extra_classes:
        lines.append("classes not in the label config (kept, appended): "
                     + ", ".join(s.extra_classes))
    if s.rotated:
        lines.append(f"rotated boxes: {s.rotated} (see warnings)")
    if s.problems:
        lines.append(f"problems reported: {s.problems} (see warnings)")
    lines.extend(f"failed: {f}" for f in s.failures)
    return "\n".join(lines)

