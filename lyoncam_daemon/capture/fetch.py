"""One conditional GET of a camera frame: streamed, size-capped, with a deadline.

Every failure becomes a `FetchError` with a short `kind`, so the per-camera loop can
count failures by kind and put just that camera into backoff. Nothing here retries:
when to try again is the schedule's business (schedule.py), not the fetcher's.

How many requests run at once is decided here too (`Slots`), before a request starts,
so waiting for a turn is never counted against a camera's own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum

import aiohttp
from yarl import URL

from lyoncam_daemon.observe.stats import ErrorKind

#: Redirects followed in one poll before it fails with `too many redirects` (as browsers,
#: which stop at about 20; a camera needs one at most).
MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Validators:
    """What the server said last time, sent back so it can answer 304 Not Modified."""

    etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> dict[str, str]:
        h = {}
        if self.etag:
            h["If-None-Match"] = self.etag
        if self.last_modified:
            h["If-Modified-Since"] = self.last_modified
        return h


@dataclass(frozen=True)
class Fetched:
    """A response that is not an error: 200 with its body, or 304 with none."""

    status: int
    body: bytes
    etag: str | None
    last_modified: str | None
    content_type: str | None
    elapsed_s: float

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def validators(self) -> Validators:
        return Validators(self.etag, self.last_modified)


class FetchError(Exception):
    """A failed poll, with its kind and a one-line detail naming the real cause."""

    def __init__(self, kind: ErrorKind, detail: str, status: int | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.status = status


async def fetch_frame(
    session: aiohttp.ClientSession,
    url: str,
    *,
    time_limit: float,
    max_bytes: int,
    validators: Validators | None = None,
    connect_timeout: float | None = None,
    follow_redirects: bool = True,
) -> Fetched:
    """GET `url`, reading at most `max_bytes` of body within `time_limit` seconds in total.

    The CriTer server answers chunked with no Content-Length, so the cap is enforced while
    streaming: a runaway body costs at most `max_bytes` of memory, never more.
    `connect_timeout` is the session's (only used to word the error). Redirects are followed
    only to the camera's own scheme, host and port (`redirect_target`), and not at all
    without `follow_redirects`: a refused one is an error of its own kind.
    """
    headers = validators.headers() if validators else {}
    started = time.monotonic()
    try:
        async with asyncio.timeout(time_limit):
            return await _get(session, URL(url, encoded=False), headers, max_bytes, started,
                              follow_redirects)
    except FetchError:
        raise
    except aiohttp.ConnectionTimeoutError:
        # Before TimeoutError, which it subclasses: the server did not accept a connection.
        within = f" within {connect_timeout:g} s" if connect_timeout else ""
        raise FetchError(ErrorKind.TIMEOUT, f"could not connect{within}") from None
    except TimeoutError:
        raise FetchError(ErrorKind.TIMEOUT,
                         f"no complete answer within {time_limit:g} s") from None
    except aiohttp.ClientConnectorDNSError as exc:
        raise FetchError(ErrorKind.DNS, _short(exc)) from None
    except aiohttp.ClientResponseError as exc:
        raise FetchError(ErrorKind.HTTP, scrub(f"HTTP {exc.status} {exc.message}"), exc.status) \
            from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:  # ValueError: a URL yarl refuses
        raise FetchError(ErrorKind.CONNECTION, _short(exc)) from None


def redirect_target(current: URL, location: str) -> URL:
    """Where a redirect from `current` leads, if it stays on the same scheme, host and port
    (keeping the camera's user-info for it); FetchError(redirect_refused) otherwise.

    A camera that answers 302 to another host would otherwise have that host's picture
    stored under the camera's name, and the camera's credentials sent along.
    """
    try:
        target = current.join(URL(location))
    except ValueError:
        raise FetchError(ErrorKind.HTTP, "a redirect with an unusable Location") from None
    if (target.scheme, target.host, target.port) != (current.scheme, current.host, current.port):
        raise FetchError(ErrorKind.REDIRECT_REFUSED,
                         f"redirect to {target.scheme}://{target.host}:{target.port} refused: "
                         "only the camera's own scheme and host are followed")
    if current.user is not None and target.user is None:
        target = target.with_user(current.user).with_password(current.password)
    return target


async def _get(session: aiohttp.ClientSession, url: URL, headers: dict[str, str],
               max_bytes: int, started: float, follow_redirects: bool) -> Fetched:
    for _ in range(MAX_REDIRECTS + 1):
        async with session.get(url, headers=headers, allow_redirects=False) as resp:
            if resp.status in _REDIRECTS:
                if not follow_redirects:
                    raise FetchError(ErrorKind.REDIRECT_REFUSED,
                                     f"HTTP {resp.status} redirect refused: "
                                     "http.follow_redirects is off", resp.status)
                url = redirect_target(url, resp.headers.get("Location", ""))
                continue
            if resp.status == 304:
                return _fetched(resp, b"", started)
            if resp.status >= 400:
                reason = f"HTTP {resp.status} {resp.reason or ''}".strip()
                raise FetchError(ErrorKind.HTTP, reason, resp.status)
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise FetchError(ErrorKind.TOO_LARGE, f"Content-Length {resp.content_length} "
                                 f"over the {max_bytes}-byte cap")
            body = await _read_capped(resp, max_bytes)
            return _fetched(resp, body, started)
    raise FetchError(ErrorKind.HTTP, f"too many redirects (more than {MAX_REDIRECTS})")


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    # Whatever has arrived, at once: iter_chunked cut a 300 KB frame that was already
    # buffered into five 64 KB pieces, an await each.
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(ErrorKind.TOO_LARGE, f"body over the {max_bytes}-byte cap")
        parts.append(chunk)
    return b"".join(parts)


def _fetched(resp: aiohttp.ClientResponse, body: bytes, started: float) -> Fetched:
    return Fetched(
        status=resp.status,
        body=body,
        etag=resp.headers.get("ETag"),
        last_modified=resp.headers.get("Last-Modified"),
        content_type=resp.headers.get("Content-Type"),
        elapsed_s=time.monotonic() - started,
    )


def _short(exc: BaseException) -> str:
    """One line: exception messages from aiohttp can span lines and repeat the URL."""
    text = scrub(str(exc).splitlines()[0]) if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Standing(Enum):
    """What a camera's last answer says about the turn it may take (`Slots`)."""

    #: A known fast answer last time, or no poll yet: any turn, the kept one included.
    FAST = "fast"
    #: Answered, but not fast: any turn but the kept one.
    SLOW = "slow"
    #: Failing, down, or slower than half its timeout: at most `suspect_share` turns.
    SUSPECT = "suspect"


@dataclass(frozen=True)
class Turn:
    """A granted turn. On the `kept` one the request must answer within its fast limit."""

    kept: bool


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]*@")
_QUERY_VALUE = re.compile(r"([?&][^=&\s#'\"]*)=[^&\s#'\"]*")


