"""Label Studio credentials: where the key comes from, which kind it is, and the header to send.

Two kinds of key exist. A legacy token (40 hex characters) goes as ``Authorization: Token <key>``.
A personal access token (PAT) is a JWT *refresh* token: it is exchanged at
``POST /api/token/refresh/`` for a short-lived access token (300 s on Label Studio 1.23), sent as
``Authorization: Bearer <access>`` and exchanged again shortly before it expires.

The key never leaves this module in clear except inside the Authorization header: `Secret`
redacts itself in ``repr``/``str``/f-strings, and no error message quotes it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lyoncam_daemon.config.files import SmallFileError, read_small_file

ENV_KEY = "LABEL_STUDIO_API_KEY"
REFRESH_MARGIN_S = 60.0
"""Exchange the PAT for a new access token this long before the current one expires."""

DEFAULT_ACCESS_LIFETIME_S = 300.0
"""Assumed lifetime of an access token whose `exp` claim cannot be read."""

TokenKind = Literal["legacy", "pat"]

LEGACY_HELP = (
    "Label Studio 1.20 and later take legacy tokens only if enabled (Organization > Access Token "
    "Settings, or server flag --enable-legacy-api-token)."
)
UNAUTHORIZED_HELP = (
    "Label Studio refused the key (HTTP 401). Keys: personal access token (JWT, 'eyJ...') or "
    "legacy token (40 hex), in Account & Settings. " + LEGACY_HELP
)
"""One line, under 300 characters with its ``error: `` prefix: what to check, not a manual."""

PAT_REFUSED_HELP = (
    "Label Studio refused the personal access token (HTTP {status}): revoked, expired, another "
    "server's? Make a new one, or use a legacy token. " + LEGACY_HELP
)


class AuthError(Exception):
    """The key is missing, unreadable or refused. Messages never contain the key."""


class Secret:
    """A string that does not show itself: repr, str and format all give ``'***'``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:  # never pickle the value into a crash dump or a queue
        raise TypeError("Secret cannot be pickled")


def load_token(env: Mapping[str, str] | None = None, token_file: Path | None = None) -> Secret:
    """The key from ``--token-file`` (first non-empty line) if given, else from the environment."""
    if token_file is not None:
        try:
            text = read_small_file(token_file).decode("utf-8")
        except (SmallFileError, UnicodeDecodeError) as exc:
            reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
            raise AuthError(f"cannot read token file {token_file}: {reason}") from None
        for line in text.splitlines():
            if line.strip():
                return _checked(line.strip(), f"token file {token_file}")
        raise AuthError(f"token file {token_file} is empty")
    value = (os.environ if env is None else env).get(ENV_KEY, "").strip()
    if not value:
        raise AuthError(
            f"no Label Studio key: set {ENV_KEY} or pass --token-file "
            "(a personal access token or a legacy token, from Account & Settings)"
        )
    return _checked(value, ENV_KEY)


def _checked(value: str, where: str) -> Secret:
    """The key, if it can go in a header: a line break or a control character in it (a
    key pasted with its end of line) would make every request fail with a traceback."""
    if not value.isprintable() or any(c.isspace() for c in value):
        raise AuthError(f"the key in {where} holds a space, a line break or a control "
                        "character: copy the key alone")
    return Secret(value)


def _b64json(part: str) -> dict[str, Any] | None:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT (signature not checked: the server does that), or None if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return None
    header = _b64json(parts[0])
    if header is None or "alg" not in header:
        return None
    return _b64json(parts[1])


def token_kind(token: Secret) -> TokenKind:
    """A JWT is a personal access token; anything else is a legacy token."""
    return "pat" if jwt_claims(token.reveal()) is not None else "legacy"


def jwt_expiry(token: str) -> float | None:
    claims = jwt_claims(token)
    if claims is None:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None


Refresher = Callable[[Secret], Awaitable[Secret]]
"""Exchanges a PAT (refresh token) for an access token; provided by the HTTP client."""


@dataclass
class Credentials:
    """Produces the Authorization header, refreshing the PAT's access token before expiry.

    ``clock`` is wall-clock seconds (JWT ``exp`` is a Unix time); injectable for tests.
    """

    token: Secret
    clock: Callable[[], float] = time.time
    kind: TokenKind = field(init=False)
    _access: Secret | None = field(default=None, init=False)
    _access_expires: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.kind = token_kind(self.token)

    def __repr__(self) -> str:
        return f"Credentials(kind={self.kind!r}, token=***)"

    def needs_refresh(self) -> bool:
        if self.kind == "legacy":
            return False
        return self._access is None or self.clock() >= self._access_expires - REFRESH_MARGIN_S

    def set_access(self, access: Secret) -> None:
        self._access = access
        expiry = jwt_expiry(access.reveal())
        self._access_expires = (
            expiry if expiry is not None else self.clock() + DEFAULT_ACCESS_LIFETIME_S
        )

    def invalidate(self) -> None:
        """Forget the access token (e.g. after a 401) so the next header refreshes it."""
        self._access = None

    async def header(self, refresh: Refresher) -> str:
        if self.kind == "legacy":
            return f"Token {self.token.reveal()}"
        if self.needs_refresh():
            self.set_access(await refresh(self.token))
        assert self._access is not None
        return f"Bearer {self._access.reveal()}"
