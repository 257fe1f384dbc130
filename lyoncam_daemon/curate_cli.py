"""Command line of the curation tools: `index`, `report`, `sample` (and `enrich --backfill`).

They read the frames of the data directory of `--config` (default `cameras.yaml`), or of
`--data-dir DIR` without any config. Exit codes as cli.py: 0 done, 1 failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lyoncam_daemon.config import ConfigError, load_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=Path("cameras.yaml"),
                   help="take data_dir from this config (default: ./cameras.yaml)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="read this data directory instead (no config needed)")


def data_dir_of(args: argparse.Namespace) -> Path | None:
    """The data directory to read, or None after printing why there is none."""
    if args.data_dir is not None:
        path: Path = args.data_dir.expanduser().resolve()
    else:
        try:
            path = load_config(args.config).data_dir
        except ConfigError as exc:
            for line in exc.errors:
                print(f"error: {line}", file=sys.stderr)
            return None
    if not path.is_dir():
        print(f"error: data directory {path} does not exist", file=sys.stderr)
        return None
    return path


def say(line: str) -> None:
    print(line, file=sys.stderr)


# --- index ---------------------------------------------------------------------------------


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--rebuild", action="store_true",
                   help="re-read every sidecar, not only those of frames the index lacks")


def cmd_index(args: argparse.Namespace) -> int:
    from lyoncam_daemon.index import IndexFileError, index_path, refresh

    data_dir = data_dir_of(args)
    if data_dir is None:
        return EXIT_USAGE
    try:
        done = refresh(data_dir, rebuild=args.rebuild)
    except IndexFileError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    for where, why in done.skipped:
        say(f"warning: skipped {where}: {why}")
    print(f"{index_path(data_dir)}: {done.total} frames ({done.indexed} read from sidecars, "
          f"{done.removed} removed, {len(done.skipped)} skipped)")
    return EXIT_OK
