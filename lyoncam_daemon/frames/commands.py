"""The `compare` command: the judge's decision on a pair of frames, with its numbers."""

from __future__ import annotations

import argparse
from pathlib import Path

from lyoncam_daemon.arguments import EXIT_FAILED, EXIT_USAGE, Command, say, say_errors

DESCRIPTION = """\
Judge B.jpg as the daemon would right after storing A.jpg: stored (and why: the fingerprint,
one changed tile, a heartbeat) or near_duplicate, with the tile score and its threshold, the
changed tile's box in full-resolution pixels, the fingerprint distance and the camera's
noise. With --config and --camera, that camera's mask and thresholds apply; --png draws the
changed tiles over B. Exit 0 when B was judged, 1 when it is not a usable frame."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("first", type=Path, metavar="A.jpg", help="the frame the camera stored")
    p.add_argument("second", type=Path, metavar="B.jpg", help="the frame to judge")
    p.add_argument("--config", type=Path, default=None,
                   help="camera list whose dedup settings apply (default: the defaults)")
    p.add_argument("--camera", default=None, metavar="ID",
                   help="the camera whose mask and thresholds apply")
    p.add_argument("--png", type=Path, default=None, metavar="OUT",
                   help="write B with its changed tiles drawn over it")
    p.add_argument("--json", action="store_true",
                   help="print the decision as JSON (the sidecar's `change` record)")


def run(args: argparse.Namespace) -> int:
    from lyoncam_daemon.config import ConfigError, load_config
    from lyoncam_daemon.frames.compare import CompareError
    from lyoncam_daemon.frames.compare import run as compare

    try:
        config = load_config(args.config) if args.config is not None else None
    except ConfigError as exc:
        say_errors(exc.errors)
        return EXIT_USAGE
    try:
        return compare(args.first, args.second, config, args.camera, args.png, args.json)
    except CompareError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED


COMMANDS = (
    Command("compare", "judge B.jpg against A.jpg as the daemon would, with its numbers",
            DESCRIPTION, add_arguments, run),
)
