"""The HTTP client against a small local stand-in: 429/Retry-After, 5xx and timeout backoff,
401 explanation, PAT refresh, pagination, the upload fallback and where the key is sent.

The open-source Label Studio never throttles, so throttling is only testable this way.
"""

from __future__ import annotations

import asyncio
import heapq
import io
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from PIL import Image

from lyoncam_daemon.labelstudio.auth import AuthError, Credentials, Secret
from lyoncam_daemon.labelstudio.client import (
    HTTPError,
    LabelStudioClient,
    RetryPolicy,
    Unreachable,
    parse_retry_after,
    redact_urls,
    strip_query,
)
from lyoncam_daemon.labelstudio.pull import PullOptions, run_pull
from lyoncam_daemon.labelstudio.pull.model import Item
from lyoncam_daemon.labelstudio.pull.sync import fetch_image

from .helpers import KEY, Shown, StandIn, closed_port, jwt, ok, status


def client(url: str, key: str = KEY, **kw: Any) -> LabelStudioClient:
    kw.setdefault("rate", None)
    return LabelStudioClient(url, Credentials(Secret(key)), **kw)


def test_parse_retry_after() -> None:
    from datetime import UTC, datetime

    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_5xx_backs_off_exponentially_with_cap(standin: StandIn) -> None:
    standin.plans["/x"] = [status(503)] * 5 + [ok()]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    retry = RetryPolicy(attempts=6, base_delay=0.5, max_delay=3.0)
    async with client(standin.url, retry=retry, sleep=fake_sleep) as c:
        resp = await c.request("GET", "/x")
    assert resp.status == 200
    assert slept == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_gives_up_after_attempts(standin: StandIn) -> None:
    standin.plans["/x"] = [status(502)]

    async def no_sleep(_: float) -> None:
        pass

    async with client(standin.url, retry=RetryPolicy(attempts=3), sleep=no_sleep) as c:
        with pytest.raises(HTTPError, match="gave up after 3 tries: HTTP 502"):
            await c.request("GET", "/x")
    assert len(standin.hits) == 3


async def test_timeout_is_retried(standin: StandIn) -> None:
    async def slow() -> web.Response:
        await asyncio.Event().wait()  # never answers: the client's timeout ends it
        return web.Response(text="late")

    standin.plans["/slow"] = [slow, ok("fast")]
    async with client(standin.url, timeout=0.3, retry=RetryPolicy(base_delay=0.05)) as c:
        resp = await c.request("GET", "/slow")
    assert resp.body == b"fast" and len(standin.hits) == 2


async def test_refused_first_request_fails_after_two_tries() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    url = f"http://127.0.0.1:{closed_port()}"
    async with client(url + "/?q=1", retry=RetryPolicy(attempts=6), sleep=fake_sleep) as c:
        with pytest.raises(Unreachable) as info:
            await c.get_project(1)
    assert str(info.value) == f"cannot reach Label Studio at {url}: connection refused"
    assert c.requests == 2 and slept == [0.5]


async def test_refused_first_request_with_no_retries_is_one_try() -> None:
    async with client(f"http://127.0.0.1:{closed_port()}", retry=RetryPolicy(attempts=1)) as c:
        with pytest.raises(Unreachable):
            await c.get_project(1)
    assert c.requests == 1


async def test_refused_after_the_server_answered_is_retried_as_before() -> None:
    """A server that answered and then went away (a restart) gets every retry, as before."""
    async def project(_: web.Request) -> web.Response:
        return web.json_response({"id": 1})

    app = web.Application()
    app.router.add_get("/api/projects/1", project)
    runner = web.AppRunner(app)
    await runner.setup()
    port = closed_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()

    async def no_sleep(_: float) -> None:
        pass

    try:
        async with client(f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=4),
                          sleep=no_sleep) as c:
            assert await c.get_project(1) == {"id": 1}
            await runner.cleanup()
            with pytest.raises(HTTPError, match="gave up after 4 tries: ClientConnectorError"):
                await c.get_project(1)
        assert c.requests == 5
    finally:
        await runner.cleanup()


