"""The capture commands: `run`, `check` and `discover`, their arguments and what they run.

Only argparse at import time (`--help` stays light); each command imports its work.
`run` reads the file through `load_checked` at start and at each reload, so a reload
refuses exactly what `check` refuses.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lyoncam_daemon.arguments import (
    EXIT_OK,
    EXIT_USAGE,
    Command,
    plural,
    port,
    say,
    say_errors,
)

if TYPE_CHECKING:
    from lyoncam_daemon.config import Config

CONFIG_HELP = "camera list (default: ./cameras.yaml)"


def _shard_arg(text: str) -> str:
    """`I/N` or `auto`, checked as typed; `auto` is resolved at start (`resolve_shard`)."""
    from lyoncam_daemon.config.shard import AUTO, parse_shard

    if text.strip() == AUTO:
        return AUTO
    try:
        parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or {AUTO})") from None
    return text


def _near(text: str) -> tuple[float, float, float]:
    try:
        lat, lon, km = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not LAT,LON,KM (e.g. 45.76,4.84,3)") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and km > 0):
        raise argparse.ArgumentTypeError(
            f"{text!r}: latitude -90..90, longitude -180..180 and a radius > 0 km")
    return lat, lon, km


def load_checked(path: Path, args: argparse.Namespace | None = None,
                 context: Mapping[str, Any] | None = None) -> Config:
    """The config file as `check` validates it, with `run`'s command-line overrides if
    given: the schema, at least one enabled camera (in the shard), and every mask and
    placeholder image loaded. ConfigError holds `check`'s lines."""
    from lyoncam_daemon.config import ConfigError, load_config

    config = load_config(path, context)
    if args is not None:
        config = _overridden(config, args)
    if not config.enabled_cameras:
        if config.shard is not None and any(c.enabled for c in config.cameras):
            raise ConfigError([f"{path}: shard {config.shard} owns none of the enabled "
                               "cameras"])
        raise ConfigError([f"{path}: no enabled camera to capture"])
    from concurrent.futures import ThreadPoolExecutor

    from lyoncam_daemon.capture.daemon import SettingsError, build_judge

    try:
        with ThreadPoolExecutor(1) as pool:
            build_judge(config, pool)  # loads masks and placeholder images
    except SettingsError as exc:
        raise ConfigError([f"{path}: {exc}"]) from None
    return config


def start_problems(config: Config) -> list[str]:
    """What would stop `run` before its first camera, beyond the config file itself: a
    data_dir it cannot create folders in, S3 credentials it cannot read. `check` and `run`
    both ask here, so a file `check` passes also starts (one line per problem)."""
    from lyoncam_daemon.config import data_dir_problem

    problems = []
    if problem := data_dir_problem(config.data_dir):
        problems.append(problem)
    if config.storage.kind == "s3":
        from lyoncam_daemon.storage.s3 import CredentialsError, load_credentials

        try:
            load_credentials(config.storage)
        except CredentialsError as exc:
            problems.append(f"storage: {exc}")
    return problems


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
    if args.shard is not None:
        config = config.model_copy(update={"shard": args.shard})
    if args.status_port is not None:
        config = config.model_copy(update={"status": config.status.model_copy(
            update={"port": args.status_port, "enabled": True})})
    if args.no_status:
        config = config.model_copy(update={"status": config.status.model_copy(
            update={"enabled": False})})
    return config


# --- run -----------------------------------------------------------------------------------


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=Path("cameras.yaml"), help=CONFIG_HELP)
    p.add_argument("--data-dir", type=Path, default=None, help="overrides data_dir of the config")
    p.add_argument("--log-format", choices=["auto", "json", "console"], default=None,
                   help="overrides log.format of the config")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None,
                   help="overrides log.level of the config")
    status = p.add_mutually_exclusive_group()
    status.add_argument("--status-port", type=port, default=None, metavar="PORT",
                        help="port of /metrics, /healthz and the status page (overrides "
                        "status.port; 0 picks a free port; shard I/N adds I - 1 unless "
                        "status.shard_offset is false)")
    status.add_argument("--no-status", action="store_true",
                        help="serve no /metrics, /healthz or status page (status.enabled: false)")
    p.add_argument("--shard", type=_shard_arg, default=None, metavar="I/N|auto",
                   help="poll only the cameras shard I of N owns (overrides LYONCAM_SHARD, "
                   "which overrides shard: of the config); N daemons with the same file cover "
                   "every camera once. auto: a StatefulSet pod's ordinal + 1 (POD_NAME or "
                   "HOSTNAME, lyoncam-3 is shard 4) of LYONCAM_SHARDS")


def cmd_run(args: argparse.Namespace) -> int:
    import os

    from lyoncam_daemon.config import ConfigError
    from lyoncam_daemon.config.shard import resolve_shard

    try:
        # Once, at start: a reload keeps the shard the process started as.
        args.shard = resolve_shard(args.shard, os.environ)
    except ValueError as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    try:
        config = load_checked(args.config, args)
    except ConfigError as exc:
        say_errors(exc.errors)
        return EXIT_USAGE
    if problems := start_problems(config):
        say_errors([f"{args.config}: {p}" for p in problems])
        return EXIT_USAGE
    from lyoncam_daemon.capture.daemon import run_daemon

    return run_daemon(config, reload_config=lambda: load_checked(args.config, args))


# --- check ---------------------------------------------------------------------------------


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=Path("cameras.yaml"), help=CONFIG_HELP)


def cmd_check(args: argparse.Namespace) -> int:
    from lyoncam_daemon.config import ConfigError

    try:
        config = load_checked(args.config)
    except ConfigError as exc:
        say_errors(exc.errors)
        return EXIT_USAGE
    if problems := start_problems(config):
        say_errors([f"{args.config}: {p}" for p in problems])
        return EXIT_USAGE
    enabled = len(config.enabled_cameras)
    in_shard = f" in shard {config.shard}" if config.shard is not None else ""
    print(
        f"{args.config}: OK: {plural(len(config.cameras), 'camera')} ({enabled} enabled"
        f"{in_shard}), data_dir {config.data_dir}"
    )
    return EXIT_OK


# --- discover ------------------------------------------------------------------------------


def add_discover_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, metavar="URL|FILE",
                   help="the catalogue: WFS GeoJSON or JSON table, by URL or file")
    p.add_argument("--output", type=Path, default=Path("cameras.yaml"),
                   help="the camera list to create or update (default: ./cameras.yaml)")
    p.add_argument("--near", type=_near, default=None, metavar="LAT,LON,KM",
                   help="add only new cameras within KM km of LAT,LON")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for the download")


def cmd_discover(args: argparse.Namespace) -> int:
    from lyoncam_daemon.capture import discover

    return discover.main(args)


COMMANDS = (
    Command("run", "capture every enabled camera until stopped (SIGTERM/SIGINT)",
            "Poll every enabled camera of the config, check and dedup each frame, store new "
            "frames under data_dir.",
            add_run_arguments, cmd_run),
    Command("check", "validate a config file and exit (0 valid, 2 invalid)",
            "Validate a config file: exit 0 with a summary, or 2 with one line per problem "
            "naming file, line, camera and field.",
            add_check_arguments, cmd_check),
    Command("discover", "build or update cameras.yaml from the CriTer catalogue",
            "Write the catalogue's cameras (id, name, lat, lon, url) into cameras.yaml; an "
            "existing file keeps its comments and your own settings, and a camera gone from "
            "the catalogue is disabled, never deleted. The result passes `check`.",
            add_discover_arguments, cmd_discover),
)
