"""Command line of the curation tools: `index`, `report`, `sample` (and `enrich --backfill`).

They read the frames of the data directory of `--config` (default `cameras.yaml`), or of
`--data-dir DIR` without any config. Exit codes as cli.py: 0 done, 1 failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=Path("cameras.yaml"),
                   help="take data_dir from this config (default: ./cameras.yaml)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="read this data directory instead (no config needed)")


def data_dir_of(args: argparse.Namespace) -> Path | None:
    """The data directory to read, or None after printing why there is none."""
    from lyoncam_daemon.config import ConfigError, load_config

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


# --- report --------------------------------------------------------------------------------


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    p.add_argument("--html", type=Path, default=None, metavar="FILE",
                   help="write a self-contained page: heatmap, frames per day, thumbnails")
    p.add_argument("--thin", type=int, default=None, metavar="N",
                   help="a cell with fewer frames is thin (default 20)")
    p.add_argument("--thumbnails", type=int, default=2, metavar="N",
                   help="example frames per cell in the page (default 2)")


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from lyoncam_daemon.atomic import write_atomic
    from lyoncam_daemon.dataset import THIN_BELOW, report
    from lyoncam_daemon.index import IndexFileError, open_current
    from lyoncam_daemon.report_html import render

    data_dir = data_dir_of(args)
    if data_dir is None:
        return EXIT_USAGE
    try:
        db = open_current(data_dir, say)
    except IndexFileError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    with contextlib.closing(db):
        rep = report(db, args.thin if args.thin is not None else THIN_BELOW)
        if args.html is not None:
            page = render(db, data_dir, rep, args.thumbnails)
            try:
                write_atomic(args.html, page.encode())
            except OSError as exc:
                say(f"error: cannot write {args.html}: {exc.strerror or exc}")
                return EXIT_FAILED
            say(f"wrote {args.html}")
    if args.json:
        print(json.dumps(rep, indent=1))
    elif args.html is None:
        _print_table(rep)
    return EXIT_OK


def _print_table(rep: Mapping[str, Any]) -> None:
    cells: list[Mapping[str, Any]] = rep["cells"]
    print(f"{rep['total']} frames; {rep['empty']} empty cells, {rep['thin']} thin "
          f"(under {rep['thin_below']} frames)")
    for c in cells:
        if c["frames"]:
            print(f"  {c['camera']:<16} {c['daypart']:<8} {c['weather']:<14} {c['frames']:>8}"
                  f"{'  thin' if c['status'] == 'thin' else ''}")


# --- sample --------------------------------------------------------------------------------


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--n", type=int, required=True, help="how many frames to pick")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="write the sample here (JSON) instead of printing it")
    p.add_argument("--threshold", type=int, default=64, metavar="BITS",
                   help="frames of a camera this close to a picked one are skipped (default 64)")


def cmd_sample(args: argparse.Namespace) -> int:
    import json

    from lyoncam_daemon.atomic import write_atomic
    from lyoncam_daemon.dataset import sample, sidecar_fingerprints
    from lyoncam_daemon.index import IndexFileError, open_current

    if args.n < 1:
        say(f"error: --n must be at least 1, not {args.n}")
        return EXIT_USAGE
    data_dir = data_dir_of(args)
    if data_dir is None:
        return EXIT_USAGE
    try:
        db = open_current(data_dir, say)
    except IndexFileError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    with contextlib.closing(db):
        picked = sample(db, args.n, sidecar_fingerprints(data_dir), args.threshold)
    doc = json.dumps({"data_dir": str(data_dir), "frames": [c.as_json() for c in picked]},
                     indent=1)
    if args.out is None:
        print(doc)
    else:
        try:
            write_atomic(args.out, doc.encode())
        except OSError as exc:
            say(f"error: cannot write {args.out}: {exc.strerror or exc}")
            return EXIT_FAILED
    if len(picked) < args.n:
        say(f"warning: only {len(picked)} frames could be picked (of {args.n} asked): the "
            "rest are near-duplicates or already pushed")
    elif args.out is not None:
        say(f"wrote {len(picked)} frames to {args.out}")
    return EXIT_OK


# --- enrich --backfill ---------------------------------------------------------------------


def add_enrich_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--backfill", action="store_true", required=True,
                   help="fill sun_elevation/daypart and weather of frames stored without them")
    p.add_argument("--no-weather", action="store_true",
                   help="daylight only: no request to the weather archive")


def cmd_enrich(args: argparse.Namespace) -> int:
    import asyncio

    from lyoncam_daemon.backfill import Backfill
    from lyoncam_daemon.config import WeatherSettings

    data_dir = data_dir_of(args)
    if data_dir is None:
        return EXIT_USAGE
    weather: WeatherSettings | None = None
    if not args.no_weather:
        weather = WeatherSettings()
        if args.config.exists():  # its weather: settings (archive_url, limits, enabled)
            from lyoncam_daemon.config import ConfigError, load_config

            try:
                loaded = load_config(args.config).weather
            except ConfigError as exc:
                for line in exc.errors:
                    say(f"error: {line}")
                return EXIT_USAGE
            weather = loaded if loaded.enabled else None
    done = asyncio.run(Backfill(data_dir, weather, say).run())
    for problem in done.problems:
        say(f"warning: {problem}")
    print(f"{data_dir}: daylight added to {done.daylight} frames, weather to {done.weather}"
          f"{f', {done.missing_weather} still without weather' if done.missing_weather else ''}")
    return EXIT_FAILED if done.problems else EXIT_OK


# --- push ----------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def add_push_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--url", required=True, help="Label Studio base URL")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--project", type=_positive_int, help="project id")
    which.add_argument("--create", metavar="TITLE",
                       help="create a project (labels Car, Truck, Bus, Motorbike, Scooter, "
                       "Bicycle, Pedestrian) and push to it")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--sample", type=Path, metavar="FILE", help="frames chosen by `sample`")
    what.add_argument("--n", type=_positive_int, help="sample N frames now")
    p.add_argument("--predictions", type=Path, default=None, metavar="DIR",
                   help="YOLO label files (one per frame stem) sent as predictions")
    p.add_argument("--token-file", type=Path, default=None,
                   help="file holding the key (default: env LABEL_STUDIO_API_KEY)")
    p.add_argument("--rate", type=_non_negative_float, default=5.0,
                   help="requests per second, 0 for no limit (default 5)")
    p.add_argument("--batch", type=_positive_int, default=100,
                   help="files per upload request (default 100, the server's default limit)")
    p.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")


def cmd_push(args: argparse.Namespace) -> int:
    import asyncio

    from lyoncam_daemon.index import IndexFileError, open_current
    from lyoncam_daemon.labelstudio.auth import AuthError, Credentials, load_token
    from lyoncam_daemon.labelstudio.cli import shown_argument, url_problem
    from lyoncam_daemon.labelstudio.client import HTTPError, Unreachable
    from lyoncam_daemon.labelstudio.push import PushError
    from lyoncam_daemon.logs import configure_logging

    problem = url_problem(args.url.strip())
    if problem is not None:
        say(f"error: --url {shown_argument(args.url)!r}: {problem}")
        return EXIT_USAGE
    configure_logging(args.log_format, "info")
    try:
        credentials = Credentials(load_token(token_file=args.token_file))
    except AuthError as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    data_dir = data_dir_of(args)
    if data_dir is None:
        return EXIT_USAGE
    try:
        db = open_current(data_dir, say)
    except IndexFileError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    with contextlib.closing(db):
        try:
            return asyncio.run(_push(args, data_dir, db, credentials))
        except (AuthError, PushError, HTTPError, Unreachable) as exc:
            say(f"error: {exc}")
            return EXIT_FAILED


async def _push(args: argparse.Namespace, data_dir: Path, db: Any, credentials: Any) -> int:
    import json

    from lyoncam_daemon.dataset import sample, sidecar_fingerprints
    from lyoncam_daemon.labelstudio.client import LabelStudioClient, display_base
    from lyoncam_daemon.labelstudio.push import (
        Ledger,
        Predictions,
        Pusher,
        PushError,
        class_names,
        default_label_config,
        frames_of,
    )

    if args.sample is not None:
        try:
            keys = [f["key"] for f in json.loads(args.sample.read_text())["frames"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PushError(f"{args.sample}: not a sample file ({exc})") from None
    else:
        keys = [c.key for c in sample(db, args.n, sidecar_fingerprints(data_dir))]
    frames, missing = frames_of(db, keys)
    for key in missing:
        say(f"warning: {key} is not in the index of {data_dir}: skipped")
    predictions = None
    if args.predictions is not None:
        if not args.predictions.is_dir():
            raise PushError(f"--predictions {args.predictions}: not a folder")
        predictions = Predictions(args.predictions, class_names(args.predictions))
    async with LabelStudioClient(args.url.strip(), credentials,
                                 rate=args.rate or None) as client:
        project = args.project
        if args.create is not None:
            resp = await client.request("POST", "/api/projects", json={
                "title": args.create, "label_config": default_label_config()})
            if resp.status != 201:
                raise PushError(f"cannot create project {args.create!r}: HTTP {resp.status}")
            project = int(json.loads(resp.body)["id"])
            say(f"created project {project} {args.create!r}")
        ledger = Ledger(db, display_base(client.base_url), project)
        pusher = Pusher(client, project, data_dir, ledger, predictions, args.batch,
                        progress=lambda done, total: say(f"pushed {done}/{total}"))
        done = await pusher.run(frames)
    for problem in done.problems:
        say(f"warning: {problem}")
    print(f"project {project}: {done.pushed} frames pushed ({done.predictions} with "
          f"predictions), {done.already} already there"
          f"{f', {done.recovered} found from an interrupted run' if done.recovered else ''}")
    return EXIT_OK