async def test_refused_image_host_is_not_taken_for_the_server(standin: StandIn) -> None:
    """Only the Label Studio origin can be 'unreachable'; an image host refusing is retried."""
    async def no_sleep(_: float) -> None:
        pass

    async with client(standin.url, retry=RetryPolicy(attempts=3), sleep=no_sleep) as c:
        with pytest.raises(HTTPError, match="gave up after 3 tries"):
            await c.request("GET", f"http://127.0.0.1:{closed_port()}/a.jpg")
    assert c.requests == 3


@pytest.mark.parametrize("kind", ["legacy", "pat"])
async def test_pull_with_nothing_listening_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: Shown, kind: str,
) -> None:
    """Two tries (one retry line), then one error line: not the six tries with backoff a
    server that answered once would get."""
    from lyoncam_daemon.cli import main

    key = KEY if kind == "legacy" else jwt({"token_type": "refresh", "exp": 9e9})
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", key)
    args = ["pull", "--url", url, "--project", "1", "--out", str(tmp_path / "ds"),
            "--progress", "log"]
    code = await asyncio.to_thread(main, args)
    _, err = shown.read()
    assert code == 1
    lines = err.splitlines()
    assert lines[-1] == f"error: cannot reach Label Studio at {url}: connection refused"
    assert [json.loads(line)["event"] for line in lines[:-1]] == ["http_retry"]
    assert "Traceback" not in err
    shown.assert_never_shown(key)


async def test_401_explains_both_kinds_without_the_key(standin: StandIn) -> None:
    standin.plans["/api/projects/1"] = [status(401)]
    async with client(standin.url) as c:
        with pytest.raises(AuthError) as info:
            await c.get_project(1)
    message = str(info.value)
    assert_short_concrete_refusal(message)
    assert "personal access token (JWT" in message and "legacy token (40 hex)" in message
    assert KEY not in message and KEY not in repr(info.value)
    assert standin.hits[0][1] == f"Token {KEY}"


def assert_short_concrete_refusal(message: str) -> None:
    """One line under 300 characters as printed, naming both kinds of key, the version from which
    legacy tokens are off, and both ways to turn them on."""
    line = f"error: {message}"
    assert "\n" not in line and len(line) < 300, (len(line), line)
    assert "personal access token" in message and "legacy token" in message
    assert "Label Studio 1.20 and later" in message and "1.2x" not in message
    assert "Organization > Access Token Settings" in message
    assert "--enable-legacy-api-token" in message


async def test_pat_refresh_and_retry_after_401(standin: StandIn) -> None:
    pat = jwt({"token_type": "refresh", "exp": 9e9})
    accesses = iter(jwt({"token_type": "access", "exp": time.time() + 300, "n": i})
                    for i in range(5))
    standin.plans["/api/token/refresh/"] = [lambda: web.json_response({"access": next(accesses)})]
    standin.plans["/api/projects/1"] = [status(401), ok('{"id": 1}')]
    async with client(standin.url, key=pat) as c:
        assert await c.get_project(1) == {"id": 1}
    paths = [p for p, _, _ in standin.hits]
    assert paths == ["/api/token/refresh/", "/api/projects/1", "/api/token/refresh/",
                     "/api/projects/1"]
    auths = [a for p, a, _ in standin.hits if p == "/api/projects/1"]
    assert all(a and a.startswith("Bearer ") and pat not in a for a in auths)
    assert auths[0] != auths[1]
    assert all(a is None for p, a, _ in standin.hits if p == "/api/token/refresh/")


async def test_refused_pat(standin: StandIn) -> None:
    pat = jwt({"token_type": "refresh", "exp": 9e9})
    standin.plans["/api/token/refresh/"] = [status(401)]
    async with client(standin.url, key=pat) as c:
        with pytest.raises(AuthError, match="refused") as info:
            await c.get_project(1)
    assert pat not in str(info.value)
    assert_short_concrete_refusal(str(info.value))
    assert "(HTTP 401)" in str(info.value)