def scrub(text: str) -> str:
    """An error message without any URL's user-info or query values: aiohttp names the URL
    in some of its errors, and a camera URL may carry `user:password@` or `?token=`."""
    return _QUERY_VALUE.sub(r"\1=", _USERINFO.sub(r"\1", text))


class Slots:
    """Turns to send a request: at most `total` in flight, `per_host` to one host, and turns
    kept for cameras that answer.

    Why not aiohttp's connector limits: a request queued there for a pooled connection is
    already on its camera's clock (aiohttp even counts the queueing against the connect
    timeout), so four slow cameras on the one CriTer host made the healthy ones fail with
    timeouts that were not theirs. Here the wait happens before the request starts, and is
    measured apart.

    Two reserves, so a healthy camera never loses a frame because its neighbours are slow:
    a *suspect* camera (failing, down, or slow last time) may hold at most half of the turns
    (`suspect_share`); and one turn of each limit is *kept* for cameras with a known fast
    answer or on their first poll (`Standing.FAST`), taken only when no other is free. Until
    a camera has answered nobody knows it is slow, so at start four cameras that never
    answer took every turn of their host for a whole timeout; now a first poll on the kept
    turn that has not answered within its fast limit is cut there (the caller's business,
    `Turn.kept`), and the turn passes on.
    """

    def __init__(self, total: int, per_host: int) -> None:
        if total < 1 or per_host < 1:
            raise ValueError("slot counts must be at least 1")
        self._total = _Gate(total)
        self._per_host = per_host
        self._hosts: dict[str, _Gate] = {}

    @contextlib.asynccontextmanager
    async def hold(self, host: str, standing: Standing,
                   within: float | None = None) -> AsyncIterator[Turn]:
        """Wait for a turn (host first, then the total, in one order: no deadlock); raise
        NoTurn if none comes `within` seconds."""
        gate = self._hosts.get(host)
        if gate is None:
            gate = self._hosts[host] = _Gate(self._per_host)
        if within is None or (gate.fits(standing) and self._total.fits(standing)):
            # A turn is free: no timer to arm (the common case, once per poll).
            on_host, on_total = await self._take(gate, standing)
        else:
            try:
                async with asyncio.timeout(within):
                    on_host, on_total = await self._take(gate, standing)
            except TimeoutError:
                raise NoTurn(f"no request slot within {within:g} s") from None
        try:
            yield Turn(kept=on_host is _KEPT or on_total is _KEPT)
        finally:
            self._total.release(on_total, standing)
            gate.release(on_host, standing)

    async def _take(self, gate: _Gate, standing: Standing) -> tuple[str, str]:
        on_host = await gate.acquire(standing)
        try:
            on_total = await self._total.acquire(standing)
        except BaseException:
            gate.release(on_host, standing)
            raise
        return on_host, on_total


