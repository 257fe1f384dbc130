"""The command line: `check` finds what would stop `run`, `--help` stays cheap, and every
config `simulate --write-config` writes passes `check`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lyoncam_daemon.cli import build_parser, main
from lyoncam_daemon.config import model as config_module
from lyoncam_daemon.devtools.simulator import camera_ids, demo_config

REPO = Path(__file__).resolve().parents[1]
CAMERA = "cameras:\n  - id: A1\n    url: http://127.0.0.1:8090/a.jpg\n"

#: What `--help` must not load: the capture and pull machinery, and the config schema.
HEAVY = {"aiohttp", "PIL", "numpy", "scipy", "imagehash", "pydantic", "yaml", "structlog", "tqdm"}


def imported_by(*argv: str) -> set[str]:
    """Top-level packages a fresh `python -m lyoncam_daemon ARGV` imports (-X importtime)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lyoncam_daemon", *argv],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    return {line.rsplit("|", 1)[-1].strip().split(".")[0]
            for line in proc.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("command", [[], ["run"], ["check"], ["simulate"], ["discover"]])
def test_help_imports_nothing_heavy(command: list[str]) -> None:
    # `pull --help` may load pull's own modules (its flags are defined beside them).
    modules = imported_by(*command, "--help")
    assert "lyoncam_daemon" in modules  # the measure works
    assert modules & HEAVY == set()


def test_the_heavy_modules_are_seen_when_a_command_loads_them() -> None:
    # The same measure on a module that does load them: the test above cannot pass vacuously.
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import lyoncam_daemon.capture.daemon"],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )
    seen = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines()}
    assert {"aiohttp", "PIL", "numpy", "pydantic"} <= seen


# --- check: data_dir ------------------------------------------------------------------------


def check(cfg: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check", "--config", str(cfg)])
    return code, capsys.readouterr().err.strip()


def test_check_refuses_a_data_dir_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "frames").write_text("not a folder")
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text("data_dir: frames\n" + CAMERA)
    assert check(cfg, capsys) == (
        2, f"error: {cfg}: data_dir {tmp_path / 'frames'} is not a folder")

    cfg.write_text("data_dir: frames/2026\n" + CAMERA)
    assert check(cfg, capsys) == (
        2, f"error: {cfg}: data_dir {tmp_path / 'frames/2026'} would be inside "
        f"{tmp_path / 'frames'}, which is not a folder")


def run_quickly(cfg: Path) -> tuple[int, str]:
    """`run` in its own process: the exit code and the last line of stderr."""
    proc = subprocess.run([sys.executable, "-m", "lyoncam_daemon", "run", "--config", str(cfg),
                           "--status-port", "0"], capture_output=True, text=True, timeout=60,
                          cwd=REPO)
    return proc.returncode, proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("place", ["/proc", "/sys"])
def test_check_refuses_the_data_dir_run_refuses_with_the_same_line(
    place: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """/proc and /sys look writable to root but take no folder: `check` finds it by doing
    what `run` does first (one function for both), not from permission bits."""
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f"data_dir: {place}/lyoncam\n" + CAMERA)
    code, line = check(cfg, capsys)
    assert code == 2
    assert line.startswith(f"error: {cfg}: data_dir {place}/lyoncam: cannot create folders "
                           f"there (in {place}): ")
    assert "\n" not in line
    assert run_quickly(cfg) == (2, line)


@pytest.mark.parametrize("what", ["/dev/zero", "fifo", "folder"])
def test_a_credentials_file_that_is_no_file_is_one_line_in_check_and_run(
    what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Read bounded and only if a regular file: /dev/zero never ends, a FIFO waits for a
    writer forever, a folder cannot be read."""
    path = Path(what) if what.startswith("/") else tmp_path / what
    if what == "fifo":
        os.mkfifo(path)
    elif what == "folder":
        path.mkdir()
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nstorage:\n  kind: s3\n  bucket: frames\n"
                   f"  credentials_file: {path}\n" + CAMERA)
    expected = f"error: {cfg}: storage: storage.credentials_file {path}: not a regular file"
    assert check(cfg, capsys) == (2, expected)
    assert run_quickly(cfg) == (2, expected)


def test_check_accepts_a_data_dir_still_to_be_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text("data_dir: not/yet/there\n" + CAMERA)
    assert main(["check", "--config", str(cfg)]) == 0
    assert not (tmp_path / "not").exists()  # check creates nothing
    assert "OK: 1 camera (1 enabled)" in capsys.readouterr().out


def test_check_refuses_a_huge_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cameras.yaml"
    with cfg.open("wb") as f:
        f.truncate(50_000_000)
    limit = config_module.MAX_CONFIG_BYTES
    assert check(cfg, capsys) == (
        2, f"error: {cfg}: 50000000 bytes is over the {limit}-byte limit for a config file")


# --- simulate --write-config ----------------------------------------------------------------


def test_simulate_refuses_an_interval_check_would_refuse(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--interval", "5", "--write-config", "unused.yaml"])
    assert info.value.code == 2
    assert "argument --interval: must be from 10 to 604800 s, not 5" in capsys.readouterr().err


_NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10, 10**7).map(str),
    st.sampled_from(["5", "9.999", "10", "1e1", "1e9", "nan", "inf", "-10", "ten"]),
)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(interval=_NUMBER_TEXT, cameras=st.integers(1, 40),
       data_dir=st.sampled_from(["./demo-data", "demo data", "données/caméras", "/tmp/lyoncam-x"]),
       port=st.integers(1, 65535))
def test_every_config_write_config_writes_passes_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
    interval: str, cameras: int, data_dir: str, port: int,
) -> None:
    """Either `--interval` is a usage error, or the file written passes `check`."""
    try:
        args = build_parser().parse_args(
            ["simulate", "--cameras", str(cameras), "--interval", interval,
             "--data-dir", data_dir, "--write-config", "x.yaml"])
    except SystemExit as exc:
        assert exc.code == 2
        capsys.readouterr()
        return
    # What `simulate` writes once it listens (simulator._serve), at the URL it listens on.
    text = demo_config(f"http://127.0.0.1:{port}", camera_ids(args.cameras), args.data_dir,
                       args.interval)
    cfg = tmp_path / "sim.yaml"
    cfg.write_text(text)
    code = main(["check", "--config", str(cfg)])
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), text
    assert f"OK: {cameras} camera" in out