async def test_pagination_stops_past_the_end(standin: StandIn) -> None:
    pages = {1: [{"id": 1}, {"id": 2}], 2: [{"id": 3}, {"id": 2}]}

    def page() -> web.Response:
        n = int(standin.hits[-1][0].split("page=")[1].split("&")[0])
        if n not in pages:
            return web.json_response({"detail": "Invalid page."}, status=404)
        return web.json_response({"tasks": pages[n], "total": 5})

    standin.plans["/api/tasks/"] = [page]
    async with client(standin.url) as c:
        ids = [t["id"] async for t in c.iter_tasks(7, page_size=2)]
    assert ids == [1, 2, 3]
    assert "project=7" in standin.hits[0][0] and "fields=all" in standin.hits[0][0]


@pytest.mark.parametrize("body", [b"<html><body>502 Bad Gateway</body></html>", b"\xff\xfe{"])
async def test_non_json_task_page_is_a_one_line_error(
    standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: Shown,
    body: bytes,
) -> None:
    """A 200 from /api/tasks/ that is not JSON (a proxy's page): exit 1 with one error line
    naming the path and status, no traceback, no key."""
    from lyoncam_daemon.cli import main

    standin.plans["/api/projects/1"] = [ok('{"id": 1, "label_config": "<View/>"}')]
    standin.plans["/api/tasks/"] = [lambda: web.Response(body=body, content_type="text/html")]
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", KEY)
    args = ["pull", "--url", standin.url, "--project", "1", "--out", str(tmp_path / "ds"),
            "--rate", "0", "--progress", "log"]
    code = await asyncio.to_thread(main, args)  # main runs its own event loop
    _, err = shown.read()
    assert code == 1
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: GET /api/tasks/: page 1: HTTP 200 but the answer is not JSON "
        f"(text/html, {len(body)} bytes)"
    ]
    shown.assert_never_shown(KEY)


@pytest.mark.parametrize("suffix", ["", "/", "/?next=/projects"])
async def test_missing_project_says_so_naming_the_server(
    standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: Shown,
    suffix: str,
) -> None:
    from lyoncam_daemon.cli import main

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", KEY)
    args = ["pull", "--url", standin.url + suffix, "--project", "999",
            "--out", str(tmp_path / "ds"), "--rate", "0", "--progress", "log"]
    code = await asyncio.to_thread(main, args)
    _, err = shown.read()
    assert code == 1
    assert [p for p, _, _ in standin.hits] == ["/api/projects/999"]
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: project 999 not found on {standin.url}"]
    assert "Traceback" not in err
    shown.assert_never_shown(KEY)


async def test_non_json_project_names_path_and_status(standin: StandIn) -> None:
    standin.plans["/api/projects/1"] = [lambda: web.Response(text="<html/>")]
    async with client(standin.url) as c:
        with pytest.raises(HTTPError) as info:
            await c.get_project(1)
    assert str(info.value) == (
        "GET /api/projects/1: HTTP 200 but the answer is not JSON (text/plain, 7 bytes)")
    assert KEY not in str(info.value)


async def test_upload_falls_back_to_storage_data(standin: StandIn) -> None:
    standin.plans["/data/upload/4/ab12cd34-f.jpg"] = [status(404)]
    standin.plans["/storage-data/uploaded/"] = [lambda: web.Response(body=b"JPEGBYTES")]
    item = Item(1, "/data/upload/4/ab12cd34-f.jpg", "f", ".jpg", "train", "")
    async with client(standin.url) as c:
        assert await fetch_image(c, item) == b"JPEGBYTES"
    assert standin.hits[1][0] == "/storage-data/uploaded/?filepath=upload/4/ab12cd34-f.jpg"
    assert standin.hits[1][1] == f"Token {KEY}"


async def test_key_never_sent_to_another_host(standin: StandIn) -> None:
    standin.plans["/img.jpg"] = [lambda: web.Response(body=b"x")]
    other = standin.url.replace("127.0.0.1", "localhost")  # same server, different origin
    async with client(other) as c:
        await c.request("GET", f"{standin.url}/img.jpg")
    assert standin.hits[0][1] is None


