"""cameras.yaml validation: good files load, every bad one gives a file:line message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lyoncam_daemon.cli import main
from lyoncam_daemon.config import ConfigError, load_config, parse_config, parse_duration

REPO = Path(__file__).resolve().parents[2]

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
     "such as '90s' or '2m', not 'soon'"),
    ("http:\n  max_concurrent: 0\ncameras: []\n",
     "cameras.yaml:2: http.max_concurrent: must be greater than or equal to 1"),
    ("cameras:\n  - id: A\n   url: x\n",
     "cameras.yaml:3: invalid YAML: did not find expected '-' indicator"),
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
     "cameras.yaml:4: camera 'A': interval: must be a finite number of seconds, not nan"),
    ("cameras:\n  - id: A\n    url: http://x/a\n    interval: .inf\n",
     "cameras.yaml:4: camera 'A': interval: must be a finite number of seconds, not inf"),
    ("http:\n  max_frame_bytes: '" + "9" * 400 + "GB'\ncameras: []\n",
     "cameras.yaml:2: http.max_frame_bytes: must be a number of bytes or a size such as '8MB',"
     " not '" + "9" * 36 + "..."),
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
    ("[" * 5000 + "]" * 5000 + "\n",
     "cameras.yaml:1: invalid YAML: exceeded maximum nesting depth"),
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
        "parse string as a number, not 'north'"


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


# --- issue 7: files that passed `check` but could not run ------------------------------------

CAM = "cameras:\n  - id: A\n    url: http://x/a\n"


def test_a_threshold_over_the_fingerprint_bits_is_refused() -> None:
    # 99999 > 4096 bits: every frame would be a near-duplicate of the first one stored.
    assert errors_of(CAM + "    threshold: 99999\n") == [
        "cameras.yaml:4: camera 'A': threshold: must be less than the 4096 bits of a 64x64 "
        "phash (dedup.hash_size), not 99999"]
    assert errors_of("dedup:\n  hash: dhash\n  hash_size: 16\n" + CAM + "    threshold: 256\n") == [
        "cameras.yaml:7: camera 'A': threshold: must be less than the 256 bits of a 16x16 "
        "dhash (dedup.hash_size), not 256"]
    assert parse_config(CAM + "    threshold: 4095\n").cameras[0].threshold == 4095


def test_an_inherited_threshold_is_reported_once_at_the_defaults_line() -> None:
    text = ("defaults:\n  threshold: 5000\ncameras:\n  - id: A\n    url: http://x/a\n"
            "  - id: B\n    url: http://x/b\n")
    assert errors_of(text) == [
        "cameras.yaml:2: defaults.threshold: must be less than the 4096 bits of a 64x64 phash "
        "(dedup.hash_size), not 5000"]


def test_a_hash_size_too_small_for_the_default_threshold_names_the_fix() -> None:
    assert errors_of("dedup:\n  hash_size: 8\n" + CAM) == [
        "cameras.yaml:2: dedup.hash_size: the 64 bits of a 8x8 phash (dedup.hash_size) are not "
        "more than the default threshold 64: set defaults.threshold"]
    config = parse_config("dedup:\n  hash_size: 8\ndefaults:\n  threshold: 10\n" + CAM)
    assert config.cameras[0].threshold == 10


@pytest.mark.parametrize("algo", ["phash", "dhash", "ahash", "whash"])
def test_fingerprint_bits_is_what_frames_computes(algo: str) -> None:
    from lyoncam_daemon.config import fingerprint_bits
    from lyoncam_daemon.frames.fingerprint import Fingerprint, fingerprint

    night_frame = (REPO / "tests/fixtures/CWL9018_night.jpg").read_bytes()
    for size in (8, 16):
        fp = fingerprint(night_frame, algo, size)
        # The farthest fingerprint possible differs in every bit.
        ones = Fingerprint(algo, size, format((1 << fingerprint_bits(size)) - 1, "x"))
        flipped = Fingerprint(algo, size, format(int(fp.hex, 16) ^ int(ones.hex, 16),
                                                  f"0{len(fp.hex)}x"))
        assert len(ones.hex) == len(fp.hex)
        assert fp.distance(flipped) == fingerprint_bits(size)


@pytest.mark.parametrize(("url", "problem"), [
    ("http://x:99999/a", "the port must be a number from 1 to 65535"),
    ("http://x:0/a", "the port must be a number from 1 to 65535"),
    ("http://x:port/a", "the port must be a number from 1 to 65535"),
    ("'http://x/a b'", "must be a URL without spaces or control characters"),
    ("http://[::1/a", "must be an http:// or https:// URL"),
    ("http://:80/a", "must be an http:// or https:// URL"),
])
def test_a_url_aiohttp_cannot_fetch_is_refused(url: str, problem: str) -> None:
    text = f"cameras:\n  - id: A\n    url: {url}\n"
    assert errors_of(text) == [f"cameras.yaml:3: camera 'A': url: {problem}"]


def test_a_lone_anchor_is_refused_too() -> None:
    assert errors_of("cameras: &cams []\n") == [
        "cameras.yaml:1: invalid YAML: anchors and aliases are not supported; use `defaults:` "
        "to share settings"]
    assert errors_of("cameras:\n  - id: &a A\n    url: http://x/a\n") == [
        "cameras.yaml:2: invalid YAML: anchors and aliases are not supported; use `defaults:` "
        "to share settings"]


def test_numbers_with_an_exponent_are_numbers() -> None:
    # PyYAML (YAML 1.1) reads an unquoted 1e3 as the string "1e3"; YAML 1.2 and JSON do not.
    # Where a number is expected, the string is read as one.
    text = ("http:\n  max_frame_bytes: 8e6\ndedup:\n  max_pixels: 5e7\n" + CAM
            + "    interval: 1.5e2\n    timeout: '2e1s'\n    threshold: 1E2\n    lat: 4.5e1\n")
    config = parse_config(text)
    cam = config.cameras[0]
    assert (cam.interval, cam.timeout, cam.threshold, cam.lat) == (150.0, 20.0, 100, 45.0)
    assert config.http.max_frame_bytes == 8_000_000 and config.dedup.max_pixels == 50_000_000


def test_text_that_looks_like_a_number_stays_text() -> None:
    # What PyYAML's own dumper writes unquoted (found by the fuzzing) must read back the same.
    import yaml

    doc = {"data_dir": "1e5", "cameras": [{"id": "1E5", "url": "http://x/a", "name": "0e0"}]}
    config = parse_config(yaml.safe_dump(doc), base_dir=Path("/base"))
    assert (config.data_dir, config.cameras[0].id, config.cameras[0].name) == (
        Path("/base/1e5"), "1E5", "0e0")


def test_a_count_with_a_fraction_is_named() -> None:
    assert errors_of(CAM + "    threshold: 12.5\n") == [
        "cameras.yaml:4: camera 'A': threshold: must be a valid integer, got a number with a "
        "fractional part, not 12.5"]
    assert errors_of(CAM + "    threshold: 1.25e1\n") == [
        "cameras.yaml:4: camera 'A': threshold: must be a valid integer, unable to parse string "
        "as an integer, not '1.25e1'"]
    assert parse_config(CAM + "    threshold: 1.5e1\n").cameras[0].threshold == 15


@pytest.mark.parametrize(("value", "expected"), [
    ("1e9", "interval: must be at most 604800 s (a week), not '1e9'"),
    ("'10 parsecs'", "interval: must be a number of seconds or a duration such as '90s' or '2m',"
     " not '10 parsecs'"),
    ("1" + "0" * 400, "interval: must be a finite number of seconds, not 1" + "0" * 36 + "..."),
])
def test_a_bad_number_is_named_with_its_value(value: str, expected: str) -> None:
    errors = errors_of(CAM + f"    interval: {value}\n")
    assert errors == [f"cameras.yaml:4: camera 'A': {expected}"]


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from lyoncam_daemon.config import MAX_CONFIG_BYTES

    big = tmp_path / "cameras.yaml"
    with big.open("wb") as f:  # sparse: over the limit on paper, nothing on disk
        f.truncate(MAX_CONFIG_BYTES + 2**20)
    with pytest.raises(ConfigError) as info:
        load_config(big)
    assert info.value.errors == [
        f"{big}: {MAX_CONFIG_BYTES + 2**20} bytes is over the {MAX_CONFIG_BYTES}-byte limit "
        "for a config file"]


def test_a_file_with_no_size_is_read_only_up_to_the_limit() -> None:
    from lyoncam_daemon.config import MAX_CONFIG_BYTES

    with pytest.raises(ConfigError) as info:
        load_config(Path("/dev/zero"))
    assert info.value.errors == [
        f"/dev/zero: more than {MAX_CONFIG_BYTES} bytes is over the {MAX_CONFIG_BYTES}-byte limit "
        "for a config file"]


def test_a_file_of_too_many_values_is_refused_while_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lyoncam_daemon.config import model as config_module

    monkeypatch.setattr(config_module, "MAX_CONFIG_NODES", 1000)
    text = "cameras: []\nx:\n" + "".join(f"  - {i}\n" for i in range(2000))
    assert errors_of(text) == ["cameras.yaml:998: invalid YAML: more than 1000 values in one file"]


@pytest.mark.parametrize(("text", "expected"), [
    ('cameras: []\n"a\\nb": 1\n', "cameras.yaml:2: a\\nb: unknown key"),
    ("cameras: []\nx: !!int abc\n", "cameras.yaml:2: invalid YAML: 'abc' is not a valid int"),
    ("cameras: []\nx: !!timestamp abc\n",
     "cameras.yaml:2: invalid YAML: 'abc' is not a valid timestamp"),
    ("cameras: []\nx: \x07\n",
     "cameras.yaml:2: invalid YAML: unacceptable character #x0007: control characters are not "
     "allowed"),
    ("http:\n  user_agent: \"a\\r\\nX-Evil: 1\"\ncameras: []\n",
     "cameras.yaml:2: http.user_agent: must be printable text on one line, not 'a\\r\\nX-Evil: 1'"),
    ("data_dir: ~nobody-lyoncam/x\ncameras: []\n",
     "cameras.yaml:1: data_dir: cannot find the home folder in '~nobody-lyoncam/x'"),
    (CAM + "    ignore: [[0, 0, 99999999999999999999, 10]]\n",
     "cameras.yaml:4: camera 'A': ignore: each rectangle is [x, y, width, height] with width, "
     "height > 0 and all at most 65535, not [0, 0, 99999999999999999999, 10]"),
    (CAM + "    stale_after: .inf\n",
     "cameras.yaml:4: camera 'A': stale_after: must be a finite number"),
])
def test_what_fuzzing_found_is_one_line(text: str, expected: str) -> None:
    assert errors_of(text) == [expected]


def test_a_mask_name_too_long_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(CAM + "    mask: " + "m" * 300 + "\n", "cameras.yaml", tmp_path)
    assert info.value.errors == [
        f"cameras.yaml:4: camera 'A': mask: cannot use {tmp_path / ('m' * 300)}: "
        "File name too long"]
