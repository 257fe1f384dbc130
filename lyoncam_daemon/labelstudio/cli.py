"""Download a labelled Label Studio project as a YOLO dataset that ultralytics can train on.

Reads the tasks API page by page (not the export endpoint, which times out on large projects),
takes the latest non-cancelled annotation of each task, converts its rectangles to YOLO lines and
fetches every image, rate limited, retried and decode-checked, into DIR/images/{train,val},
DIR/labels/{train,val}, DIR/data.yaml and DIR/classes.txt. Frames of one camera in one time block
stay on one side of the split. A second run only fetches what is missing and prints what changed.

The key comes from LABEL_STUDIO_API_KEY (or --token-file): a personal access token or a legacy
token. With --labels-dir, the labels folder of a Label Studio YOLO export is used instead of the
annotations, and only the matching images are fetched. Log lines go to stderr like the daemon's:
JSON unless stderr is a terminal (--log-format). Exit status: 0 all images present, 1 some image
failed (or the server refused the key, or cannot be reached), 2 bad usage (e.g. no key, a --url
without http:// or https://).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import TextIO, cast
from urllib.parse import urlsplit

from lyoncam_daemon.labelstudio.auth import ENV_KEY, AuthError, Credentials, load_token
from lyoncam_daemon.labelstudio.client import (
    HTTPError,
    LabelStudioClient,
    RetryPolicy,
    Unreachable,
)
from lyoncam_daemon.labelstudio.progress import BarProgress, LogProgress, TqdmStream
from lyoncam_daemon.labelstudio.pull import Progress, PullError, PullOptions, Summary, run_pull
from lyoncam_daemon.logs import configure_logging

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_RATE = 5.0
"""Requests a second: well under the hosted service's 15 req/s API limit, and kind to a
self-hosted server other people are labelling on."""


def _parse_number(text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if value != value:  # NaN
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    return value


def _positive_int(text: str) -> int:
    value = int(_parse_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(_parse_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _parse_number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _positive_float(text: str) -> float:
    value = _parse_number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _fraction(text: str) -> float:
    value = _parse_number(text, float)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 0 and less than 1, not {text}")
    return value


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True,
                        help="Label Studio base URL, e.g. http://localhost:8080")
    parser.add_argument("--project", type=_positive_int, required=True, help="project id")
    parser.add_argument("--out", type=Path, required=True, help="dataset directory")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="file holding the key (default: env LABEL_STUDIO_API_KEY)")
    parser.add_argument("--classes", default=None,
                        help="comma-separated class names in id order (default: the project's "
                        "label config order; with --labels-dir, the export's classes.txt)")
    parser.add_argument("--include-unlabelled", action="store_true",
                        help="also fetch images of tasks with no annotation, into "
                        "images/unlabelled/ (not part of train/val)")
    parser.add_argument("--val-fraction", type=_fraction, default=0.2,
                        help="share of camera/time-block groups put in val (default 0.2)")
    parser.add_argument("--split-hours", type=_positive_float, default=1.0,
                        help="time block grouping frames of one camera on one side (default 1)")
    parser.add_argument("--rate", type=_non_negative_float, default=DEFAULT_RATE,
                        help=f"requests per second, 0 for no limit (default {DEFAULT_RATE:g})")
    parser.add_argument("--concurrency", type=_positive_int, default=4,
                        help="requests in flight at most (default 4)")
    parser.add_argument("--timeout", type=_positive_float, default=60.0,
                        help="seconds per request (default 60)")
    parser.add_argument("--retries", type=_non_negative_int, default=5,
                        help="retries after a 429, 5xx or timeout (default 5)")
    parser.add_argument("--rotated", choices=["enclose", "skip"], default="enclose",
                        help="rotated boxes: replace by the enclosing axis-aligned box "
                        "(default) or drop; either way each one is reported")
    parser.add_argument("--labels-dir", type=Path, default=None,
                        help="labels folder of a Label Studio YOLO export: fetch the matching "
                        "images instead of converting annotations")
    parser.add_argument("--page-size", type=_positive_int, default=100,
                        help="tasks per API page")
    parser.add_argument("--progress", choices=["auto", "bar", "log"], default="auto",
                        help="progress bar (auto: when stderr is a terminal) or log lines")
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default="auto",
                        help="log lines as JSON or for a person (auto: JSON unless stderr is a "
                        "terminal)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log lines")


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

