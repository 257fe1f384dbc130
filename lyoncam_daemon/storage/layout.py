"""Where a frame goes: the one definition of frame names and keys, for every store and tool.

    <camera_id>/<YYYY>/<MM>/<DD>/<camera_id>_<YYYYMMDDTHHMMSSZ>[_<n>].jpg   (+ .json)

The key is relative, so the filesystem store puts it under `data_dir` and an object store
under its prefix; the dataset tools (the Label Studio split) parse the same names back.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_FRAME_STEM = re.compile(
    # Non-greedy camera: the first `_<timestamp>` ends it, so `CAM_A_20261126T001503Z` is
    # camera `CAM_A` (ids may hold `_` and `-`, see config.CAMERA_ID_RE). Anything after the
    # time (`_1` collision suffix, `_task12` added by a dataset tool) is ignored.
    r"^(?P<camera>[A-Za-z0-9_-]+?)_(?P<ts>\d{8}T\d{6}Z?)(?:$|[._-])"
)


# Formatted by hand, not with strftime: glibc's strftime looks at the time zone (a stat of
# /etc/localtime) on every call, and these run for every stored frame.


def utc_stamp(moment: datetime) -> str:
    """`20261126T001500Z`: sorts by time, safe in any file system and object store."""
    m = moment.astimezone(UTC)
    return (f"{m.year:04d}{m.month:02d}{m.day:02d}"
            f"T{m.hour:02d}{m.minute:02d}{m.second:02d}Z")


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, to the millisecond."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def day_prefix(camera_id: str, moment: datetime) -> str:
    m = moment.astimezone(UTC)
    return f"{camera_id}/{m.year:04d}/{m.month:02d}/{m.day:02d}"


def frame_stem(camera_id: str, moment: datetime, n: int = 0) -> str:
    """`n` > 0 adds the `_n` suffix of a second frame within the same second."""
    return f"{camera_id}_{utc_stamp(moment)}{f'_{n}' if n else ''}"


def frame_key(camera_id: str, moment: datetime, n: int = 0) -> str:
    """The JPEG's relative key; its sidecar's is the same with `.json`."""
    return f"{day_prefix(camera_id, moment)}/{frame_stem(camera_id, moment, n)}.jpg"


def parse_frame_stem(stem: str) -> tuple[str, datetime] | None:
    """(camera id, UTC time) of a frame name, or None if the stem is not one."""
    match = _FRAME_STEM.match(stem)
    if match is None:
        return None
    try:
        when = datetime.strptime(match["ts"].rstrip("Z"), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return match["camera"], when