class VirtualTime:
    """A clock and sleep for the client in virtual time, so rate limits are checked exactly and
    without waiting. Time moves only when nothing is in flight: every client request counts as
    busy from send to response (through the ``Tracked`` session), except while its stand-in
    handler sleeps in virtual time (``handler_sleep_until``). Then the earliest sleeper wakes."""

    def __init__(self) -> None:
        self.now = 0.0
        self.busy = 0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await self._until(self.now + max(0.0, seconds))

    async def _until(self, when: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (when, next(self._seq), fut))
        await fut

    async def handler_sleep_until(self, when: float) -> None:
        self.busy -= 1
        try:
            await self._until(when)
        finally:
            self.busy += 1

    async def run(self, awaitable: Awaitable[Any]) -> Any:
        task = asyncio.ensure_future(awaitable)
        while not task.done():
            if self.busy > 0:
                await asyncio.sleep(0.0005)  # real I/O to the stand-in under way
                continue
            for _ in range(50):  # let every runnable task reach its next wait
                await asyncio.sleep(0)
            if self.busy > 0 or task.done():
                continue
            if not self._timers:
                await asyncio.sleep(0.0005)
                continue
            when, _, fut = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not fut.done():
                fut.set_result(None)
        return task.result()


class Tracked:
    """Wraps the client's session: each request is busy for VirtualTime until its body is read."""

    def __init__(self, session: Any, vt: VirtualTime) -> None:
        self._session, self._vt = session, vt

    def request(self, *args: Any, **kwargs: Any) -> Any:
        vt, inner = self._vt, self._session.request(*args, **kwargs)

        class Ctx:
            async def __aenter__(self) -> Any:
                vt.busy += 1
                try:
                    return await inner.__aenter__()
                except BaseException:
                    vt.busy -= 1
                    raise

            async def __aexit__(self, *exc: Any) -> None:
                try:
                    await inner.__aexit__(*exc)
                finally:
                    vt.busy -= 1

        return Ctx()

    async def close(self) -> None:
        await self._session.close()


def virtual_client(url: str, vt: VirtualTime, **kw: Any) -> LabelStudioClient:
    return client(url, sleep=vt.sleep, clock=vt.clock, **kw)


def recorded(vt: VirtualTime, sent: list[tuple[str, float]], path: str,
             make: Callable[[], web.Response]) -> Callable[[], web.Response]:
    """A stand-in step that notes the virtual time its request arrived at."""
    def step() -> web.Response:
        sent.append((path, vt.now))
        return make()
    return step


async def test_429_honours_retry_after(standin: StandIn) -> None:
    vt = VirtualTime()
    sent: list[tuple[str, float]] = []
    path = "/api/projects/1"
    standin.plans[path] = [recorded(vt, sent, path, status(429, **{"Retry-After": "7"})),
                           recorded(vt, sent, path, ok('{"id": 1}'))]
    async with virtual_client(standin.url, vt) as c:
        c._session = Tracked(c._session, vt)  # type: ignore[assignment]
        assert await vt.run(c.get_project(1)) == {"id": 1}
    assert sent == [(path, 0.0), (path, pytest.approx(7.0))]
    assert c.retries == 1


async def test_429_pauses_every_request(standin: StandIn) -> None:
    # /a gets a 429 with Retry-After: 10 at t=0; /b, sent at t=2, waits for the pause too. Once
    # the pause is over, a request goes out at once.
    vt = VirtualTime()
    sent: list[tuple[str, float]] = []
    standin.plans["/a"] = [recorded(vt, sent, "/a", status(429, **{"Retry-After": "10"})),
                           recorded(vt, sent, "/a", ok())]
    standin.plans["/b"] = [recorded(vt, sent, "/b", ok())]
    async with virtual_client(standin.url, vt, concurrency=2) as c:
        c._session = Tracked(c._session, vt)  # type: ignore[assignment]

        async def b_later() -> None:
            await vt.sleep(2.0)
            await c.request("GET", "/b")

        await vt.run(asyncio.gather(c.request("GET", "/a"), b_later()))
        await vt.run(c.request("GET", "/b"))
    assert [t for p, t in sent if p == "/a"] == pytest.approx([0.0, 10.0])
    assert [t for p, t in sent if p == "/b"] == pytest.approx([10.0, 10.0])


