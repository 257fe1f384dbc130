"""One async HTTP client for Label Studio: auth header, rate limit, concurrency cap, retries.

Every request goes through the same semaphore, then the same token bucket: a request takes its
rate-limit token only once it may go out, so requests queued on the semaphore never leave in a
burst above the rate. Retried: 429 (after its Retry-After, which also pauses every other request
of this client, those already waiting for a token included), 5xx, timeouts and connection errors
(exponential backoff with a cap); but a connection refused before the server ever answered means
nothing listens there: two tries, then `Unreachable`. A 401 refreshes a personal access token
once, then fails with an explanation of the two kinds of key. The Authorization header is only
ever sent to the Label Studio origin given as ``base_url``, never to other hosts an image URL may
point at.
"""

from __future__ import annotations

import asyncio
import errno
import json as jsonlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp
import structlog

from lyoncam_daemon.config import host_port
from lyoncam_daemon.labelstudio.auth import (
    PAT_REFUSED_HELP,
    UNAUTHORIZED_HELP,
    AuthError,
    Credentials,
    Secret,
)
from lyoncam_daemon.labelstudio.ratelimit import TokenBucket

log = structlog.get_logger(__name__)

USER_AGENT = "lyoncam-labelstudio/0.1"


class HTTPError(Exception):
    """A final (non-retried, or retried in vain) HTTP failure. Never carries headers."""

    def __init__(self, status: int | None, method: str, url: str, detail: str) -> None:
        self.status = status
        self.url = url
        super().__init__(f"{method} {_display(url)}: {detail}")


