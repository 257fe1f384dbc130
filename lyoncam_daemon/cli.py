"""Command line: one parser built from every subpackage's list of commands.

A command lives beside its code, in its subpackage's `commands.py` (its arguments, its
help, what it runs); adding one to an existing list is all it takes to appear here.
Exit codes (arguments.py): 0 success, 1 the command ran and something failed, 2 bad usage
or an invalid configuration file.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lyoncam_daemon import __version__
from lyoncam_daemon.arguments import Command

#: Where the commands are, in the order `--help` lists them. Only argparse at import time
#: in each: `--help` must not load pydantic, aiohttp, Pillow or numpy (tests/test_cli.py).
COMMAND_MODULES = (
    "lyoncam_daemon.capture.commands",      # run, check, discover
    "lyoncam_daemon.observe.commands",      # health
    "lyoncam_daemon.frames.commands",       # compare
    "lyoncam_daemon.devtools.commands",     # simulate
    "lyoncam_daemon.curation.commands",     # index, report, sample, enrich
    "lyoncam_daemon.labelstudio.commands",  # pull, push
)


def commands() -> list[Command]:
    found: list[Command] = []
    for name in COMMAND_MODULES:
        found.extend(importlib.import_module(name).COMMANDS)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lyoncam_daemon",
        description="Capture Grand Lyon CriTer traffic cameras into a detection dataset.",
    )
    parser.add_argument("--version", action="version", version=f"lyoncam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands():
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["run"]:
        # Before the parser and every import of `run`: a SIGHUP now is a reload for later.
        from lyoncam_daemon.capture import hangup

        hangup.hold()
    try:
        args = build_parser().parse_args(words)
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