async def test_rate_limit_applies(standin: StandIn) -> None:
    """11 requests at --rate 10 reach the server (its handler records them) 0.1 s apart, in
    virtual time: exactly, whatever the machine's load, where the real clock gave only a
    lower bound."""
    vt = VirtualTime()
    sent: list[tuple[str, float]] = []
    standin.plans["/r"] = [recorded(vt, sent, "/r", ok())]
    async with virtual_client(standin.url, vt, rate=10.0, concurrency=4) as c:
        c._session = Tracked(c._session, vt)  # type: ignore[assignment]
        await vt.run(asyncio.gather(*(c.request("GET", "/r") for _ in range(11))))
    assert [t for _, t in sent] == pytest.approx([i / 10 for i in range(11)])


async def test_queued_requests_take_their_token_when_they_go_out(standin: StandIn) -> None:
    # Two slow requests hold both slots until t=1; the two queued behind them must not have
    # taken their tokens while queued and then leave together when the slots free up.
    vt = VirtualTime()
    sent: list[tuple[str, float]] = []

    async def slow() -> web.Response:
        sent.append(("/slow", vt.now))
        await vt.handler_sleep_until(1.0)
        return web.Response(text="{}")

    def fast() -> web.Response:
        sent.append(("/fast", vt.now))
        return web.Response(text="{}")

    standin.plans["/slow"] = [slow]
    standin.plans["/fast"] = [fast]
    async with virtual_client(standin.url, vt, rate=10.0, concurrency=2) as c:
        c._session = Tracked(c._session, vt)  # type: ignore[assignment]
        paths = ["/slow", "/slow", "/fast", "/fast", "/fast"]
        await vt.run(asyncio.gather(*(c.request("GET", p) for p in paths)))
    times = [t for _, t in sent]
    assert [p for p, _ in sent] == paths
    assert times[:2] == pytest.approx([0.0, 0.1])
    assert times[2] == pytest.approx(1.0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g >= 0.1 - 1e-9 for g in gaps), times  # never faster than --rate 10


async def test_retry_after_holds_requests_already_waiting_for_a_token(standin: StandIn) -> None:
    # /b is asleep in the bucket (rate 1/s) when /a gets a 429 with Retry-After: 10. It must not
    # go out at t=1 but after the pause, and the requests the pause releases keep the rate.
    vt = VirtualTime()
    sent: list[tuple[str, float]] = []

    standin.plans["/a"] = [recorded(vt, sent, "/a", status(429, **{"Retry-After": "10"})),
                           recorded(vt, sent, "/a", ok())]
    standin.plans["/b"] = [recorded(vt, sent, "/b", ok())]
    standin.plans["/c"] = [recorded(vt, sent, "/c", ok())]
    async with virtual_client(standin.url, vt, rate=1.0, concurrency=4) as c:
        c._session = Tracked(c._session, vt)  # type: ignore[assignment]
        await vt.run(asyncio.gather(*(c.request("GET", p) for p in ("/a", "/b", "/c"))))
    assert sent[0] == ("/a", 0.0)
    assert all(t >= 10.0 for _, t in sent[1:]), sent  # nothing during the pause
    times = [t for _, t in sent]
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(times[1:])), sent
    assert sorted(p for p, _ in sent) == ["/a", "/a", "/b", "/c"]
    assert c.retries == 1


SIGNATURE = "X-Amz-Signature=5ecret5ignature"
CREDENTIAL = "X-Amz-Credential=AKIDSECRETCRED"
SIGNED_QUERY = f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&{CREDENTIAL}&{SIGNATURE}#frag"


SIGNED_PARTS = ("5ecret5ignature", "AKIDSECRETCRED")


def assert_unsigned(*texts: str) -> None:
    for text in texts:
        assert all(part not in text for part in SIGNED_PARTS), text


