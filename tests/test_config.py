"""cameras.yaml validation: good files load, every bad one gives a file:line message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lyoncam_daemon.cli import main
from lyoncam_daemon.config import ConfigError, load_config, parse_config, parse_duration

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
data_dir: ./frames
defaults:
  interval: 60
cameras:
  - id: CWL9018
    url: https://example.invalid/CWL9018.JPG
    name: Pont Clemenceau
    lat: 45.77
    lon: 4.81
  - id: B2
    url: http://127.0.0.1:8080/B2.JPG
    interval: 2m
    enabled: false
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cameras.yaml", Path("/base"))
    return info.value.errors


def test_repo_cameras_yaml_lists_the_15_catalogue_cameras() -> None:
    import json

    config = load_config(REPO / "cameras.yaml")
    catalogue = json.loads((REPO / "tests/fixtures/pvocameracriter.geojson").read_text())
    expected = {f["properties"]["numeromaintenance"]: f for f in catalogue["features"]}
    assert {c.id for c in config.cameras} == set(expected)
    for cam in config.cameras:
        feature = expected[cam.id]
        assert cam.url == feature["properties"]["url"]
        assert (cam.lon, cam.lat) == pytest.approx(tuple(feature["geometry"]["coordinates"]))
        assert feature["properties"]["libellelong"] in cam.name
        assert cam.interval == 60


def test_defaults_apply_and_cameras_override() -> None:
    config = parse_config(GOOD, "cameras.yaml", Path("/base"))
    a, b = config.cameras
    assert a.interval == 60 and b.interval == 120
    assert a.timeout == 20 and a.truncated == "drop"
    assert config.data_dir == Path("/base/frames")
    assert [c.id for c in config.enabled_cameras] == ["CWL9018"]


@pytest.mark.parametrize(("value", "seconds"), [
    (60, 60.0), (12.5, 12.5), ("90s", 90.0), ("2m", 120.0), ("1h", 3600.0), ("500ms", 0.5),
])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(("text", "expected"), [
    ("cameras:\n  - id: A1\n    url: http://x/a\n    interval: 5\n",
     "cameras.yaml:4: camera 'A1': interval: must be at least 10 s"),
    ("cameras:\n  - id: A1\n    url: ftp://x/a\n",
     "cameras.yaml:3: camera 'A1': url: must be an http:// or https:// URL"),
    ("cameras:\n  - id: A1\n    url: http://x/a\n    intervall: 30\n",
     "cameras.yaml:4: camera 'A1': intervall: unknown key"),
    ("cameras:\n  - id: ../etc\n    url: http://x/a\n",
     "cameras.yaml:2: camera '../etc': id: must be 1-64 characters of A-Z a-z 0-9 _ -"),
    ("cameras:\n  - id: A1\n    url: http://x/a\n  - id: A1\n    url: http://x/b\n",
     "cameras.yaml:4: camera 'A1': id: duplicate id, first used by camera #1"),
    ("cameras:\n  - id: A1\n", "cameras.yaml:2: camera 'A1': url: required but missing"),
    ("cameras:\n  - id: A1\n    url: http://x/a\n    interval: soon\n",
     "cameras.yaml:4: camera 'A1': interval: must be a number of seconds or a duration "
     "such as '90s' or '2m'"),
    ("http:\n  max_concurrent: 0\ncameras: []\n",
     "cameras.yaml:2: http.max_concurrent: must be greater than or equal to 1"),
    ("cameras:\n  - id: A\n   url: x\n",
     "cameras.yaml:3: invalid YAML: expected <block end>, but found '<block mapping start>'"),
    ("- just a list\n", "cameras.yaml: must be a mapping with at least a `cameras:` list"),
    ("placeholder_sha256: [abc]\ncameras: []\n",
     "cameras.yaml:1: placeholder_sha256: 'abc' is not 64 lowercase hex digits"),
])
def test_each_error_names_file_line_camera_and_field(text: str, expected: str) -> None:
    assert errors_of(text) == [expected]


def test_bad_default_is_reported_once_at_the_defaults_line() -> None:
    text = "defaults:\n  interval: 3\ncameras:\n  - id: A\n    url: http://x/a\n"
    assert errors_of(text) == ["cameras.yaml:2: defaults.interval: must be at least 10 s"]


def test_all_errors_are_reported_not_just_the_first() -> None:
    text = ("cameras:\n  - id: A\n    url: http://x/a\n    interval: 1\n"
            "  - id: B\n    url: nope\n")
    assert len(errors_of(text)) == 2


def test_tests_may_lower_the_interval_floor() -> None:
    text = "cameras:\n  - id: A\n    url: http://x/a\n    interval: 0.2\n"
    config = parse_config(text, context={"min_interval": 0.05})
    assert config.cameras[0].interval == 0.2


def test_check_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    assert main(["check", "--config", str(good)]) == 0
    assert "OK: 2 cameras (1 enabled)" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras:\n  - id: A1\n    url: http://x/a\n    interval: 5\n")
    assert main(["check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {bad}:4: camera 'A1': interval: must be at least 10 s"

    assert main(["check", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: no such file" in capsys.readouterr().err


def test_run_refuses_an_invalid_file_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "cameras.yaml"
    bad.write_text("cameras:\n  - id: A1\n    url: http://x/a\n    colour: red\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lyoncam_daemon", "run", "--config", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad}:4: camera 'A1': colour: unknown key"
    assert "Traceback" not in proc.stderr


def test_every_command_has_help() -> None:
    for command in ("run", "check", "simulate", "pull"):
        proc = subprocess.run([sys.executable, "-m", "lyoncam_daemon", command, "--help"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "usage:" in proc.stdout


def test_whash_needs_a_power_of_two_hash_size() -> None:
    text = "dedup:\n  hash: whash\n  hash_size: 24\ncameras: []\n"
    assert errors_of(text) == ["cameras.yaml:1: dedup: hash_size must be a power of 2 for whash"]


@pytest.mark.parametrize(("text", "expected"), [
    ("cameras:\n  - id: A\n    url: http://x/a\n    interval: .nan\n",
     "cameras.yaml:4: camera 'A': interval: must be a number of seconds or a duration such as "
     "'90s' or '2m'"),
    ("cameras:\n  - id: A\n    url: http://x/a\n    interval: .inf\n",
     "cameras.yaml:4: camera 'A': interval: must be a number of seconds or a duration such as "
     "'90s' or '2m'"),
    ("http:\n  max_frame_bytes: '" + "9" * 400 + "GB'\ncameras: []\n",
     "cameras.yaml:2: http.max_frame_bytes: must be a number of bytes or a size such as '8MB'"),
    ("cameras: &a [*a]\n",
     "cameras.yaml:1: invalid YAML: anchors and aliases are not supported; use `defaults:` to "
     "share settings"),
    ("cameras: []\ncameras: []\n", "cameras.yaml:2: invalid YAML: duplicate key 'cameras'"),
    ("cameras:\n  - id: A\n    url: http://x/a\n    interval: 60\n    interval: 30\n",
     "cameras.yaml:5: invalid YAML: duplicate key 'interval'"),
    ("cameras:\n", "cameras.yaml:1: cameras: must be a list of cameras"),
    ("cameras: foo\n", "cameras.yaml:1: cameras: must be a list of cameras"),
    ('cameras:\n  - id: "A\\n"\n    url: http://x/a\n',
     "cameras.yaml:2: camera 'A\\n': id: must be 1-64 characters of A-Z a-z 0-9 _ -"),
    ('data_dir: "a\\0b"\ncameras: []\n', "cameras.yaml:1: data_dir: must not contain a NUL byte"),
    ("retry:\n  backoff_initial: 2\ncameras: []\n",
     "cameras.yaml:2: retry.backoff_initial: must be at least 10 s"),
    ("cameras:\n  - just-a-string\n", "cameras.yaml:2: camera #1: must be a mapping"),
    ("[" * 5000 + "]" * 5000 + "\n", "cameras.yaml: invalid YAML: nested too deeply"),
])
def test_hostile_yaml_gets_one_line_never_a_traceback(text: str, expected: str) -> None:
    assert errors_of(text) == [expected]


def test_a_yaml_set_of_cameras_is_an_error_not_a_traceback() -> None:
    assert errors_of("cameras: !!set {a, b}\n") == [
        "cameras.yaml:1: cameras: must be a list of cameras"]


def test_errors_come_in_file_order() -> None:
    text = ("cameras:\n  - id: A\n    url: http://x/a\n    interval: 1\n"
            "  - id: B\n    url: nope\n    lat: north\n")
    errors = errors_of(text)
    assert [int(e.split(":")[1]) for e in errors] == [4, 6, 7]
    assert errors[2] == "cameras.yaml:7: camera 'B': lat: must be a valid number, unable to " \
        "parse string as a number"


def test_billion_laughs_is_refused_before_it_is_built() -> None:
    lol = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lol.append(f"{chr(97 + i)}: &{chr(97 + i)} " + "[" + ", ".join([f"*{chr(96 + i)}"] * 10)
                   + "]")
    errors = errors_of("\n".join(lol) + "\ncameras: []\n")
    assert len(errors) == 1 and "aliases are not supported" in errors[0]


def test_data_dir_expands_the_home_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    config = parse_config("data_dir: ~/frames\ncameras: []\n", base_dir=Path("/etc/lyoncam"))
    assert config.data_dir == Path("/home/someone/frames")


def test_missing_mask_and_placeholder_images_are_named_with_their_line(tmp_path: Path) -> None:
    text = ("dedup:\n  placeholder_images: [gone.jpg]\n"
            "cameras:\n  - id: A1\n    url: http://x/a\n    mask: nomask.png\n")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cameras.yaml", tmp_path)
    assert info.value.errors == [
        f"cameras.yaml:2: dedup.placeholder_images.0: no such file: {tmp_path / 'gone.jpg'}",
        f"cameras.yaml:6: camera 'A1': mask: no such file: {tmp_path / 'nomask.png'}",
    ]


def test_check_loads_masks_so_a_broken_one_is_found_before_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mask.png").write_text("not an image")
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text("cameras:\n  - id: A1\n    url: http://x/a\n    mask: mask.png\n")
    assert main(["check", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {cfg}: dedup settings: camera 'A1': mask image ")
    assert "\n" not in err


def test_duplicate_ids_are_reported_with_the_other_errors() -> None:
    text = ("cameras:\n  - id: A1\n    url: http://x/a\n"
            "  - id: A1\n    url: http://x/b\n    interval: 1\n")
    assert errors_of(text) == [
        "cameras.yaml:4: camera 'A1': id: duplicate id, first used by camera #1",
        "cameras.yaml:6: camera 'A1': interval: must be at least 10 s",
    ]


@pytest.mark.parametrize(("retry", "expected"), [
    ("backoff_max: 1", "cameras.yaml:3: retry.backoff_max: must be at least 10 s"),
    ("down_probe_interval: 0.5",
     "cameras.yaml:3: retry.down_probe_interval: must be at least 10 s"),
    ("backoff_initial: 60\n  backoff_max: 30",
     "cameras.yaml:2: retry: backoff_max must be at least backoff_initial"),
])
def test_retries_keep_the_polling_floor(retry: str, expected: str) -> None:
    assert errors_of(f"cameras: []\nretry:\n  {retry}\n") == [expected]


def test_check_refuses_a_config_with_no_enabled_camera(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text("cameras: []\n")
    assert main(["check", "--config", str(cfg)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {cfg}: no enabled camera to capture"
