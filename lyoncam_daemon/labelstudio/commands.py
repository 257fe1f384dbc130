"""The Label Studio commands, `pull` and `push`: their arguments and what they run.

Only argparse at import time; each command imports its client (aiohttp) when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lyoncam_daemon.arguments import (
    Command,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from lyoncam_daemon.curation.commands import add_data_arguments

DEFAULT_RATE = 5.0
"""Requests a second: well under the hosted service's 15 req/s API limit, and kind to a
self-hosted server other people are labelling on."""

PULL_DESCRIPTION = """\
Download a labelled Label Studio project as a YOLO dataset that ultralytics can train on.

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


def add_pull_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True,
                        help="Label Studio base URL, e.g. http://localhost:8080")
    parser.add_argument("--project", type=positive_int, required=True, help="project id")
    parser.add_argument("--out", type=Path, required=True, help="dataset directory")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="file holding the key (default: env LABEL_STUDIO_API_KEY)")
    parser.add_argument("--classes", default=None,
                        help="comma-separated class names in id order (default: the project's "
                        "label config order; with --labels-dir, the export's classes.txt)")
    parser.add_argument("--include-unlabelled", action="store_true",
                        help="also fetch images of tasks with no annotation, into "
                        "images/unlabelled/ (not part of train/val)")
    parser.add_argument("--val-fraction", type=fraction, default=0.2,
                        help="share of camera/time-block groups put in val (default 0.2)")
    parser.add_argument("--split-hours", type=positive_float, default=1.0,
                        help="time block grouping frames of one camera on one side (default 1)")
    parser.add_argument("--rate", type=non_negative_float, default=DEFAULT_RATE,
                        help=f"requests per second, 0 for no limit (default {DEFAULT_RATE:g})")
    parser.add_argument("--concurrency", type=positive_int, default=4,
                        help="requests in flight at most (default 4)")
    parser.add_argument("--timeout", type=positive_float, default=60.0,
                        help="seconds per request (default 60)")
    parser.add_argument("--retries", type=non_negative_int, default=5,
                        help="retries after a 429, 5xx or timeout (default 5)")
    parser.add_argument("--rotated", choices=["enclose", "skip"], default="enclose",
                        help="rotated boxes: replace by the enclosing axis-aligned box "
                        "(default) or drop; either way each one is reported")
    parser.add_argument("--labels-dir", type=Path, default=None,
                        help="labels folder of a Label Studio YOLO export: fetch the matching "
                        "images instead of converting annotations")
    parser.add_argument("--page-size", type=positive_int, default=100,
                        help="tasks per API page")
    parser.add_argument("--progress", choices=["auto", "bar", "log"], default="auto",
                        help="progress bar (auto: when stderr is a terminal) or log lines")
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default="auto",
                        help="log lines as JSON or for a person (auto: JSON unless stderr is a "
                        "terminal)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log lines")


def run_pull(args: argparse.Namespace) -> int:
    from lyoncam_daemon.labelstudio.pull.command import main

    return main(args)


def add_push_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--url", required=True, help="Label Studio base URL")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--project", type=positive_int, help="project id")
    which.add_argument("--create", metavar="TITLE",
                       help="create a project (labels Car, Truck, Bus, Motorbike, Scooter, "
                       "Bicycle, Pedestrian) and push to it")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--sample", type=Path, metavar="FILE", help="frames chosen by `sample`")
    what.add_argument("--n", type=positive_int, help="sample N frames now")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--predictions", type=Path, default=None, metavar="DIR",
                       help="YOLO label files (one per frame stem) sent as predictions")
    given.add_argument("--model", type=Path, default=None, metavar="FILE",
                       help="run this ONNX detector on the frames pushed (as `predict` does) "
                       "and send its boxes as predictions; needs the `predict` extra")
    p.add_argument("--conf", type=fraction, default=0.25,
                   help="with --model: keep boxes scoring at least this (default 0.25)")
    p.add_argument("--iou", type=fraction, default=0.5,
                   help="with --model: NMS overlap threshold (default 0.5)")
    p.add_argument("--names", type=Path, default=None, metavar="FILE",
                   help="with --model: class names (data.yaml or classes.txt; default: the "
                   "model's metadata)")
    p.add_argument("--token-file", type=Path, default=None,
                   help="file holding the key (default: env LABEL_STUDIO_API_KEY)")
    p.add_argument("--rate", type=non_negative_float, default=5.0,
                   help="requests per second, 0 for no limit (default 5)")
    p.add_argument("--batch", type=positive_int, default=100,
                   help="files per upload request (default 100, the server's default limit)")
    p.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")


def run_push(args: argparse.Namespace) -> int:
    from lyoncam_daemon.labelstudio.push import main

    return main(args)


COMMANDS = (
    Command("pull", "download a labelled Label Studio project as a YOLO dataset",
            PULL_DESCRIPTION, add_pull_arguments, run_pull),
    Command("push", "send frames to Label Studio as tasks, with predictions",
            "Upload a balanced sample (or a `sample` file) as Label Studio tasks; idempotent: "
            "a frame is never pushed twice.",
            add_push_arguments, run_push),
)