class Unreachable(Exception):
    """Nothing answers at the base URL: connections refused before any response came."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        super().__init__(
            f"cannot reach Label Studio at {display_base(base_url)}: connection refused")


REFUSED_TRIES = 2
"""Tries in all when connecting is refused and the server never answered this client yet."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    """Tries in all, the first included."""
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 300.0

    def backoff(self, attempt: int) -> float:
        """Delay after the ``attempt``-th failure (0-based): base·2^attempt, capped."""
        return float(min(self.max_delay, self.base_delay * (2**attempt)))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


_URL_QUERY = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s?#'\"<>]*)[?#][^\s'\"<>]*")


def strip_query(url: str) -> str:
    """The URL without its query string, fragment and user:password@: what may be shown.

    A presigned cloud-storage URL carries its signature (``X-Amz-Signature=``, ``sig=``, ...)
    there, so messages, logs and the summary only ever show this; the request uses the full URL.
    """
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, host_port(parts.netloc), parts.path, "", ""))


def display_base(url: str) -> str:
    """The base URL for messages: no user:password@, no query, no trailing slash."""
    return strip_query(url).rstrip("/")


def _refused(exc: BaseException) -> bool:
    """Connecting was refused (ECONNREFUSED): nothing listens on that port."""
    if not isinstance(exc, aiohttp.ClientConnectorError):
        return False
    os_error = exc.os_error
    return isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED


def redact_urls(text: str) -> str:
    """Text (an exception's message) with the query and fragment cut from every URL in it."""
    return _URL_QUERY.sub(r"\1", text)


def _display(url: str) -> str:
    """A URL for messages and logs: its path only, never the query (see strip_query)."""
    return urlsplit(url).path or "/"


def _not_json(resp: Response) -> str:
    """Why a successful answer is unusable: it does not parse as JSON (HTML error page, ...)."""
    kind = resp.content_type.split(";", 1)[0].strip() or "no Content-Type"
    return f"HTTP {resp.status} but the answer is not JSON ({kind}, {len(resp.body)} bytes)"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class LabelStudioClient:
    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        rate: float | None = 5.0,
        burst: float = 1.0,
        concurrency: int = 4,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.base_url = base_url.rstrip("/") + "/"
        self.credentials = credentials
        self.bucket = TokenBucket(rate, burst, clock=clock, sleep=sleep)
        self.retry = retry or RetryPolicy()
        self.concurrency = concurrency
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 15.0))
        self._sleep = sleep
        self._clock = clock
        self._sem = asyncio.Semaphore(concurrency)
        self._refresh_lock = asyncio.Lock()
        self._paused_until = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._answered = False
        """The server has answered once: from then on a refused connection is retried like any
        other connection error (a restart), not taken as nothing listening at the URL."""
        self.requests = 0
        self.retries = 0

    def __repr__(self) -> str:
        return f"LabelStudioClient({self.base_url!r}, {self.credentials!r})"

    async def __aenter__(self) -> LabelStudioClient:
        connector = aiohttp.TCPConnector(limit=self.concurrency + 1)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers={"User-Agent": USER_AGENT}
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path_or_url: str) -> str:
        return urljoin(self.base_url, path_or_url)

    def is_own(self, url: str) -> bool:
        return _origin(url) == _origin(self.base_url)

    # --- auth ---------------------------------------------------------------------------------

    async def _refresh(self, pat: Secret) -> Secret:
        resp = await self.request(
            "POST", "/api/token/refresh/", json={"refresh": pat.reveal()}, auth=False
        )
        if resp.status in (400, 401, 403):
            raise AuthError(PAT_REFUSED_HELP.format(status=resp.status))
        if resp.status != 200:
            raise HTTPError(resp.status, "POST", "/api/token/refresh/", f"HTTP {resp.status}")
        try:
            access = jsonlib.loads(resp.body)["access"]
            if not isinstance(access, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise HTTPError(200, "POST", "/api/token/refresh/", "no access token") from None
        log.debug("access_token_refreshed")
        return Secret(access)

    async def _auth_header(self) -> str:
        if self.credentials.needs_refresh():
            async with self._refresh_lock:  # one refresh for all concurrent requests
                return await self.credentials.header(self._refresh)
        return await self.credentials.header(self._refresh)

    # --- requests -----------------------------------------------------------------------------

    async def _wait_pause(self) -> None:
        delay = self._paused_until - self._clock()
        if delay > 0:
            await self._sleep(delay)

    async def _wait_turn(self) -> None:
        """Wait until this request may go out: no 429 pause pending, and a rate-limit token.

        Called holding the semaphore, so only requests about to be sent hold tokens. The pause is
        checked again once the token is in hand: a Retry-After that arrived while this request
        slept in the bucket holds it too, and it then takes a fresh token, so the requests a pause
        releases are spaced by the rate again instead of leaving together.
        """
        while True:
            await self._wait_pause()
            await self.bucket.acquire()
            if self._paused_until <= self._clock():
                return

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        auth: bool = True,
    ) -> Response:
        """Send with retries. Returns any final status other than 401/429/5xx to the caller.

        `form` builds a multipart body (file uploads) afresh for each try: a sent one is spent.
        """
        if self._session is None:
            raise RuntimeError("use `async with LabelStudioClient(...)`")
        url = self.url(path_or_url)
        send_auth = auth and self.is_own(url)
        refreshed = False
        last = "no attempt"
        for attempt in range(self.retry.attempts):
            # Before the semaphore: a PAT refresh is itself a request and needs the semaphore.
            headers = {"Authorization": await self._auth_header()} if send_auth else {}
            delay: float | None = None
            try:
                async with self._sem:
                    await self._wait_turn()
                    self.requests += 1
                    async with self._session.request(
                        method, url, params=params, json=json, headers=headers,
                        data=form() if form is not None else None,
                    ) as resp:
                        self._answered = self._answered or self.is_own(url)
                        body = await resp.read()
                        status, ctype = resp.status, resp.headers.get("Content-Type", "")
                        retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                if (_refused(exc) and not self._answered and self.is_own(url)
                        and attempt + 1 >= min(REFUSED_TRIES, self.retry.attempts)):
                    raise Unreachable(self.base_url) from None
                # aiohttp may put the URL in the message (InvalidURL, redirects): no query.
                text = redact_urls(str(exc))
                last = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
                delay = self.retry.backoff(attempt)
            else:
                if status == 429:
                    wait = parse_retry_after(retry_after)
                    delay = (
                        min(wait, self.retry.max_retry_after)
                        if wait is not None
                        else self.retry.backoff(attempt)
                    )
                    self._paused_until = max(self._paused_until, self._clock() + delay)
                    last = "HTTP 429 Too Many Requests"
                elif status >= 500:
                    delay = self.retry.backoff(attempt)
                    last = f"HTTP {status}"
                elif status == 401 and send_auth:
                    if self.credentials.kind == "pat" and not refreshed:
                        refreshed = True
                        self.credentials.invalidate()
                        continue
                    raise AuthError(UNAUTHORIZED_HELP)
                else:
                    return Response(status, body, ctype)
            if attempt + 1 < self.retry.attempts:
                self.retries += 1
                log.warning(
                    "http_retry", method=method, url=_display(url), reason=last,
                    attempt=attempt + 1, delay_s=round(delay, 3),
                )
                await self._sleep(delay)
        raise HTTPError(None, method, url, f"gave up after {self.retry.attempts} tries: {last}")

    def _json_of(self, resp: Response, path: str, where: str = "") -> Any:
        """The JSON of a 200 answer to GET `path`; one clear HTTPError otherwise."""
        if resp.status != 200:
            raise HTTPError(resp.status, "GET", self.url(path), f"HTTP {resp.status}")
        try:
            return jsonlib.loads(resp.body)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both (a proxy's HTML page)
            raise HTTPError(resp.status, "GET", self.url(path), where + _not_json(resp)) from None

    async def get_json(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        return self._json_of(await self.request("GET", path, params=params), path)

    async def get_project(self, project_id: int) -> dict[str, Any]:
        data = await self.get_json(f"/api/projects/{project_id}")
        if not isinstance(data, dict):
            raise HTTPError(200, "GET", f"/api/projects/{project_id}", "not a project object")
        return data

    async def iter_tasks(
        self, project_id: int, page_size: int = 100
    ) -> AsyncIterator[dict[str, Any]]:
        """Every task of a project with its annotations, page by page; each task once."""
        seen: set[Any] = set()
        page = 1
        while True:
            params: dict[str, str | int] = {
                "project": project_id, "page": page, "page_size": page_size, "fields": "all",
            }
            resp = await self.request("GET", "/api/tasks/", params=params)
            if resp.status == 404 and page > 1:  # "Invalid page": past the end
                return
            data = self._json_of(resp, "/api/tasks/", f"page {page}: ")
            tasks = data.get("tasks", []) if isinstance(data, dict) else data
            if not isinstance(tasks, list):
                raise HTTPError(200, "GET", self.url("/api/tasks/"), "no task list in the answer")
            for task in tasks:
                if isinstance(task, dict) and task.get("id") not in seen:
                    seen.add(task.get("id"))
                    yield task
            total = data.get("total") if isinstance(data, dict) else None
            if len(tasks) < page_size or (isinstance(total, int) and len(seen) >= total):
                return
            page += 1