def test_strip_query_and_redact_urls() -> None:
    url = f"https://user:pw@bucket.s3.amazonaws.com/cam/a.jpg{SIGNED_QUERY}"
    assert strip_query(url) == "https://bucket.s3.amazonaws.com/cam/a.jpg"
    assert strip_query("s3://bucket/a.jpg?versionId=3") == "s3://bucket/a.jpg"
    text = f"InvalidURL: {url} and URL('{url}') then 'http://h/x?{SIGNATURE}'"
    assert redact_urls(text) == (
        "InvalidURL: https://user:pw@bucket.s3.amazonaws.com/cam/a.jpg and "
        "URL('https://user:pw@bucket.s3.amazonaws.com/cam/a.jpg') then 'http://h/x'"
    )


async def test_signed_url_stays_out_of_retry_logs_and_errors(
    standin: StandIn, shown: Shown
) -> None:
    standin.plans["/bucket/a.jpg"] = [status(503)]

    async def no_sleep(_: float) -> None:
        pass

    other = standin.url.replace("127.0.0.1", "localhost")  # the image is on "another host"
    async with client(other, retry=RetryPolicy(attempts=3), sleep=no_sleep) as c:
        with pytest.raises(HTTPError) as info:
            await c.request("GET", f"{standin.url}/bucket/a.jpg{SIGNED_QUERY}")
    assert standin.hits[0][0] == f"/bucket/a.jpg{SIGNED_QUERY.split('#')[0]}"  # sent in full
    assert [e["event"] for e in shown.events] == ["http_retry", "http_retry"]
    assert all(e["url"] == "/bucket/a.jpg" for e in shown.events)
    assert str(info.value) == "GET /bucket/a.jpg: gave up after 3 tries: HTTP 503"
    assert_unsigned(str(info.value), repr(info.value), repr(info.value.args))
    shown.assert_never_shown(*SIGNED_PARTS)


async def test_signed_url_in_no_output_of_a_pull(
    standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: Shown,
) -> None:
    """Tasks whose images are presigned URLs that fail: the signature is in no output line."""
    from lyoncam_daemon.cli import main

    config = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" '
              'toName="image"><Label value="Car"/></RectangleLabels></View>')
    tasks = [
        {"id": 1, "data": {"image": f"{standin.url}/bucket/CAM_A_20261126T001503Z.jpg"
                                    + SIGNED_QUERY},
         "annotations": [{"id": 1, "result": []}]},
        {"id": 2, "data": {"image": f"s3://bucket/CAM_A_20261126T001603Z.jpg{SIGNED_QUERY}"},
         "annotations": [{"id": 2, "result": []}]},
    ]
    standin.plans["/api/projects/1"] = [lambda: web.json_response({"id": 1,
                                                                    "label_config": config})]
    standin.plans["/api/tasks/"] = [lambda: web.json_response({"tasks": tasks, "total": 2})]
    standin.plans["/bucket/CAM_A_20261126T001503Z.jpg"] = [status(503)]
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", KEY)
    args = ["pull", "--url", standin.url, "--project", "1", "--out", str(tmp_path / "ds"),
            "--rate", "0", "--retries", "1", "--progress", "log", "-v"]
    code = await asyncio.to_thread(main, args)
    out, err = shown.read()
    assert code == 1
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    retries = [r for r in records if r["event"] == "http_retry"]
    assert retries and all(r["url"] == "/bucket/CAM_A_20261126T001503Z.jpg" for r in retries)
    assert ("failed: task 1 (CAM_A_20261126T001503Z): GET /bucket/CAM_A_20261126T001503Z.jpg: "
            "gave up after 2 tries: HTTP 503") in out
    assert "failed: task 2 (CAM_A_20261126T001603Z): image reference " \
        "'s3://bucket/CAM_A_20261126T001603Z.jpg' is not fetchable" in out
    shown.assert_never_shown(KEY, *SIGNED_PARTS)


CAR_CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" '
              'toName="image"><Label value="Car"/></RectangleLabels></View>')


def tiny_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "JPEG")
    return buf.getvalue()


