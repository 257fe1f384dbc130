"""`pull`: run a Label Studio project download from the parsed arguments.

What `pull` does, its arguments and `--help` text live in labelstudio/arguments.py, which
imports nothing heavy, so `python -m lyoncam_daemon --help` does not load aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Any, TextIO, cast
from urllib.parse import urlsplit

import structlog
from tqdm import tqdm

from lyoncam_daemon import observe
from lyoncam_daemon.labelstudio.auth import ENV_KEY, AuthError, Credentials, load_token
from lyoncam_daemon.labelstudio.client import (
    HTTPError,
    LabelStudioClient,
    RetryPolicy,
    Unreachable,
)
from lyoncam_daemon.labelstudio.pull import (
    Item,
    Outcome,
    Progress,
    PullError,
    PullOptions,
    format_summary,
    run_pull,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a Label Studio base URL, or None if it can."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    try:
        _ = parts.port  # raises on a port out of range or not a number
    except ValueError:
        return "the port must be a number from 1 to 65535"
    if "@" in parts.netloc:
        return (f"no user:password@ in the URL: the key goes in {ENV_KEY} or --token-file")
    return None


def shown_argument(text: str) -> str:
    """A --url value as given, for a usage error, without a query or a user:password@ part."""
    text = re.split(r"[?#]", text, maxsplit=1)[0]
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)?[^/]*@", r"\1***@", text)


class _TqdmStream:
    """A stream that prints above an active progress bar instead of through it.

    Whole lines only: ``print`` writes a message and its newline in two calls, and passing the
    newline on by itself would print an empty line under every log line.
    """

    def __init__(self) -> None:
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            tqdm.write(line, file=sys.stderr)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            tqdm.write(line, file=sys.stderr)
        sys.stderr.flush()

    def isatty(self) -> bool:  # what decides between JSON and console lines, and colours
        return sys.stderr.isatty()


def configure_logging(log_format: str, verbose: bool, bar: bool) -> None:
    """The daemon's log set-up (JSON lines unless stderr is a terminal), above the bar if any."""
    stream = cast(TextIO, _TqdmStream()) if bar else sys.stderr
    observe.configure_logging(log_format, "debug" if verbose else "info", stream=stream)


class BarProgress:
    def __init__(self) -> None:
        self._bar: Any = None
        self._counts = {"fetched": 0, "present": 0, "failed": 0}

    def start(self, total: int) -> None:
        self._bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True)

    def advance(self, item: Item, outcome: Outcome) -> None:
        self._counts[outcome] += 1
        if self._bar is not None:
            self._bar.set_postfix(self._counts, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class LogProgress:
    """A progress log line every ~5 % (and at the end), instead of a bar."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("lyoncam.pull")
        self._total = 0
        self._done = 0
        self._counts = {"fetched": 0, "present": 0, "failed": 0}

    def start(self, total: int) -> None:
        self._total = total
        self._log.info("images_planned", total=total)

    def advance(self, item: Item, outcome: Outcome) -> None:
        self._done += 1
        self._counts[outcome] += 1
        step = max(1, self._total // 20)
        if self._done % step == 0 or self._done == self._total:
            self._log.info("progress", done=self._done, total=self._total, **self._counts)

    def close(self) -> None:
        pass


def options(args: argparse.Namespace) -> PullOptions:
    classes = None
    if args.classes:
        classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    return PullOptions(
        project=args.project,
        out=args.out,
        classes=classes,
        include_unlabelled=args.include_unlabelled,
        val_fraction=args.val_fraction,
        block_hours=args.split_hours,
        rotated=args.rotated,
        labels_dir=args.labels_dir,
        page_size=args.page_size,
    )


async def pull_async(args: argparse.Namespace, credentials: Credentials,
                     progress: Progress) -> int:
    client = LabelStudioClient(
        args.url,
        credentials,
        rate=args.rate or None,
        concurrency=args.concurrency,
        timeout=args.timeout,
        retry=RetryPolicy(attempts=args.retries + 1),
    )
    async with client:
        summary = await run_pull(client, options(args), progress)
    print(format_summary(summary, args.out))
    return EXIT_OK if summary.ok else EXIT_FAILED


def main(args: argparse.Namespace) -> int:
    args.url = args.url.strip()
    problem = url_problem(args.url)
    if problem is not None:
        print(f"error: --url {shown_argument(args.url)!r}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    bar = args.progress == "bar" or (args.progress == "auto" and sys.stderr.isatty())
    configure_logging(args.log_format, args.verbose, bar)
    progress: Progress = BarProgress() if bar else LogProgress()
    try:
        credentials = Credentials(load_token(token_file=args.token_file))
    except AuthError as exc:  # no key at all: a usage problem
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(pull_async(args, credentials, progress))
    except (AuthError, PullError, HTTPError, Unreachable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
