"""Train/val split: deterministic, grouped by camera and time block, stable as frames are added."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lyoncam_daemon.labelstudio.split import group_key, parse_frame_stem, side_of


def frames(camera: str, start: datetime, minutes: int) -> list[str]:
    return [f"{camera}_{(start + timedelta(minutes=m)):%Y%m%dT%H%M%SZ}" for m in range(minutes)]


def test_parse_frame_stem() -> None:
    assert parse_frame_stem("CWL9018_20250101T120000Z") == (
        "CWL9018", datetime(2025, 1, 1, 12, tzinfo=UTC))
    assert parse_frame_stem("CWL9018_night") is None
    assert parse_frame_stem("CWL9018_20251399T000000Z") is None


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


def test_unparsed_names_are_their_own_group() -> None:
    assert group_key("night_shot") == "file:night_shot"
    assert side_of("night_shot", 0.0) == "train"
    assert side_of("night_shot", 0.999999) in ("train", "val")


def test_block_size() -> None:
    assert group_key("CWL9018_20250101T010000Z", 24) == group_key("CWL9018_20250101T230000Z", 24)
    assert group_key("CWL9018_20250101T010000Z", 1) != group_key("CWL9018_20250101T230000Z", 1)
