"""One conditional GET of a camera frame: streamed, size-capped, with a deadline.

Every failure becomes a `FetchError` with a short `kind`, so the per-camera loop can
count failures by kind and put just that camera into backoff. Nothing here retries:
when to try again is the schedule's business (schedule.py), not the fetcher's.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

_CHUNK = 64 * 1024


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
    """A failed poll. `kind` is one of: timeout, dns, connection, http, too_large."""

    def __init__(self, kind: str, detail: str, status: int | None = None) -> None:
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
) -> Fetched:
    """GET `url`, reading at most `max_bytes` of body within `time_limit` seconds in total.

    The CriTer server answers chunked with no Content-Length, so the cap is enforced while
    streaming: a runaway body costs at most `max_bytes` of memory, never more.
    """
    headers = validators.headers() if validators else {}
    started = time.monotonic()
    try:
        async with asyncio.timeout(time_limit):
            async with session.get(url, headers=headers, allow_redirects=True) as resp:
                if resp.status == 304:
                    return _fetched(resp, b"", started)
                if resp.status >= 400:
                    raise FetchError("http", f"HTTP {resp.status} {resp.reason or ''}".strip(),
                                     resp.status)
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise FetchError("too_large", f"Content-Length {resp.content_length} "
                                     f"over the {max_bytes}-byte cap")
                body = await _read_capped(resp, max_bytes)
                return _fetched(resp, body, started)
    except FetchError:
        raise
    except TimeoutError:
        raise FetchError("timeout", f"no complete answer within {time_limit:g} s") from None
    except aiohttp.ClientConnectorDNSError as exc:
        raise FetchError("dns", _short(exc)) from None
    except aiohttp.ClientResponseError as exc:
        raise FetchError("http", f"HTTP {exc.status} {exc.message}", exc.status) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise FetchError("connection", _short(exc)) from None


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise FetchError("too_large", f"body over the {max_bytes}-byte cap")
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
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