async def test_signed_url_in_no_log_event_of_a_library_pull(
    standin: StandIn, tmp_path: Path, shown: Shown
) -> None:
    """run_pull itself, debug events included: one presigned image fetched (on another origin),
    one failing with retries; the signature is in no event and the key in no output."""
    image = tiny_jpeg()
    tasks = [
        {"id": 1, "data": {"image": f"{standin.url}/bucket/CAM_A_20261126T001503Z.jpg"
                                    + SIGNED_QUERY},
         "annotations": [{"id": 1, "result": []}]},
        {"id": 2, "data": {"image": f"{standin.url}/bucket/CAM_A_20261126T001603Z.jpg"
                                    + SIGNED_QUERY},
         "annotations": [{"id": 2, "result": []}]},
    ]
    standin.plans["/api/projects/1"] = [ok(json.dumps({"id": 1, "label_config": CAR_CONFIG}))]
    standin.plans["/api/tasks/"] = [ok(json.dumps({"tasks": tasks, "total": 2}))]
    standin.plans["/bucket/CAM_A_20261126T001503Z.jpg"] = [lambda: web.Response(body=image)]
    standin.plans["/bucket/CAM_A_20261126T001603Z.jpg"] = [status(503)]

    async def no_sleep(_: float) -> None:
        pass

    own = standin.url.replace("127.0.0.1", "localhost")  # images on "another host"
    async with client(own, retry=RetryPolicy(attempts=2), sleep=no_sleep) as c:
        summary = await run_pull(c, PullOptions(project=1, out=tmp_path / "ds"))
    assert (summary.fetched, summary.failed) == (1, 1)
    events = {e["event"] for e in shown.events}
    assert {"image_fetched", "http_retry", "image_failed"} <= events, events
    shown.assert_never_shown(KEY, *SIGNED_PARTS)
    # Nor in any file of the dataset: the manifest keeps the source without its query.
    written = [p for p in (tmp_path / "ds").rglob("*") if p.is_file()]
    assert any(p.name == ".lyoncam-pull.json" for p in written)
    leaked = [(p.name, part) for p in written for part in SIGNED_PARTS
              if part.encode() in p.read_bytes()]
    assert leaked == []


async def test_leak_check_catches_a_key_logged_by_library_code(
    standin: StandIn, shown: Shown, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check can fail: a client that logs its Authorization header is caught by the
    captured log events (nothing reaches stdout or stderr here)."""
    leak_header_in_debug_log(monkeypatch)
    standin.plans["/api/projects/1"] = [ok('{"id": 1}')]
    async with client(standin.url) as c:
        await c.get_project(1)
    assert shown.read() == ("", "")
    with pytest.raises(AssertionError, match="appears in log events"):
        shown.assert_never_shown(KEY)


@pytest.mark.parametrize("leak", [False, True])
async def test_leak_check_catches_a_key_logged_by_the_cli(
    standin: StandIn, tmp_path: Path, shown: Shown, monkeypatch: pytest.MonkeyPatch, leak: bool
) -> None:
    """The same check over a whole CLI pull (log lines rendered to stderr): it fails when the
    client logs its header, and passes on the same pull without that leak."""
    from lyoncam_daemon.cli import main

    if leak:
        leak_header_in_debug_log(monkeypatch)
    standin.plans["/api/projects/1"] = [ok(json.dumps({"id": 1, "label_config": CAR_CONFIG}))]
    standin.plans["/api/tasks/"] = [ok('{"tasks": [], "total": 0}')]
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", KEY)
    args = ["pull", "--url", standin.url, "--project", "1", "--out", str(tmp_path / "ds"),
            "--rate", "0", "--progress", "log", "-v"]
    assert await asyncio.to_thread(main, args) == 0
    if leak:
        with pytest.raises(AssertionError, match="appears in stderr"):
            shown.assert_never_shown(KEY)
    else:
        shown.assert_never_shown(KEY)


def leak_header_in_debug_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the client log the Authorization header it sends: the bug the checks must catch."""
    original = LabelStudioClient._auth_header

    async def leaky(self: LabelStudioClient) -> str:
        header = await original(self)
        structlog.get_logger("leak").debug("auth_header", header=header)
        return header

    monkeypatch.setattr(LabelStudioClient, "_auth_header", leaky)
