"""Which cameras this daemon polls when one camera list is split across several daemons.

Rendezvous (highest random weight) hashing: each camera goes to the shard whose hash of
(camera id, shard number) is highest. Every daemon computes the same answer from the same
`cameras.yaml` with no coordinator, each camera has exactly one owner, and going from N to
N + 1 shards moves only the cameras the new shard wins, about 1/(N + 1) of them. The hash is
BLAKE2b, never Python's `hash()`, which changes from one process to the next.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`, 1-based as people count: `2/3`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: I must be between 1 and N")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, camera_id: str) -> bool:
        return owner(camera_id, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """`"2/3"` → Shard(2, 3); ValueError with a message for anything else."""
    match = _SHARD.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not I/N, e.g. 2/3")
    return Shard(int(match[1]), int(match[2]))


def owner(camera_id: str, count: int) -> int:
    """The shard (1..count) that polls this camera."""
    if count < 1:
        raise ValueError("count must be at least 1")
    return max(range(1, count + 1), key=lambda i: _weight(camera_id, i))


def _weight(camera_id: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{camera_id}\0{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
