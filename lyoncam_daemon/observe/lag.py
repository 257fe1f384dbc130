"""How late the event loop runs what is due: the lag every camera's poll also sees.

A sleeper wakes every `LAG_EVERY_S` and measures how much later than due it woke. Whatever
holds the loop (a callback doing too much at once, a thread keeping the GIL) shows here,
whoever caused it; `status.py`'s own measure (`Stepped`) covers only its requests. A hold
of H seconds shows as a lag between H - LAG_EVERY_S and H: what a camera due during it
waited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: Twenty wake-ups a second: nothing next to thousands of polls a minute, and a hold of the
#: loop longer than this is seen whenever it happens.
LAG_EVERY_S = 0.05


async def watch_loop(observe: Callable[[float], None], every: float = LAG_EVERY_S) -> None:
    """Until cancelled: sleep `every`, then `observe` how late the wake-up came."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every
        await asyncio.sleep(every)
        observe(max(0.0, loop.time() - due))


class RecentMax:
    """The largest value observed over the last `span_s` seconds (give or take one of its
    `slots`), in fixed memory: what a gauge shows, so a scrape every minute still sees the
    worst moment in between, and a start-up hold is forgotten after a minute."""

    __slots__ = ("_most", "_slot_s", "_which")

    def __init__(self, span_s: float = 60.0, slots: int = 6) -> None:
        self._slot_s = span_s / slots
        self._which = [-1] * slots  # the slot number each entry holds the largest value of
        self._most = [0.0] * slots

    def observe(self, value: float, now: float) -> None:
        n = int(now // self._slot_s)
        i = n % len(self._which)
        if self._which[i] != n:
            self._which[i], self._most[i] = n, value
        elif value > self._most[i]:
            self._most[i] = value

    def value(self, now: float) -> float:
        """The largest value of the slots within the span before `now`; 0 when none."""
        n = int(now // self._slot_s)
        first = n - len(self._which) + 1
        return max((most for which, most in zip(self._which, self._most, strict=True)
                    if first <= which <= n), default=0.0)
