"""Command line: argument parsing, exit codes and one-line errors; the work lives elsewhere.

Exit codes: 0 success, 1 the command ran and something failed (e.g. images not fetched),
2 bad usage or an invalid configuration file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lyoncam_daemon import __version__
from lyoncam_daemon.shard import Shard, parse_shard

if TYPE_CHECKING:
    from lyoncam_daemon.config import Config

# Only argparse and cheap modules at import time: `--help` must not load pydantic, aiohttp,
# Pillow or numpy (tests/test_cli.py checks). Each command imports what it needs.

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _load(path: Path) -> Config | None:
    from lyoncam_daemon.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        return None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return port


def _shard_arg(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    placeholder image loaded. ConfigError holds `check`'s lines. `run` reads the file
    through here at start and at each reload, so a reload refuses what `check` refuses."""
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

    from lyoncam_daemon.daemon import SettingsError, build_judge

    try:
        with ThreadPoolExecutor(1) as pool:
            build_judge(config, pool)  # loads masks and placeholder images
    except SettingsError as exc:
        raise ConfigError([f"{path}: {exc}"]) from None
    return config


def cmd_check(args: argparse.Namespace) -> int:
    from lyoncam_daemon.config import ConfigError, data_dir_problem

    try:
        config = load_checked(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    if problem := data_dir_problem(config.data_dir):
        print(f"error: {args.config}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    enabled = len(config.enabled_cameras)
    in_shard = f" in shard {config.shard}" if config.shard is not None else ""
    print(
        f"{args.config}: OK: {_plural(len(config.cameras), 'camera')} ({enabled} enabled"
        f"{in_shard}), data_dir {config.data_dir}"
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
    if args.shard is not None:
        config = config.model_copy(update={"shard": args.shard})
    if args.status_port is not None:
        config = config.model_copy(update={"status": config.status.model_copy(
            update={"port": args.status_port, "enabled": args.status_port != 0})})
    return config


def cmd_run(args: argparse.Namespace) -> int:
    from lyoncam_daemon.config import ConfigError

    try:
        config = load_checked(args.config, args)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    from lyoncam_daemon.daemon import run_daemon

    return run_daemon(config, reload_config=lambda: load_checked(args.config, args))


def cmd_health(args: argparse.Namespace) -> int:
    import time

    from lyoncam_daemon.healthcheck import ask_healthz, judge_health, read_health

    data_dir = args.data_dir
    if data_dir is None:
        config = _load(args.config)
        if config is None:
            return EXIT_USAGE
        data_dir = config.data_dir
    record = read_health(data_dir)
    problem = record if isinstance(record, str) else judge_health(record, time.time())
    if problem is None and args.url is not None:
        problem = ask_healthz(args.url)
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


def cmd_discover(args: argparse.Namespace) -> int:
    from lyoncam_daemon import discover

    return discover.main(args)


def cmd_pull(args: argparse.Namespace) -> int:
    from lyoncam_daemon.labelstudio import cli as ls_cli

    return ls_cli.main(args)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; given the `command` about to run, only what it needs (`--help`
    and `run` must not import Label Studio's client, hence aiohttp)."""
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
    p.add_argument("--status-port", type=_port, default=None, metavar="PORT",
                   help="port of /metrics, /healthz and the status page (overrides status.port; "
                   "0 turns the endpoint off)")
    p.add_argument("--shard", type=_shard_arg, default=None, metavar="I/N",
                   help="poll only the cameras shard I of N owns (overrides shard: of the "
                   "config); N daemons with the same file cover every camera once")
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
    p.add_argument("--url", default=None, metavar="URL",
                   help="also ask the daemon's /healthz (e.g. http://127.0.0.1:9120/healthz): "
                   "unhealthy unless it answers 200")
    p.set_defaults(func=cmd_health)

    from lyoncam_daemon import simulator

    p = sub.add_parser("simulate", help="serve simulated CriTer cameras on loopback",
                       description=simulator.__doc__)
    simulator.add_arguments(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("discover", help="build or update cameras.yaml from the CriTer catalogue",
                       description="Write the catalogue's cameras (id, name, lat, lon, url) "
                       "into cameras.yaml; an existing file keeps its comments and your own "
                       "settings, and a camera gone from the catalogue is disabled, never "
                       "deleted. The result passes `check`.")
    p.add_argument("--source", required=True, metavar="URL|FILE",
                   help="the catalogue: WFS GeoJSON or JSON table, by URL or file")
    p.add_argument("--output", type=Path, default=Path("cameras.yaml"),
                   help="the camera list to create or update (default: ./cameras.yaml)")
    p.add_argument("--near", type=_near, default=None, metavar="LAT,LON,KM",
                   help="add only new cameras within KM km of LAT,LON")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for the download")
    p.set_defaults(func=cmd_discover)

    p = sub.add_parser("pull", help="download a labelled Label Studio project as a YOLO dataset")
    if command in (None, "pull"):
        # pull's flags live beside its code, which imports aiohttp: only `pull` loads them.
        from lyoncam_daemon.labelstudio import cli as ls_cli

        p.description = ls_cli.__doc__
        ls_cli.add_arguments(p)
    p.set_defaults(func=cmd_pull)

    from lyoncam_daemon import curate_cli

    p = sub.add_parser("index", help="bring the frame index up to date with the sidecars",
                       description="Add frames the index lacks, drop deleted ones; --rebuild "
                       "re-reads every sidecar. The daemon keeps the index current itself.")
    curate_cli.add_index_arguments(p)
    p.set_defaults(func=curate_cli.cmd_index)

    p = sub.add_parser("report", help="what the frames cover: camera x daypart x weather, days",
                       description="Frames per camera, daypart and weather, frames per day, "
                       "empty and thin cells; --json or --html FILE.")
    curate_cli.add_report_arguments(p)
    p.set_defaults(func=curate_cli.cmd_report)

    p = sub.add_parser("sample", help="pick a balanced set of frames to label",
                       description="Stratified by camera, daypart and weather, spread in time, "
                       "without near-duplicates or frames already pushed.")
    curate_cli.add_sample_arguments(p)
    p.set_defaults(func=curate_cli.cmd_sample)

    p = sub.add_parser("enrich", help="fill daylight and weather of frames stored without them",
                       description="--backfill: sun_elevation/daypart computed, weather from "
                       "the Open-Meteo archive (in batches, resumable).")
    curate_cli.add_enrich_arguments(p)
    p.set_defaults(func=curate_cli.cmd_enrich)

    p = sub.add_parser("push", help="send frames to Label Studio as tasks, with predictions",
                       description="Upload a balanced sample (or a `sample` file) as Label "
                       "Studio tasks; idempotent: a frame is never pushed twice.")
    curate_cli.add_push_arguments(p)
    p.set_defaults(func=curate_cli.cmd_push)
    return parser


def _command(argv: Sequence[str]) -> str:
    """The subcommand named in `argv` ("" if none): the top level has no option taking a
    value, so it is the first word that is not an option."""
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        words = sys.argv[1:] if argv is None else argv
        args = build_parser(_command(words)).parse_args(words)
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
