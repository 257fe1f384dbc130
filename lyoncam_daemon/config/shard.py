"""Which cameras this daemon polls when one camera list is split across several daemons.

Rendezvous (highest random weight) hashing: each camera goes to the shard whose hash of
(camera id, shard number) is highest. Every daemon computes the same answer from the same
`cameras.yaml` with no coordinator, each camera has exactly one owner, and going from N to
N + 1 shards moves only the cameras the new shard wins, about 1/(N + 1) of them. The hash is
BLAKE2b, never Python's `hash()`, which changes from one process to the next.

A process learns its shard from `run --shard I/N`, from `LYONCAM_SHARD=I/N` in its
environment, or from `auto`: the ordinal of a Kubernetes StatefulSet pod's name (`lyoncam-3`
is the fourth pod, so shard 4) with N from `LYONCAM_SHARDS`, as vmagent's
`-promscrape.cluster.memberNum` takes a pod name (`resolve_shard`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
#: A StatefulSet names its pods `<name>-<ordinal>`, the ordinal counting from 0.
_POD_ORDINAL = re.compile(r"-(\d+)$")
_COUNT = re.compile(r"^\s*(\d+)\s*$")

#: `I/N` or `auto`, when `run` is given no `--shard`.
SHARD_VAR = "LYONCAM_SHARD"
#: N for `auto`: the StatefulSet's replica count (deploy/kubernetes sets both from one number).
SHARDS_VAR = "LYONCAM_SHARDS"
#: Where `auto` finds the pod's name: POD_NAME (the downward API, as deploy/kubernetes sets
#: it), else HOSTNAME, which Kubernetes sets to the pod's name too.
POD_NAME_VARS = ("POD_NAME", "HOSTNAME")
AUTO = "auto"


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


def pod_ordinal(name: str) -> int:
    """`lyoncam-3` → 3: the ordinal Kubernetes gives a StatefulSet's pod."""
    match = _POD_ORDINAL.search(name)
    if match is None:
        raise ValueError(f"{name!r} is not a StatefulSet pod name ending in -<ordinal>, "
                         "e.g. lyoncam-0")
    return int(match[1])


def auto_shard(environ: Mapping[str, str]) -> Shard:
    """The shard of a StatefulSet pod: its ordinal + 1, of `LYONCAM_SHARDS`."""
    var, name = next(((v, environ[v]) for v in POD_NAME_VARS if environ.get(v)), ("", ""))
    if not var:
        raise ValueError(f"shard auto: neither {' nor '.join(POD_NAME_VARS)} is set "
                         "(the pod's name, e.g. lyoncam-0)")
    try:
        ordinal = pod_ordinal(name)
    except ValueError as exc:
        raise ValueError(f"shard auto: {var}={exc}") from None
    count_text = environ.get(SHARDS_VAR, "")
    count = _COUNT.match(count_text)
    if count is None or int(count[1]) < 1:
        given = f"={count_text!r}" if count_text else " is not set"
        raise ValueError(f"shard auto: {SHARDS_VAR}{given}; it must be the number of shards "
                         "(the StatefulSet's replicas), e.g. 3")
    if ordinal >= int(count[1]):
        raise ValueError(f"shard auto: {var}={name!r} is pod {ordinal}, but {SHARDS_VAR}="
                         f"{int(count[1])} makes pods 0 to {int(count[1]) - 1}")
    return Shard(ordinal + 1, int(count[1]))


def resolve_shard(given: str | None, environ: Mapping[str, str]) -> Shard | None:
    """The shard `run` was given: `--shard`'s text, else `LYONCAM_SHARD`, each `I/N` or
    `auto`; None when neither is set (the config file's `shard:` then applies). ValueError
    with one line naming where the bad value came from."""
    source = "--shard"
    if given is None:
        given, source = environ.get(SHARD_VAR) or None, SHARD_VAR
    if given is None:
        return None
    if given.strip() == AUTO:
        return auto_shard(environ)
    if _SHARD.match(given) is None:
        raise ValueError(f"{source}: {given!r} is neither I/N (e.g. 2/3) nor {AUTO}")
    try:
        return parse_shard(given)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
