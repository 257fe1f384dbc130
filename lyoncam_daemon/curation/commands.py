"""The curation commands: `index`, `report`, `sample`, `predict` and `enrich --backfill`.

They read the frames of the data directory of `--config` (default `cameras.yaml`), or of
`--data-dir DIR` without any config. Exit codes as everywhere (arguments.py): 0 done,
1 failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lyoncam_daemon.arguments import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Command,
    fraction,
    positive_int,
    say,
)

if TYPE_CHECKING:
    import sqlite3

    from lyoncam_daemon.curation.predict import Detector


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


def open_index(data_dir: Path) -> sqlite3.Connection | None:
    """The index of `data_dir`, brought up to date, or None after saying why it cannot be
    opened (the commands then exit 1)."""
    from lyoncam_daemon.curation.index import IndexFileError, open_current

    try:
        return open_current(data_dir, say)
    except IndexFileError as exc:
        say(f"error: {exc}")
        return None


def load_detector(model: Path, names: Path | None, what: str) -> Detector | None:
    """The detector of `model` (class names from `names` if given), or None after saying
    why there is none: onnxruntime is an extra, and a model may be unreadable."""
    try:
        import onnxruntime  # noqa: F401  (the extra may be missing: say how to get it)
    except ImportError:
        say(f"error: {what} needs onnxruntime: pip install 'lyoncam[predict]'")
        return None
    from lyoncam_daemon.curation.predict import Detector, ModelError, read_names

    try:
        return Detector(model, read_names(names) if names is not None else None)
    except ModelError as exc:
        say(f"error: {exc}")
        return None


# --- index ---------------------------------------------------------------------------------


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--rebuild", action="store_true",
                     help="re-read every sidecar, not only those of frames the index lacks")
    how.add_argument("--check", action="store_true",
                     help="only say whether index and tree agree (exit 0) or not (exit 1); "
                     "writes nothing")


def skipped_link(path: str, target: str) -> None:
    say(f"warning: skipped symlink {path} -> {target}: never followed")


def cmd_index(args: argparse.Namespace) -> int:
    from lyoncam_daemon.curation.index import IndexFileError, check, index_path, refresh
    from lyoncam_daemon.storage.tree import SkippedLinks

    data_dir = data_dir_of(args)
    if data_dir is None:
        return EXIT_USAGE
    links = SkippedLinks(skipped_link)
    try:
        if args.check:
            agreement = check(data_dir, links)
            print(f"{index_path(data_dir)}: {agreement.line()}")
            return EXIT_OK if agreement.agrees else EXIT_FAILED
        done = refresh(data_dir, rebuild=args.rebuild, links=links)
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

    from lyoncam_daemon.curation.dataset import THIN_BELOW, report
    from lyoncam_daemon.curation.report_page import render
    from lyoncam_daemon.storage.atomic import write_atomic

    data_dir = data_dir_of(args)
    if data_dir is None:
        return EXIT_USAGE
    db = open_index(data_dir)
    if db is None:
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


def _band(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW,HIGH (e.g. 0.25,0.6)") from None
    if not 0 <= low < high <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: want 0 <= LOW < HIGH <= 1")
    return low, high


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--n", type=int, required=True, help="how many frames to pick")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="write the sample here (JSON) instead of printing it")
    p.add_argument("--threshold", type=int, default=64, metavar="BITS",
                   help="frames of a camera this close to a picked one are skipped (default 64)")
    p.add_argument("--strategy", choices=["balanced", "uncertain", "rare"], default="balanced",
                   help="balanced: equal shares per camera/daypart/weather (default); "
                   "uncertain: first the frames with most boxes in the --band (what the "
                   "model hesitates over); rare: first the frames with predicted rare classes "
                   "(--rare). Both need `predict` first; what they cannot fill is balanced")
    p.add_argument("--band", type=_band, default=None, metavar="LOW,HIGH",
                   help="uncertain: box scores from LOW to below HIGH (default 0.25,0.6)")
    p.add_argument("--rare", default=None, metavar="NAMES",
                   help="rare: comma-separated classes (default bicycle,scooter,motorbike,bus,"
                   "pedestrian; person, motorcycle ... count as those)")
    p.add_argument("--model-version", default=None, metavar="VERSION",
                   help="whose predictions to use (default: the model that predicted last; "
                   "versions as `predict` prints them, e.g. detector.onnx@1a2b3c4d5e6f)")


def cmd_sample(args: argparse.Namespace) -> int:
    import json

    from lyoncam_daemon.curation import predictions
    from lyoncam_daemon.curation.dataset import (
        UNCERTAIN_BAND,
        sample_by,
        sidecar_fingerprints,
        wanted_by,
    )
    from lyoncam_daemon.storage.atomic import write_atomic

    if args.n < 1:
        say(f"error: --n must be at least 1, not {args.n}")
        return EXIT_USAGE
    data_dir = data_dir_of(args)
    if data_dir is None:
        return EXIT_USAGE
    db = open_index(data_dir)
    if db is None:
        return EXIT_FAILED
    band = args.band or UNCERTAIN_BAND
    rare = ([c.strip() for c in args.rare.split(",") if c.strip()] if args.rare
            else list(predictions.RARE))
    with contextlib.closing(db):
        wanted = None
        if args.strategy != "balanced":
            model = args.model_version or predictions.latest_model(db)
            known = predictions.models(db)
            if model is None or model not in known:
                say(f"error: --strategy {args.strategy} needs predictions: "
                    + (f"none by {model} (the index has: {', '.join(sorted(known))})"
                       if known else "run `predict --model FILE` first"))
                return EXIT_USAGE
            wanted = wanted_by(db, args.strategy, model, band, rare)
            say(f"{args.strategy}: {len(wanted)} of {known[model]} frames predicted by {model} "
                "qualify")
        done = sample_by(db, args.n, sidecar_fingerprints(data_dir), args.threshold, wanted)
    picked = done.frames
    if done.gone:
        say(f"warning: {len(done.gone)} indexed frames are gone from disk and were not picked "
            "(`index` drops them from the index)")
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
    took = ", ".join(f"{n} {kind}" for kind, n in sorted(done.by_kind.items(),
                                                          key=lambda kv: -kv[1]))
    say(f"took {len(picked)} frames ({took or 'none'}); {done.near_duplicates} "
        f"near-duplicates skipped, {done.pushed} already pushed left out"
        + (f"; wrote {args.out}" if args.out is not None else ""))
    if len(picked) < args.n:
        say(f"warning: only {len(picked)} frames could be picked (of {args.n} asked): the "
            "rest are near-duplicates or already pushed")
    return EXIT_OK


# --- predict -------------------------------------------------------------------------------


def _day(text: str) -> str:
    from datetime import date

    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--model", type=Path, required=True, metavar="FILE",
                   help="your detector exported to ONNX (YOLOv8/YOLO11, YOLOv5 or YOLOX)")
    p.add_argument("--sample", type=Path, default=None, metavar="FILE",
                   help="the frames of a `sample` file, in the data directory it names "
                   "unless --data-dir (default: every frame of the data directory, or of "
                   "--camera since --since)")
    p.add_argument("--camera", action="append", default=None, metavar="ID",
                   help="only this camera's frames (repeatable)")
    p.add_argument("--since", type=_day, default=None, metavar="DATE",
                   help="only frames captured on or after this UTC day (YYYY-MM-DD)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="write DIR/labels/<frame>.txt (class cx cy w h score) and "
                   "DIR/classes.txt")
    p.add_argument("--conf", type=fraction, default=0.25,
                   help="keep boxes scoring at least this (default 0.25)")
    p.add_argument("--iou", type=fraction, default=0.5,
                   help="NMS: drop a box overlapping a better one of its class by more "
                   "(default 0.5)")
    p.add_argument("--names", type=Path, default=None, metavar="FILE",
                   help="class names: a data.yaml or classes.txt (default: the model's own "
                   "metadata, as ultralytics exports write it)")
    p.add_argument("--batch", type=positive_int, default=8,
                   help="frames per model run (default 8; a model exported with a fixed "
                   "batch runs its own)")
    p.add_argument("--progress", choices=["auto", "bar", "none"], default="auto",
                   help="progress bar (auto: when stderr is a terminal)")


def _sample_keys(path: Path) -> tuple[list[str], str | None]:
    """The keys of a `sample` file and the data directory it was drawn from."""
    import json

    try:
        doc = json.loads(path.read_text())
        return [str(f["key"]) for f in doc["frames"]], doc.get("data_dir")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--sample {path}: not a sample file ({exc})") from None


def selected_keys(db: Any, cameras: list[str] | None, since: str | None) -> list[str]:
    """Keys of the indexed frames of these cameras since this day, by camera and time."""
    where, params = ["1"], []
    if cameras:
        where.append(f"camera IN ({', '.join('?' * len(cameras))})")
        params.extend(cameras)
    if since is not None:
        where.append("day >= ?")
        params.append(since)
    return [k for (k,) in db.execute(
        f"SELECT key FROM frames WHERE {' AND '.join(where)} ORDER BY camera, captured_at",
        params)]


def cmd_predict(args: argparse.Namespace) -> int:
    keys: list[str] | None = None
    if args.sample is not None:
        try:
            keys, drawn_from = _sample_keys(args.sample)
        except ValueError as exc:
            say(f"error: {exc}")
            return EXIT_USAGE
        # The sample names the data directory it was drawn from: more exact than a config.
        if args.data_dir is None and drawn_from and Path(drawn_from).is_dir():
            args.data_dir = Path(drawn_from)
    data_dir = data_dir_of(args)
    if data_dir is None:
        return EXIT_USAGE
    detector = load_detector(args.model, args.names, "predict")
    if detector is None:
        return EXIT_USAGE
    from lyoncam_daemon.curation.predict import ModelError

    db = open_index(data_dir)
    if db is None:
        return EXIT_FAILED
    with contextlib.closing(db):
        if keys is None:
            keys = selected_keys(db, args.camera, args.since)
        known = {k for (k,) in db.execute("SELECT key FROM frames")} if keys else set()
        for key in (k for k in keys if k not in known):
            say(f"warning: {key} is not in the index of {data_dir}: skipped")
        keys = [k for k in keys if k in known]
        try:
            return _predict(args, data_dir, db, detector, keys)
        except ModelError as exc:
            say(f"error: {exc}")
            return EXIT_FAILED


def _predict(args: argparse.Namespace, data_dir: Path, db: Any, detector: Any,
             keys: list[str]) -> int:
    from tqdm import tqdm

    from lyoncam_daemon.curation.predict import (
        Predicted,
        predict_frames,
        recorder,
        write_classes,
        write_labels,
    )

    if detector.names is not None:
        write_classes(args.out, detector.names)
    else:
        say(f"warning: {args.model} carries no class names and --names was not given: "
            "label files use class ids only")
    record = recorder(db, detector)

    def keep(results: list[Predicted]) -> None:
        write_labels(args.out, results)
        record(results)

    bar = args.progress == "bar" or (args.progress == "auto" and sys.stderr.isatty())
    with tqdm(total=len(keys), unit="frame", disable=not bar, file=sys.stderr) as progress:
        done = predict_frames(detector, [(k, data_dir / k) for k in keys], args.conf, args.iou,
                              args.batch, keep, progress.update)
    for key, why in done.failed:
        say(f"warning: cannot read {data_dir / key}: {why}")
    print(f"{detector.version}: {done.frames} frames, {done.boxes} boxes in "
          f"{done.seconds:.1f} s ({done.per_second:.1f} frames/s); labels in "
          f"{args.out / 'labels'}"
          + (f"; {len(done.failed)} frames unreadable" if done.failed else ""))
    return EXIT_FAILED if done.failed else EXIT_OK


# --- enrich --backfill ---------------------------------------------------------------------


def add_enrich_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--backfill", action="store_true", required=True,
                   help="fill sun_elevation/daypart and weather of frames stored without them")
    p.add_argument("--no-weather", action="store_true",
                   help="daylight only: no request to the weather archive")


def cmd_enrich(args: argparse.Namespace) -> int:
    import asyncio

    from lyoncam_daemon.config import WeatherSettings
    from lyoncam_daemon.curation.backfill import Backfill

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



COMMANDS = (
    Command("index", "bring the frame index up to date with the sidecars",
            "Add frames the index lacks, drop deleted ones; --rebuild re-reads every sidecar. "
            "The daemon keeps the index current itself.",
            add_index_arguments, cmd_index),
    Command("report", "what the frames cover: camera x daypart x weather, days",
            "Frames per camera, daypart and weather, frames per day, empty and thin cells; "
            "--json or --html FILE.",
            add_report_arguments, cmd_report),
    Command("sample", "pick frames to label: balanced, uncertain or rare",
            "Stratified by camera, daypart and weather, spread in time, without "
            "near-duplicates or frames already pushed; --strategy uncertain|rare looks "
            "first at what `predict` found.",
            add_sample_arguments, cmd_sample),
    Command("predict", "run your ONNX detector on frames: YOLO label files and the index",
            "Letterboxed to the model's own input size, NMS, boxes mapped back to the frame; "
            "writes OUT/labels/<frame>.txt with a score per box (what `push --predictions` "
            "reads) and records each frame's classes and scores in the index for `sample "
            "--strategy uncertain|rare`.",
            add_predict_arguments, cmd_predict),
    Command("enrich", "fill daylight and weather of frames stored without them",
            "--backfill: sun_elevation/daypart computed, weather from the Open-Meteo archive "
            "(in batches, resumable).",
            add_enrich_arguments, cmd_enrich),
)
