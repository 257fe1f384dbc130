"""sd_notify: the datagrams a real AF_UNIX socket receives, and silence without one."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.capture.notify import Notifier, monotonic_usec, watchdog_interval
from lyoncam_daemon.devtools.simulator import CriterSimulator, camera_ids
from tests.conftest import make_config


def _fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().splitlines())


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's, on a path."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def test_ready_is_one_datagram_with_its_status(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert Notifier(path).ready("capturing 3\ncameras")
    assert _fields(sock.recv(4096)) == {"READY": "1", "STATUS": "capturing 3 cameras"}


def test_reloading_carries_the_monotonic_clock(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    before = monotonic_usec()
    Notifier(path).reloading()
    got = _fields(sock.recv(4096))
    assert got["RELOADING"] == "1"
    assert before <= int(got["MONOTONIC_USEC"]) <= monotonic_usec()


def test_stopping_and_watchdog(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier(path)
    notifier.stopping()
    notifier.watchdog()
    assert _fields(sock.recv(4096))["STOPPING"] == "1"
    assert _fields(sock.recv(4096)) == {"WATCHDOG": "1"}


def test_abstract_namespace_socket() -> None:
    name = f"lyoncam-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        assert Notifier.from_env({"NOTIFY_SOCKET": f"@{name}"}).ready()
        assert _fields(sock.recv(4096)) == {"READY": "1"}


def test_nothing_is_sent_without_notify_socket() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert not notifier.ready()


def test_a_gone_socket_is_not_fatal(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert not notifier.ready()
    assert not notifier.watchdog()


def test_watchdog_interval_is_half_of_watchdog_usec_for_our_pid_only() -> None:
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "zero"}) is None
    assert watchdog_interval({}) is None


async def test_daemon_says_ready_feeds_the_watchdog_and_says_stopping(
    tmp_path: Path, listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock, path = listener
    sock.setblocking(False)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # fed every 0.05 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    loop = asyncio.get_running_loop()
    ids = camera_ids(2)
    async with CriterSimulator(ids, period=0.5) as sim:
        config = make_config(tmp_path / "data", {i: sim.url(i) for i in ids})
        daemon = Daemon(config, notifier=Notifier(path))
        task = asyncio.create_task(daemon.run())
        first = _fields(await loop.sock_recv(sock, 4096))
        assert first["READY"] == "1"
        assert daemon.registry is not None and len(daemon.registry) == 2  # all scheduled
        watchdogs = 0
        while watchdogs < 3:
            watchdogs += _fields(await loop.sock_recv(sock, 4096)).get("WATCHDOG") == "1"
        daemon.request_stop()
        while "STOPPING" not in _fields(await loop.sock_recv(sock, 4096)):
            pass
        assert await asyncio.wait_for(task, 15) == 0
