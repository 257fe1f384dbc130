"""Tell a supervising systemd how the daemon is doing (sd_notify), with no library.

The protocol is one AF_UNIX datagram of ``KEY=VALUE`` lines to the socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means Linux's abstract namespace). Outside systemd the
variable is unset and every call does nothing, so the daemon never needs to know how it was
started. A failed send is never fatal: capture matters more than telling systemd about it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog


def _address(path: str) -> str | bytes | None:
    if path.startswith("@"):
        return b"\0" + path[1:].encode()  # abstract namespace: no file on disk
    if path.startswith("/"):
        return path
    return None  # vsock and other addresses systemd may pass are not ours to handle


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between two WATCHDOG=1, or None when systemd is not watching this process.

    Half of ``WatchdogSec``, as sd_watchdog_enabled(3) advises; ``WATCHDOG_PID``, when set,
    must be ours (a child inheriting the environment must not feed its parent's watchdog).
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2_000_000


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends sd_notify messages; a no-op without a socket."""

    def __init__(self, socket_path: str | None) -> None:
        self.address = _address(socket_path) if socket_path else None
        self.log = structlog.get_logger("lyoncam.notify")
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """One datagram with every field; True when it was sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self._warned:  # once: a gone socket would otherwise log every watchdog tick
                self._warned = True
                self.log.warning("systemd notification not sent", error=exc.strerror or str(exc))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send(READY=1, **_status(status))

    def reloading(self, status: str = "reloading the configuration") -> bool:
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), **_status(status))

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(STOPPING=1, **_status(status))

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)


def _status(text: str) -> dict[str, str]:
    # STATUS is one line shown by `systemctl status`; a newline would start a new field.
    return {"STATUS": " ".join(text.split())} if text else {}
