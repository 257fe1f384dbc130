"""How a pull shows its progress: a bar on a terminal, else a log line every ~5 %."""

from __future__ import annotations

import sys
from typing import Any

import structlog
from tqdm import tqdm

from lyoncam_daemon.labelstudio.pull import ImageResult


class TqdmStream:
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


class BarProgress:
    """A tqdm bar on stderr, with the counts of fetched, present and failed images."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._counts = {"fetched": 0, "present": 0, "failed": 0}

    def start(self, total: int) -> None:
        self._bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True)

    def advance(self, result: ImageResult) -> None:
        self._counts[result] += 1
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

    def advance(self, result: ImageResult) -> None:
        self._done += 1
        self._counts[result] += 1
        step = max(1, self._total // 20)
        if self._done % step == 0 or self._done == self._total:
            self._log.info("progress", done=self._done, total=self._total, **self._counts)

    def close(self) -> None:
        pass
