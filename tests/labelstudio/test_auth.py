"""Key loading, legacy/PAT detection, access-token refresh timing and redaction (pure)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import structlog

from lyoncam_daemon.labelstudio.auth import (
    ENV_KEY,
    AuthError,
    Credentials,
    Secret,
    load_token,
    token_kind,
)
from lyoncam_daemon.labelstudio.pull.command import setup_logging

from .helpers import jwt

LEGACY = "0123456789abcdef0123456789abcdef01234567"


def test_kinds() -> None:
    assert token_kind(Secret(LEGACY)) == "legacy"
    assert token_kind(Secret(jwt({"token_type": "refresh", "exp": 9e9}))) == "pat"
    assert token_kind(Secret("a.b.c")) == "legacy"
    assert token_kind(Secret("eyJub3Rqc29u.eyJ4IjoxfQ.sig")) == "legacy"  # header without alg


def test_load_from_env_and_file(tmp_path: Path) -> None:
    assert load_token({ENV_KEY: f"  {LEGACY}\n"}).reveal() == LEGACY
    f = tmp_path / "key"
    f.write_text(f"\n{LEGACY}\n")
    assert load_token({ENV_KEY: "other"}, f).reveal() == LEGACY  # the file wins
    with pytest.raises(AuthError, match=ENV_KEY):
        load_token({})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(AuthError, match="empty"):
        load_token({}, tmp_path / "empty")
    with pytest.raises(AuthError, match="cannot read"):
        load_token({}, tmp_path / "missing")


def test_secret_never_shows() -> None:
    secret = Secret(LEGACY)
    creds = Credentials(secret)
    texts = [repr(secret), str(secret), f"{secret}", f"{secret!r}", repr(creds), str(creds),
             str([secret]), str({"k": secret}), "%s" % secret]  # noqa: UP031
    assert all(LEGACY not in s for s in texts)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(secret)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secret_in_a_log_line_is_rendered_masked(
    fmt: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Secret passed to a log call goes through the pull's own log set-up (the daemon's
    renderers, on stderr) masked; the same line with the bare key shows it, so this can fail."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # set-up replaces it
    setup_logging(fmt, verbose=True, bar=False)
    try:
        structlog.get_logger("t").info("key", secret=Secret(LEGACY),
                                       creds=Credentials(Secret(LEGACY)))
        masked = capsys.readouterr().err
        structlog.get_logger("t").info("key", secret=LEGACY)
        bare = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
    assert "key" in masked and "***" in masked and LEGACY not in masked
    assert LEGACY in bare


async def test_legacy_header_never_refreshes() -> None:
    async def refresh(_: Secret) -> Secret:
        raise AssertionError("legacy keys are not refreshed")

    creds = Credentials(Secret(LEGACY))
    assert await creds.header(refresh) == f"Token {LEGACY}"


async def test_access_token_refreshed_before_expiry() -> None:
    now = [1_000_000.0]
    calls: list[str] = []

    async def refresh(pat: Secret) -> Secret:
        calls.append(pat.reveal())
        return Secret(jwt({"token_type": "access", "exp": now[0] + 300}))

    pat = jwt({"token_type": "refresh", "exp": 9e9})
    creds = Credentials(Secret(pat), clock=lambda: now[0])
    first = await creds.header(refresh)
    assert first.startswith("Bearer ") and pat not in first and calls == [pat]
    now[0] += 200  # 100 s left: more than the 60 s margin, keep it
    assert await creds.header(refresh) == first and len(calls) == 1
    now[0] += 50  # 50 s left: refresh now, before it expires mid-request
    assert await creds.header(refresh) != first and len(calls) == 2
    creds.invalidate()
    await creds.header(refresh)
    assert len(calls) == 3


async def test_access_without_exp_assumes_five_minutes() -> None:
    now = [0.0]

    async def refresh(_: Secret) -> Secret:
        return Secret("opaque-access")

    creds = Credentials(Secret(jwt({"exp": 9e9})), clock=lambda: now[0])
    await creds.header(refresh)
    now[0] = 230
    assert not creds.needs_refresh()
    now[0] = 250
    assert creds.needs_refresh()


@pytest.mark.parametrize("command", ["pull", "push"])
@pytest.mark.parametrize("key", ["abc123\r\nX-Injected: 1", "abc\x00def", "abc def"])
def test_a_key_with_a_line_break_or_control_character_is_one_line(
    command: str, key: str, tmp_path: Path,
) -> None:
    """Pasted with its end of line (or worse): one line naming where the key came from,
    never the key itself, never a traceback from the HTTP library."""
    import os
    import subprocess
    import sys

    args = {"pull": ["--project", "1", "--out", str(tmp_path / "ds")],
            "push": ["--project", "1", "--n", "1", "--data-dir", str(tmp_path)]}[command]
    if "\x00" in key:  # no NUL in an environment variable: it comes from a token file
        (tmp_path / "key").write_bytes(key.encode())
        args += ["--token-file", str(tmp_path / "key")]
        env = {k: v for k, v in os.environ.items() if k != "LABEL_STUDIO_API_KEY"}
    else:
        env = {**os.environ, "LABEL_STUDIO_API_KEY": key}
    import socket

    with socket.socket() as server:  # a port that takes connections (and never answers)
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        proc = subprocess.run([sys.executable, "-m", "lyoncam_daemon", command, "--url", url,
                               "--rate", "0", *args],
                              capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "space, a line break or a control character" in line
    assert "abc" not in line
