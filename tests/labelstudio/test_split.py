"""Train/val split: deterministic, grouped by camera and time block, stable as frames are added."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lyoncam_daemon.labelstudio.pull.model import PullOptions, Summary
from lyoncam_daemon.labelstudio.pull.plan import plan
from lyoncam_daemon.labelstudio.split import group_key, side_of
from lyoncam_daemon.storage.layout import parse_frame_stem


def frames(camera: str, start: datetime, minutes: int) -> list[str]:
    return [f"{camera}_{(start + timedelta(minutes=m)):%Y%m%dT%H%M%SZ}" for m in range(minutes)]


def test_same_camera_same_hour_same_side() -> None:
    start = datetime(2025, 3, 1, 8, tzinfo=UTC)
    for camera in ("CWL9018", "CWL7033", "CWL5801"):
        for hour in range(24):
            block = frames(camera, start + timedelta(hours=hour), 60)
            assert len({side_of(s) for s in block}) == 1
            assert len({group_key(s) for s in block}) == 1


def test_split_fraction_and_determinism() -> None:
    start = datetime(2025, 3, 1, tzinfo=UTC)
    stems = [s for c in range(10) for s in frames(f"CWL{c:04d}", start, 60 * 24 * 7)[::60]]
    sides = [side_of(s, 0.2) for s in stems]
    share = sides.count("val") / len(sides)
    assert 0.12 < share < 0.28
    assert sides == [side_of(s, 0.2) for s in stems]


def test_adding_frames_never_moves_existing_ones() -> None:
    start = datetime(2025, 3, 1, tzinfo=UTC)
    old = frames("CWL9018", start, 600)[::7]
    before = {s: side_of(s) for s in old}
    new = frames("CWL9018", start, 1200) + frames("CWL1111", start, 600)
    after = {s: side_of(s) for s in old + new}
    assert all(after[s] == before[s] for s in old)


def documented_position(key: str) -> float:
    """Where a group falls in [0, 1), by the rule split.py documents (and datasets already
    pulled rely on): the first 8 bytes of SHA-256("lyoncam-split-v1:" + group key)."""
    digest = hashlib.sha256(f"lyoncam-split-v1:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@pytest.mark.parametrize("stem", ["CWL9018_20250101T120000Z", "CAM_A_20261126T001503Z",
                                  "night_shot"])
def test_side_follows_the_documented_hash_rule(stem: str) -> None:
    key = group_key(stem)
    position = documented_position(key)
    assert side_of(stem, min(position + 1e-6, 0.999999)) == "val"
    assert side_of(stem, max(position - 1e-6, 0.0)) == "train"


def test_known_groups_keep_their_side() -> None:
    # Regression guard, values computed once: changing the salt, the key format or the hash
    # would silently move frames of datasets already pulled between train and val.
    assert group_key("CWL9018_20250101T010000Z") == "CWL9018@1h#482137"
    assert group_key("CWL9018_20250101T015959Z") == "CWL9018@1h#482137"
    sides = {f"CWL9018_20250101T{h:02d}0000Z": side_of(f"CWL9018_20250101T{h:02d}0000Z", 0.2)
             for h in range(8)}
    assert [h for h, stem in enumerate(sides) if sides[stem] == "val"] == [1, 6]
    # the same groups at another fraction: a group's position (0.104 for 06h) is fixed
    assert side_of("CWL9018_20250101T060000Z", 0.10) == "train"
    assert side_of("CWL9018_20250101T060000Z", 0.11) == "val"


def test_unparsed_names_are_their_own_group() -> None:
    assert group_key("night_shot") == "file:night_shot"
    assert group_key("night_shot_2") == "file:night_shot_2"
    assert side_of("night_shot", 0.0) == "train"


def test_block_size() -> None:
    assert group_key("CWL9018_20250101T010000Z", 24) == group_key("CWL9018_20250101T230000Z", 24)
    assert group_key("CWL9018_20250101T010000Z", 1) != group_key("CWL9018_20250101T230000Z", 1)


def test_camera_ids_with_underscore_and_hyphen_are_grouped() -> None:
    # lyoncam camera ids are [A-Za-z0-9_-]{1,64}: CAM_A must not become a group of one per frame.
    assert parse_frame_stem("CAM_A_20261126T001503Z") == (
        "CAM_A", datetime(2026, 11, 26, 0, 15, 3, tzinfo=UTC))
    assert parse_frame_stem("cam-2_north_20261126T001503Z") == (
        "cam-2_north", datetime(2026, 11, 26, 0, 15, 3, tzinfo=UTC))
    start = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
    for camera in ("CAM_A", "cam-2", "a_b-c_d", "_x", "x-"):
        for hour in range(24):
            block = frames(camera, start + timedelta(hours=hour), 60)
            keys = {group_key(s) for s in block}
            assert len(keys) == 1 and not next(iter(keys)).startswith("file:"), keys
            assert len({side_of(s) for s in block}) == 1
    # the camera part really is part of the key: CAM_A and CAM_B do not share a group
    assert group_key("CAM_A_20261126T001503Z") != group_key("CAM_B_20261126T001503Z")
    assert group_key("CAM_A_20261126T001503Z") != group_key("A_20261126T001503Z")


def test_suffix_after_the_time_is_ignored() -> None:
    # a name collision in pull.plan appends _task<id>; other tools add -1, .2, ...
    key = group_key("CAM_A_20261126T001503Z")
    for stem in ("CAM_A_20261126T001503Z_task12", "CAM_A_20261126T001559Z-1",
                 "CAM_A_20261126T001503.2", "CAM_A_20261126T001503Z_20261127T000000Z"):
        assert group_key(stem) == key, stem
    assert parse_frame_stem("CAM_A_20261126T0015031") is None
    assert parse_frame_stem("_20261126T001503Z") is None


def test_plan_keeps_uploaded_frames_of_an_underscore_camera_together() -> None:
    # Label Studio prefixes each upload with its own 8-hex id; output_name drops it before the
    # split, so frames of CAM_A a minute apart land in one group whatever their prefix.
    start = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
    tasks = []
    for i in range(60):
        stem = f"CAM_A_{start + timedelta(minutes=i):%Y%m%dT%H%M%SZ}"
        prefix = f"{(0x1a2b3c4d + i * 7919) & 0xFFFFFFFF:08x}"
        tasks.append({"id": i + 1, "data": {"image": f"/data/upload/3/{prefix}-{stem}.jpg"},
                      "annotations": [{"id": i + 1, "result": []}]})
    config = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" '
              'toName="image"><Label value="Car"/></RectangleLabels></View>')
    opts = PullOptions(project=3, out=Path("unused"), val_fraction=0.5)
    items = plan(tasks, config, opts, Summary())
    assert len(items) == 60
    assert all(item.stem.startswith("CAM_A_2026") for item in items)  # upload prefix stripped
    assert len({group_key(item.stem) for item in items}) == 1
    assert len({item.folder for item in items}) == 1
