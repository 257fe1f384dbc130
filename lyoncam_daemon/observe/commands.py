"""The `health` command: exit 0 if the daemon using a data_dir is alive, else 1.

Docker's HEALTHCHECK runs it every 30 s, so it imports only what it needs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lyoncam_daemon.arguments import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Command, say_errors


def add_health_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=Path("cameras.yaml"),
                   help="read data_dir from this file (default: ./cameras.yaml)")
    p.add_argument("--data-dir", type=Path, default=None, help="the daemon's data_dir")
    p.add_argument("--url", default=None, metavar="URL",
                   help="ask this /healthz (e.g. http://127.0.0.1:9120/healthz) instead of the "
                   "one the daemon recorded in its health record: unhealthy unless it "
                   "answers 200")


def cmd_health(args: argparse.Namespace) -> int:
    import time

    from lyoncam_daemon.observe.health import ask_healthz, healthz_url, judge_health, read_health

    data_dir = args.data_dir
    if data_dir is None:
        from lyoncam_daemon.config import ConfigError, load_config

        try:
            data_dir = load_config(args.config).data_dir
        except ConfigError as exc:
            say_errors(exc.errors)
            return EXIT_USAGE
    record = read_health(data_dir)
    problem = record if isinstance(record, str) else judge_health(record, time.time())
    url = args.url
    if url is None and not isinstance(record, str):
        url = healthz_url(record)  # wherever it listens: a free port, a shard's own
    if problem is None and url is not None:
        problem = ask_healthz(url)
    if problem is not None:
        print(f"unhealthy: {problem}")
        return EXIT_FAILED
    assert not isinstance(record, str)
    totals = record.get("totals", {})
    print(f"healthy: pid {record.get('pid')}, states {totals.get('states', {})}")
    return EXIT_OK


COMMANDS = (
    Command("health", "exit 0 if the daemon using data_dir is alive, else 1",
            "Judge the heartbeat the running daemon writes to <data_dir>/.lyoncam/health.json "
            "(for Docker's HEALTHCHECK).",
            add_health_arguments, cmd_health),
)
