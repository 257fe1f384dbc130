"""`pull` on the command line: usage errors are immediate (exit 2), failures are one line (exit 1),
log lines in the daemon's format.

No Label Studio needed: nothing here gets as far as a working server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lyoncam_daemon.cli import main
from lyoncam_daemon.labelstudio.pull import command as ls_cli

from .helpers import KEY, Shown, closed_port


def pull(tmp_path: Path, *args: str) -> list[str]:
    argv = ["pull", "--out", str(tmp_path / "ds"), "--rate", "0", "--progress", "log", *args]
    if "--url" not in args:
        argv += ["--url", "http://127.0.0.1:9"]
    if "--project" not in args:
        argv += ["--project", "1"]
    return argv


@pytest.mark.parametrize(
    ("url", "displayed", "problem"),
    [
        ("127.0.0.1:9", "127.0.0.1:9", "must be an http:// or https:// URL"),
        ("localhost:8080", "localhost:8080", "must be an http:// or https:// URL"),
        ("ftp://127.0.0.1/", "ftp://127.0.0.1/", "must be an http:// or https:// URL"),
        ("http://", "http://", "must be an http:// or https:// URL"),
        ("user:pw@127.0.0.1:9?sig=s3cr3t", "***@127.0.0.1:9", "must be an http:// or https:// URL"),
        ("http://127.0.0.1:99999", "http://127.0.0.1:99999",
         "the port must be a number from 1 to 65535"),
        ("http://me:pw@127.0.0.1:9/?sig=s3cr3t", "http://***@127.0.0.1:9/",
         "no user:password@ in the URL: the key goes in LABEL_STUDIO_API_KEY or --token-file"),
    ],
)
def test_bad_url_is_an_immediate_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    url: str, displayed: str, problem: str,
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", KEY)
    monkeypatch.setattr(ls_cli, "LabelStudioClient", no_client)
    code = main(pull(tmp_path, "--url", url))
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [f"error: --url '{displayed}': {problem}"]
    assert "pw" not in err and "s3cr3t" not in err
    assert not (tmp_path / "ds").exists()


def no_client(*args: object, **kwargs: object) -> None:
    """Stands in for LabelStudioClient where a usage error must come before any request."""
    raise AssertionError("a client was built: the usage error was not immediate")


def test_bad_url_message_is_exactly_as_documented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", KEY)
    assert main(pull(tmp_path, "--url", "127.0.0.1:9")) == 2
    assert capsys.readouterr().err == (
        "error: --url '127.0.0.1:9': must be an http:// or https:// URL\n")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--project", "-1", "must be a positive integer"),
        ("--project", "0", "must be a positive integer"),
        ("--project", "x", "'x' is not an integer"),
        ("--rate", "-0.5", "must be 0 or more"),
        ("--rate", "nan", "'nan' is not a number"),
        ("--concurrency", "0", "must be a positive integer"),
        ("--concurrency", "-3", "must be a positive integer"),
        ("--val-fraction", "1", "must be at least 0 and less than 1"),
        ("--val-fraction", "-0.1", "must be at least 0 and less than 1"),
        ("--val-fraction", "nan", "'nan' is not a number"),
        ("--page-size", "0", "must be a positive integer"),
        ("--retries", "-1", "must be 0 or more"),
        ("--split-hours", "0", "must be more than 0"),
        ("--timeout", "0", "must be more than 0"),
    ],
)
def test_bad_numbers_are_argparse_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    option: str, value: str, message: str,
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", KEY)
    with pytest.raises(SystemExit) as info:
        main(pull(tmp_path, option, value))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {option}: {message}" in err
    assert err.startswith("usage: ")


@pytest.mark.parametrize(
    ("option", "value", "parsed"),
    [("--project", "7", 7), ("--rate", "0", 0.0), ("--concurrency", "1", 1),
     ("--val-fraction", "0", 0.0), ("--val-fraction", "0.99", 0.99), ("--retries", "0", 0)],
)
def test_edge_values_are_accepted(option: str, value: str, parsed: float) -> None:
    from lyoncam_daemon.cli import build_parser

    argv = ["pull", "--url", "http://127.0.0.1:9", "--project", "1", "--out", "ds",
            option, value]
    got = getattr(build_parser().parse_args(argv), option[2:].replace("-", "_"))
    assert (got, type(got)) == (parsed, type(parsed))


def refused_pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: Shown,
                 *extra: str) -> list[str]:
    """A pull that logs one http_retry warning, then fails: its stderr lines."""
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", KEY)
    url = f"http://127.0.0.1:{closed_port()}"
    assert main(pull(tmp_path, "--url", url, *extra)) == 1
    err = shown.read()[1]
    shown.assert_never_shown(KEY)
    lines = err.splitlines()
    assert lines[-1] == f"error: cannot reach Label Studio at {url}: connection refused"
    return lines[:-1]


@pytest.mark.parametrize("fmt", [None, "auto", "json"])
def test_log_lines_are_the_daemons_json_when_stderr_is_not_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: Shown, fmt: str | None,
) -> None:
    lines = refused_pull(tmp_path, monkeypatch, shown,
                         *(["--log-format", fmt] if fmt else []))
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == ["http_retry"]
    assert records[0]["level"] == "warning" and records[0]["url"] == "/api/projects/1"
    assert records[0]["timestamp"].endswith("Z")


@pytest.mark.parametrize("progress", ["log", "bar"])
def test_console_log_format_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: Shown, progress: str,
) -> None:
    lines = refused_pull(tmp_path, monkeypatch, shown, "--log-format", "console",
                         "--progress", progress)
    assert len(lines) == 1, lines
    assert re.fullmatch(r"\S+Z \[warning\s*\] http_retry\s+attempt=1 .*url=/api/projects/1",
                        lines[0]), lines[0]
    assert "\x1b[" not in lines[0]  # no colours when stderr is not a terminal


def test_tqdm_stream_passes_whole_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from lyoncam_daemon.labelstudio.progress import TqdmStream

    stream = TqdmStream()
    for part in ("one", "\n", "two\nthr", "ee\n"):
        stream.write(part)
    stream.write("four")
    stream.flush()
    assert capsys.readouterr().err == "one\ntwo\nthree\nfour\n"
    assert stream.isatty() is False
