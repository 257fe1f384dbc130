"""One conditional GET: streamed with a size cap, a deadline, and errors sorted by kind."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from lyoncam_daemon.capture.fetch import (
    FetchError,
    Slots,
    Standing,
    Validators,
    fast_limit,
    fetch_frame,
    suspect_share,
)

BODY = b"\xff\xd8\xff" + bytes(range(256)) * 400 + b"\xff\xd9"


async def chunked(request: web.Request) -> web.StreamResponse:
    if request.headers.get("If-None-Match") == '"v1"':
        return web.Response(status=304)
    resp = web.StreamResponse(headers={"Content-Type": "image/jpeg", "ETag": '"v1"'})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(0, len(BODY), 7000):
        await resp.write(BODY[i:i + 7000])
    await resp.write_eof()
    return resp


async def big(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for _ in range(100):
        await resp.write(b"\0" * 65536)
    return resp


async def announced(request: web.Request) -> web.Response:
    return web.Response(body=b"\0" * 200_000)


async def slow(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    await resp.write(b"\xff\xd8")
    await asyncio.sleep(1.5)
    return resp


async def broken(request: web.Request) -> web.Response:
    return web.Response(status=500, text="boom")


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/frame.jpg", chunked)
    app.router.add_get("/big", big)
    app.router.add_get("/announced", announced)
    app.router.add_get("/slow", slow)
    app.router.add_get("/500", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_streams_a_chunked_body_and_keeps_the_validator(
    base_url: str, session: aiohttp.ClientSession
) -> None:
    got = await fetch_frame(session, f"{base_url}/frame.jpg", time_limit=5, max_bytes=1_000_000)
    assert got.status == 200 and got.body == BODY
    assert got.etag == '"v1"' and got.last_modified is None
    again = await fetch_frame(session, f"{base_url}/frame.jpg", time_limit=5, max_bytes=1_000_000,
                              validators=got.validators)
    assert again.not_modified and again.body == b""


async def test_validators_become_conditional_headers() -> None:
    assert Validators('"x"', "Wed, 21 Oct 2015 07:28:00 GMT").headers() == {
        "If-None-Match": '"x"', "If-Modified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"}
    assert Validators().headers() == {}


@pytest.mark.parametrize(("path", "kind", "status"), [
    ("/big", "too_large", None),
    ("/announced", "too_large", None),
    ("/500", "http", 500),
    ("/missing", "http", 404),
    ("/slow", "timeout", None),
])
async def test_failures_are_sorted_by_kind(
    base_url: str, session: aiohttp.ClientSession, path: str, kind: str, status: int | None
) -> None:
    with pytest.raises(FetchError) as info:
        await fetch_frame(session, base_url + path, time_limit=0.5, max_bytes=100_000)
    assert info.value.kind == kind and info.value.status == status
    assert "\n" not in str(info.value)


async def test_refused_connection_is_a_connection_error(session: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError) as info:
        await fetch_frame(session, f"http://127.0.0.1:{port}/x", time_limit=2, max_bytes=1000)
    assert info.value.kind == "connection"


async def _holders(slots: Slots, host: str, standing: Standing, n: int,
                   release: asyncio.Event) -> tuple[list[asyncio.Task[None]], list[int]]:
    """Start `n` requests that hold their slot until `release`; count who got in."""
    inside: list[int] = []

    async def hold(i: int) -> None:
        async with slots.hold(host, standing):
            inside.append(i)
            await release.wait()

    tasks = [asyncio.create_task(hold(i)) for i in range(n)]
    for _ in range(5):
        await asyncio.sleep(0)
    return tasks, inside


async def test_suspect_cameras_hold_at_most_half_the_slots_of_a_host() -> None:
    slots, release = Slots(total=8, per_host=4), asyncio.Event()
    suspects, inside = await _holders(slots, "criter", Standing.SUSPECT, 4, release)
    assert len(inside) == suspect_share(4) == 2
    healthy, healthy_inside = await _holders(slots, "criter", Standing.FAST, 3, release)
    assert len(healthy_inside) == 2  # the two slots the suspects may not take
    release.set()
    await asyncio.gather(*suspects, *healthy)
    assert len(inside) == 4 and len(healthy_inside) == 3


async def test_the_total_limit_spans_hosts_and_keeps_its_own_reserve() -> None:
    slots, release = Slots(total=2, per_host=4), asyncio.Event()
    a, a_in = await _holders(slots, "a", Standing.SUSPECT, 2, release)
    b, b_in = await _holders(slots, "b", Standing.FAST, 2, release)
    assert (len(a_in), len(b_in)) == (1, 1)
    release.set()
    await asyncio.gather(*a, *b)


async def test_one_turn_is_kept_for_fast_cameras_and_first_polls() -> None:
    """Cameras not known to be slow fill the ordinary turns; the last turn goes only to a
    camera known fast (or never polled), and says it is the kept one."""
    slots, release = Slots(total=8, per_host=4), asyncio.Event()
    slow, slow_in = await _holders(slots, "criter", Standing.SLOW, 4, release)
    assert len(slow_in) == 3  # the fourth waits: the last turn is kept
    kept: list[bool] = []

    async def fast() -> None:
        async with slots.hold("criter", Standing.FAST) as turn:
            kept.append(turn.kept)

    await asyncio.wait_for(fast(), 5)
    assert kept == [True]
    release.set()
    await asyncio.gather(*slow)
    assert len(slow_in) == 4
    async with slots.hold("criter", Standing.FAST) as turn:
        assert not turn.kept  # ordinary turns free again: the kept one stays free


async def test_a_cancelled_waiter_gives_its_turn_on() -> None:
    slots, release = Slots(total=1, per_host=1), asyncio.Event()
    first, first_in = await _holders(slots, "h", Standing.FAST, 1, release)
    waiting = asyncio.create_task(_holders(slots, "h", Standing.FAST, 1, release))
    later, later_in = await _holders(slots, "h", Standing.FAST, 1, release)
    (cancelled, _) = await waiting
    cancelled[0].cancel()
    release.set()
    await asyncio.gather(*first, *later)
    assert first_in == [0] and later_in == [0]


def test_the_fast_limit_leaves_a_waiter_time_before_its_next_tick() -> None:
    assert fast_limit(timeout=30, interval=10) == 5
    assert fast_limit(timeout=20, interval=60) == 10


def test_slot_counts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Slots(total=0, per_host=1)


async def test_a_connect_timeout_says_so(session: aiohttp.ClientSession) -> None:
    # A listening socket whose backlog is full never completes the handshake.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            fillers.append(s)
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(sock_connect=0.3)) as short:
            with pytest.raises(FetchError) as info:
                await fetch_frame(short, f"http://127.0.0.1:{port}/x.jpg", time_limit=5,
                                  max_bytes=10**6, connect_timeout=0.3)
    finally:
        for s in fillers:
            s.close()
        server.close()
    assert info.value.kind == "timeout"
    assert str(info.value) == "timeout: could not connect within 0.3 s"


# --- redirects: only to the camera's own scheme and host ---------------------------------


@pytest.fixture
async def redirecting() -> AsyncIterator[tuple[str, list[tuple[str, str | None]]]]:
    """Routes that redirect: within the host, to another host (`localhost` is another name
    than 127.0.0.1), in a loop. Records each request's path and Authorization header."""
    seen: list[tuple[str, str | None]] = []
    app = web.Application()

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append((request.path, request.headers.get("Authorization")))
        response: web.StreamResponse = await handler(request)
        return response

    app.middlewares.append(record)

    async def here(request: web.Request) -> web.Response:
        raise web.HTTPFound("/frame.jpg")

    async def elsewhere(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://localhost:{request.url.port}/frame.jpg")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    app.router.add_get("/frame.jpg", chunked)
    app.router.add_get("/here", here)
    app.router.add_get("/elsewhere", elsewhere)
    app.router.add_get("/loop", loop)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


async def test_a_redirect_on_the_same_host_is_followed_with_the_cameras_credentials(
    redirecting: tuple[str, list[tuple[str, str | None]]], session: aiohttp.ClientSession,
) -> None:
    base, seen = redirecting
    url = base.replace("://", "://cam:pw@") + "/here"
    got = await fetch_frame(session, url, time_limit=5, max_bytes=1_000_000)
    assert got.body == BODY
    assert [path for path, _ in seen] == ["/here", "/frame.jpg"]
    assert seen[0][1] == seen[1][1] is not None  # the camera's Basic auth, on both


async def test_a_redirect_to_another_host_is_refused_as_its_own_kind(
    redirecting: tuple[str, list[tuple[str, str | None]]], session: aiohttp.ClientSession,
) -> None:
    base, seen = redirecting
    with pytest.raises(FetchError) as info:
        await fetch_frame(session, base + "/elsewhere", time_limit=5, max_bytes=1_000_000)
    assert info.value.kind == "redirect_refused"
    assert f"redirect to http://localhost:{base.rsplit(':', 1)[1]} refused" in str(info.value)
    assert [path for path, _ in seen] == ["/elsewhere"]  # the other host was never asked


async def test_redirects_can_be_turned_off_and_a_loop_says_too_many_redirects(
    redirecting: tuple[str, list[tuple[str, str | None]]], session: aiohttp.ClientSession,
) -> None:
    base, _ = redirecting
    with pytest.raises(FetchError) as info:
        await fetch_frame(session, base + "/here", time_limit=5, max_bytes=1_000_000,
                          follow_redirects=False)
    assert info.value.kind == "redirect_refused"
    assert "http.follow_redirects is off" in str(info.value)
    with pytest.raises(FetchError) as info:
        await fetch_frame(session, base + "/loop", time_limit=5, max_bytes=1_000_000)
    assert str(info.value) == "http: too many redirects (more than 10)"
