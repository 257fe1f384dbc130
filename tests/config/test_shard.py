"""Sharding: N daemons with one camera list cover every camera exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.cli import main
from lyoncam_daemon.config import ConfigError, parse_config
from lyoncam_daemon.config.shard import Shard, owner, parse_shard, resolve_shard
from lyoncam_daemon.devtools.simulator import CriterSimulator, camera_ids
from tests.conftest import make_config, run_until, stored_frames


def test_every_camera_has_exactly_one_owner_and_shards_are_balanced() -> None:
    ids = [f"CWL{i:04d}" for i in range(3000)]
    per_shard = Counter(owner(c, 3) for c in ids)
    assert set(per_shard) == {1, 2, 3}
    assert all(900 <= n <= 1100 for n in per_shard.values()), per_shard
    for c in ids[:300]:
        assert [Shard(i, 3).owns(c) for i in (1, 2, 3)].count(True) == 1


def test_adding_a_shard_moves_about_a_quarter_and_only_to_it() -> None:
    ids = [f"CAM_{i}" for i in range(4000)]
    moved = [c for c in ids if owner(c, 3) != owner(c, 4)]
    assert 0.22 <= len(moved) / len(ids) <= 0.28, len(moved) / len(ids)
    assert {owner(c, 4) for c in moved} == {4}  # nothing shuffles among the old shards


def test_the_owner_is_the_same_in_every_process() -> None:
    # BLAKE2b, not hash(): these values are fixed forever, or a restart reshuffles cameras.
    assert [owner(c, 3) for c in ("CWL9018", "CWL5801", "CWL7033")] == \
        [owner(c, 3) for c in ("CWL9018", "CWL5801", "CWL7033")]
    assert owner("CWL9018", 1) == 1


@pytest.mark.parametrize(("text", "message"), [
    ("4/3", "I must be between 1 and N"), ("0/2", "I must be between 1 and N"),
    ("x", "is not I/N"), ("2", "is not I/N"),
])
def test_bad_shards_are_refused_naming_them(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_shard(text)
    with pytest.raises(ConfigError) as info:
        parse_config(f"shard: '{text}'\ncameras:\n  - id: A\n    url: http://127.0.0.1:9/a\n")
    assert info.value.errors[0].startswith("cameras.yaml:1: shard: ")


def test_a_number_is_not_a_shard() -> None:
    with pytest.raises(ConfigError, match="shard: must be I/N"):
        parse_config("shard: 3\ncameras:\n  - id: A\n    url: http://127.0.0.1:9/a\n")


def test_check_and_run_say_which_shard(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cameras.yaml"
    cams = "".join(f"  - id: C{i}\n    url: http://127.0.0.1:9/{i}.jpg\n" for i in range(30))
    cfg.write_text(f"shard: 2/3\ncameras:\n{cams}")
    assert main(["check", "--config", str(cfg)]) == 0
    mine = sum(owner(f"C{i}", 3) == 2 for i in range(30))
    assert f"30 cameras ({mine} enabled in shard 2/3)" in capsys.readouterr().out
    cfg.write_text("cameras:\n  - id: A\n    url: http://127.0.0.1:9/a.jpg\n")
    lone = owner("A", 2)
    assert main(["run", "--config", str(cfg), "--shard", f"{3 - lone}/2"]) == 2
    assert capsys.readouterr().err.strip() == \
        f"error: {cfg}: shard {3 - lone}/2 owns none of the enabled cameras"
    with pytest.raises(SystemExit):
        main(["run", "--config", str(cfg), "--shard", "3/2"])


async def test_three_shards_capture_thirty_cameras_once_each(tmp_path: Path) -> None:
    ids = camera_ids(30)
    async with CriterSimulator(ids, period=60) as sim:
        urls = {i: sim.url(i) for i in ids}
        shards = [make_config(tmp_path / f"shard{i}", urls, interval=0.2)
                  .model_copy(update={"shard": Shard(i, 3)}) for i in (1, 2, 3)]
        def all_mine_stored(d: Daemon) -> bool:
            return all(d.stats.camera(c.id).outcomes["stored"] >= 1
                       for c in d.config.enabled_cameras)

        await asyncio.gather(*(run_until(config, all_mine_stored, "the shard's frames")
                               for config in shards))
    for c in ids:
        holders = [i for i in (1, 2, 3) if stored_frames(tmp_path / f"shard{i}", c)]
        assert holders == [owner(c, 3)], (c, holders)


# --- the shard from the environment (LYONCAM_SHARD, --shard auto in a StatefulSet) ----------


@pytest.mark.parametrize(("env", "shard"), [
    ({"POD_NAME": "lyoncam-0", "LYONCAM_SHARDS": "3"}, Shard(1, 3)),
    ({"POD_NAME": "lyoncam-3", "LYONCAM_SHARDS": "5"}, Shard(4, 5)),
    # HOSTNAME when POD_NAME is absent; a name with dashes and digits of its own
    ({"HOSTNAME": "cam-2024-fleet-11", "LYONCAM_SHARDS": "12"}, Shard(12, 12)),
    # POD_NAME first: it is set from the pod's metadata, HOSTNAME may be overridden
    ({"POD_NAME": "lyoncam-1", "HOSTNAME": "lyoncam-0", "LYONCAM_SHARDS": " 2 "}, Shard(2, 2)),
])
def test_auto_takes_the_pod_ordinal_plus_one_of_lyoncam_shards(
    env: dict[str, str], shard: Shard,
) -> None:
    assert resolve_shard("auto", env) == shard
    assert resolve_shard(None, {**env, "LYONCAM_SHARD": "auto"}) == shard


def test_the_flag_beats_the_variable_which_beats_the_file() -> None:
    assert resolve_shard("1/2", {"LYONCAM_SHARD": "2/2"}) == Shard(1, 2)
    assert resolve_shard(None, {"LYONCAM_SHARD": "2/2"}) == Shard(2, 2)
    assert resolve_shard(None, {"LYONCAM_SHARD": ""}) is None  # unset: the file's shard:
    assert resolve_shard(None, {}) is None


@pytest.mark.parametrize(("given", "env", "message"), [
    ("auto", {"LYONCAM_SHARDS": "3"}, "shard auto: neither POD_NAME nor HOSTNAME is set"),
    ("auto", {"HOSTNAME": "lyoncam", "LYONCAM_SHARDS": "3"},
     "shard auto: HOSTNAME='lyoncam' is not a StatefulSet pod name ending in -<ordinal>"),
    ("auto", {"POD_NAME": "lyoncam-2"}, "shard auto: LYONCAM_SHARDS is not set"),
    ("auto", {"POD_NAME": "lyoncam-2", "LYONCAM_SHARDS": "three"},
     "shard auto: LYONCAM_SHARDS='three'; it must be the number of shards"),
    ("auto", {"POD_NAME": "lyoncam-2", "LYONCAM_SHARDS": "0"},
     "shard auto: LYONCAM_SHARDS='0'"),
    ("auto", {"POD_NAME": "lyoncam-3", "LYONCAM_SHARDS": "3"},
     "shard auto: POD_NAME='lyoncam-3' is pod 3, but LYONCAM_SHARDS=3 makes pods 0 to 2"),
    (None, {"LYONCAM_SHARD": "3"}, "LYONCAM_SHARD: '3' is neither I/N (e.g. 2/3) nor auto"),
    (None, {"LYONCAM_SHARD": "4/3"}, "LYONCAM_SHARD: shard 4/3: I must be between 1 and N"),
])
def test_a_bad_environment_is_one_line_naming_the_variable(
    given: str | None, env: dict[str, str], message: str,
) -> None:
    with pytest.raises(ValueError) as info:
        resolve_shard(given, env)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def _one_camera(tmp_path: Path) -> Path:
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\n"
                   "cameras:\n  - id: A\n    url: http://127.0.0.1:9/a.jpg\n")
    return cfg


def test_run_takes_its_shard_from_the_pod_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shard run resolved shows in its refusal to start a shard that owns nothing."""
    cfg = _one_camera(tmp_path)
    other = 3 - owner("A", 2)  # the shard of two that does not own A
    monkeypatch.delenv("LYONCAM_SHARD", raising=False)
    monkeypatch.setenv("HOSTNAME", f"lyoncam-{other - 1}")
    monkeypatch.setenv("LYONCAM_SHARDS", "2")
    assert main(["run", "--config", str(cfg), "--shard", "auto"]) == 2
    assert capsys.readouterr().err == \
        f"error: {cfg}: shard {other}/2 owns none of the enabled cameras\n"
    monkeypatch.setenv("LYONCAM_SHARD", f"{other}/2")
    monkeypatch.delenv("LYONCAM_SHARDS")
    assert main(["run", "--config", str(cfg)]) == 2
    assert capsys.readouterr().err == \
        f"error: {cfg}: shard {other}/2 owns none of the enabled cameras\n"


def test_run_refuses_a_malformed_shard_variable_in_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _one_camera(tmp_path)
    monkeypatch.setenv("LYONCAM_SHARD", "auto")
    monkeypatch.setenv("POD_NAME", "lyoncam-7")
    monkeypatch.setenv("LYONCAM_SHARDS", "3")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err == ("error: shard auto: POD_NAME='lyoncam-7' is pod 7, but LYONCAM_SHARDS=3 "
                   "makes pods 0 to 2\n")
    assert not (tmp_path / "data").exists()  # refused before anything was touched
