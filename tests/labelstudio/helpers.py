"""Shared by the Label Studio tests: a key, a JWT maker, a loopback stand-in server, and `Shown`,
which collects everything lyoncam showed (stdout, stderr, structlog events) to check that a
secret is in none of it."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from aiohttp import web

KEY = "feedfacefeedfacefeedfacefeedfacefeedface"
"""A legacy-looking key for the stand-in tests (the real server's is conftest.USER_TOKEN)."""


def jwt(payload: dict[str, Any]) -> str:
    """An unsigned-looking JWT with this payload: enough for lyoncam to take it for a PAT."""

    def enc(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{enc({'alg': 'HS256', 'typ': 'JWT'})}.{enc(payload)}.c2lnbmF0dXJl"


def closed_port() -> int:
    """A loopback port nothing listens on (free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Step = Callable[[], Any]
"""Makes one answer: a web.StreamResponse, or a coroutine giving one."""


@dataclass
class StandIn:
    """A small aiohttp server on loopback answering each path from a plan of steps."""

    url: str = ""
    hits: list[tuple[str, str | None, float]] = field(default_factory=list)
    """(path with query, Authorization header, monotonic time) of every request."""
    plans: dict[str, list[Step]] = field(default_factory=dict)
    """path → answers in order; the last one repeats."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append((request.path_qs, request.headers.get("Authorization"),
                          time.monotonic()))
        plan = self.plans.get(request.path, [])
        if not plan:
            return web.Response(status=404, text="no plan")
        step = plan.pop(0) if len(plan) > 1 else plan[0]
        result = step()
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, web.StreamResponse)
        return result


def ok(text: str = "{}") -> Step:
    return lambda: web.Response(text=text, content_type="application/json")


def status(code: int, **headers: str) -> Step:
    return lambda: web.Response(status=code, headers=headers, text="x")


class Shown:
    """Everything lyoncam showed during a test: stdout, stderr (where the pull CLI's log lines
    go, rendered) and every structlog event logged by library code (captured as event dicts,
    debug included, before any renderer could drop or shorten a field).

    Read stdout/stderr through `read`, not capsys, so nothing escapes the check.
    """

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.out = ""
        self.err = ""
        self.events: list[MutableMapping[str, Any]] = []

    def capture(self, _logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        """A structlog processor: keep the event, print nothing."""
        self.events.append({**event, "log_level": method})
        raise structlog.DropEvent

    def read(self) -> tuple[str, str]:
        """stdout and stderr written since the last read (all of it stays in out/err too)."""
        out, err = self._capsys.readouterr()
        self.out += out
        self.err += err
        return out, err

    def assert_never_shown(self, *secrets: str) -> None:
        """No secret, nor its first 16 characters, in stdout, stderr or any log event."""
        self.read()
        places = {"stdout": self.out, "stderr": self.err, "log events": repr(self.events)}
        for secret in secrets:
            for needle in {secret, secret[:16]}:
                for where, text in places.items():
                    assert needle not in text, f"{needle[:6]}… appears in {where}"
