"""Command line: argument parsing, exit codes and one-line errors; the work lives elsewhere.

Exit codes: 0 success, 1 the command ran and something failed (e.g. images not fetched),
2 bad usage or an invalid configuration file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lyoncam_daemon import __version__
from lyoncam_daemon.config import Config, ConfigError, load_config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _load(path: Path) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        return None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _no_camera(args: argparse.Namespace, config: Config) -> bool:
    if config.enabled_cameras:
        return False
    print(f"error: {args.config}: no enabled camera to capture", file=sys.stderr)
    return True


def load_checked(path: Path, context: Mapping[str, Any] | None = None) -> Config:
    """The config file as `check` validates it: the schema, at least one enabled camera,
    and every mask and placeholder image loaded. ConfigError holds `check`'s lines."""
    config = load_config(path, context)
    if not config.enabled_cameras:
        raise ConfigError([f"{path}: no enabled camera to capture"])
    from concurrent.futures import ThreadPoolExecutor

    from lyoncam_daemon.daemon import SettingsError, build_judge

    try:
        with ThreadPoolExecutor(1) as pool:
            build_judge(config, pool)  # loads masks and placeholder images
    except SettingsError as exc:
        raise ConfigError([f"{path}: {exc}"]) from None
    return config


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = load_checked(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    enabled = len(config.enabled_cameras)
    print(
        f"{args.config}: OK: {_plural(len(config.cameras), 'camera')} ({enabled} enabled), "
        f"data_dir {config.data_dir}"
    )
    return EXIT_OK


def _overridden(config: Config, args: argparse.Namespace) -> Config:
    """The command line's settings over the file's (at start and at each reload)."""
    if args.data_dir is not None:
        config = config.model_copy(update={"data_dir": args.data_dir.expanduser().resolve()})
    if args.log_format is not None:
        config = config.model_copy(
            update={"log": config.log.model_copy(update={"format": args.log_format})}
        )
    if args.log_level is not None:
        config = config.model_copy(
            update={"log": config.log.model_copy(update={"level": args.log_level})}
        )
    return config


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    if _no_camera(args, config):
        return EXIT_USAGE
    from lyoncam_daemon.daemon import run_daemon

    return run_daemon(_overridden(config, args),
                      reload_config=lambda: _overridden(load_checked(args.config), args))


def cmd_health(args: argparse.Namespace) -> int:
    import time

    from lyoncam_daemon.healthcheck import judge_health, read_health

    data_dir = args.data_dir
    if data_dir is None:
        config = _load(args.config)
        if config is None:
            return EXIT_USAGE
        data_dir = config.data_dir
    record = read_health(data_dir)
    problem = record if isinstance(record, str) else judge_health(record, time.time())
    if problem is not None:
        print(f"unhealthy: {problem}")
        return EXIT_FAILED
    assert not isinstance(record, str)
    totals = record.get("totals", {})
    print(f"healthy: pid {record.get('pid')}, states {totals.get('states', {})}")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from lyoncam_daemon import simulator

    return simulator.main(args)


def cmd_pull(args: argparse.Namespace) -> int:
    from lyoncam_daemon.labelstudio import cli as ls_cli

    return ls_cli.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lyoncam_daemon",
        description="Capture Grand Lyon CriTer traffic cameras into a detection dataset.",
    )
    parser.add_argument("--version", action="version", version=f"lyoncam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    config_help = "camera list (default: ./cameras.yaml)"
    p = sub.add_parser("run", help="capture every enabled camera until stopped (SIGTERM/SIGINT)",
                       description="Poll every enabled camera of the config, check and dedup "
                       "each frame, store new frames under data_dir.")
    p.add_argument("--config", type=Path, default=Path("cameras.yaml"), help=config_help)
    p.add_argument("--data-dir", type=Path, default=None, help="overrides data_dir of the config")
    p.add_argument("--log-format", choices=["auto", "json", "console"], default=None,
                   help="overrides log.format of the config")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None,
                   help="overrides log.level of the config")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate a config file and exit (0 valid, 2 invalid)",
                       description="Validate a config file: exit 0 with a summary, or 2 with "
                       "one line per problem naming file, line, camera and field.")
    p.add_argument("--config", type=Path, default=Path("cameras.yaml"), help=config_help)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("health", help="exit 0 if the daemon using data_dir is alive, else 1",
                       description="Judge the heartbeat the running daemon writes to "
                       "<data_dir>/.lyoncam/health.json (for Docker's HEALTHCHECK).")
    p.add_argument("--config", type=Path, default=Path("cameras.yaml"),
                   help="read data_dir from this file (default: ./cameras.yaml)")
    p.add_argument("--data-dir", type=Path, default=None, help="the daemon's data_dir")
    p.set_defaults(func=cmd_health)

    from lyoncam_daemon import simulator

    p = sub.add_parser("simulate", help="serve simulated CriTer cameras on loopback",
                       description=simulator.__doc__)
    simulator.add_arguments(p)
    p.set_defaults(func=cmd_simulate)

    from lyoncam_daemon.labelstudio import cli as ls_cli

    p = sub.add_parser("pull", help="download a labelled Label Studio project as a YOLO dataset",
                       description=ls_cli.__doc__)
    ls_cli.add_arguments(p)
    p.set_defaults(func=cmd_pull)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