class NoTurn(Exception):
    """No request slot came in time: the poll is skipped, not the camera's fault."""


def suspect_share(slots: int) -> int:
    """Slots suspects may hold together: half, at least one (with one slot, no reserve)."""
    return max(1, slots // 2)


def fast_limit(timeout: float, interval: float) -> float:
    """How soon a camera must answer to count as fast, and how long a request may hold the
    kept turn: half of its timeout or interval, whichever is shorter, so a camera waiting
    for the kept turn gets it before its own next tick."""
    return min(timeout, interval) / 2


_ORDINARY, _KEPT = "ordinary", "kept"


class _Gate:
    """One limit's turns: `slots - 1` ordinary ones (with one slot, no kept turn) and one
    kept for FAST cameras. Waiters are served in arrival order, each by the first turn it
    may take; one queue per standing, so serving one is O(1) however many wait."""

    def __init__(self, slots: int) -> None:
        self._kept = 1 if slots > 1 else 0
        self._ordinary = slots - self._kept
        self._share = suspect_share(slots)
        self._busy = self._kept_busy = self._suspects = 0
        self._arrivals = itertools.count()
        self._queues: dict[Standing, deque[tuple[int, asyncio.Future[str]]]] = {
            s: deque() for s in Standing}

    def _which(self, standing: Standing) -> str | None:
        if self._busy < self._ordinary and (standing is not Standing.SUSPECT
                                            or self._suspects < self._share):
            return _ORDINARY
        if standing is Standing.FAST and self._kept_busy < self._kept:
            return _KEPT
        return None

    def fits(self, standing: Standing) -> bool:
        """A turn can be taken without waiting."""
        return self._which(standing) is not None

    def _grant(self, where: str, standing: Standing) -> None:
        if where is _KEPT:
            self._kept_busy += 1
        else:
            self._busy += 1
            self._suspects += standing is Standing.SUSPECT

    async def acquire(self, standing: Standing) -> str:
        # Waiters left after `_serve` cannot take any turn now, so a newcomer that fits
        # overtakes nobody who could.
        where = self._which(standing)
        if where is not None:
            self._grant(where, standing)
            return where
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        entry = (next(self._arrivals), waiter)
        self._queues[standing].append(entry)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result(), standing)  # granted as it was cancelled
            else:
                with contextlib.suppress(ValueError):  # `_serve` may have dropped it
                    self._queues[standing].remove(entry)
            raise

    def release(self, where: str, standing: Standing) -> None:
        if where is _KEPT:
            self._kept_busy -= 1
        else:
            self._busy -= 1
            self._suspects -= standing is Standing.SUSPECT
        self._serve()

    def _serve(self) -> None:
        while True:
            for queue in self._queues.values():
                while queue and queue[0][1].done():  # cancelled while waiting
                    queue.popleft()
            # The earliest waiter that some free turn fits.
            heads = [(q[0][0], s) for s, q in self._queues.items()
                     if q and self._which(s) is not None]
            if not heads:
                return
            _, standing = min(heads)
            _, waiter = self._queues[standing].popleft()
            where = self._which(standing)
            assert where is not None
            self._grant(where, standing)
            waiter.set_result(where)
