"""A data tree of frames with chosen daypart, weather and fingerprint, for the curation tests."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image

from lyoncam_daemon.frames.fingerprint import FINGERPRINT_VERSION
from lyoncam_daemon.storage import Frame, StoredFrame
from lyoncam_daemon.storage.filesystem import FilesystemStorage

FIXTURE = Path(__file__).parent / "fixtures" / "CWL9018_night.jpg"
T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Spec:
    camera: str
    minutes: float  # after T0
    daypart: str | None = "night"
    weather: str | None = "clear"
    #: Frames of one camera with the same `scene` have equal fingerprints (near-duplicates).
    scene: int | None = None


def jpeg(shade: int, size: tuple[int, int] = (64, 36)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (shade, shade, shade)).save(out, "JPEG", quality=80)
    return out.getvalue()


def fingerprint_hex(seed: int) -> str:
    return f"{random.Random(seed).getrandbits(4096):01024x}"


def sidecar(spec: Spec, n: int) -> dict[str, Any]:
    when = T0 + timedelta(minutes=spec.minutes)
    scene = spec.scene if spec.scene is not None else 10_000 + n
    return {
        "camera_id": spec.camera, "camera_name": "", "lat": 45.76, "lon": 4.84,
        "captured_at": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "sha256": f"{n:064x}", "bytes": 0, "width": 64, "height": 36,
        "fingerprint": {"algo": "phash", "hash_size": 64, "hex": fingerprint_hex(scene),
                        "v": FINGERPRINT_VERSION},
        "daypart": spec.daypart, "sun_elevation": -30.0 if spec.daypart == "night" else 20.0,
        "weather": None if spec.weather is None else {"code": 0, "label": spec.weather},
        "brightness": 40.0, "contrast": 12.0,
    }


def make_tree(data_dir: Path, specs: list[Spec]) -> list[StoredFrame]:
    """Stores each spec's frame (a small grey JPEG, shade from its position) with its sidecar."""
    store = FilesystemStorage(data_dir)
    stored = []
    for n, spec in enumerate(specs):
        meta = sidecar(spec, n)
        when = datetime.fromisoformat(meta["captured_at"])
        stored.append(store.write(Frame(spec.camera, when, jpeg(n % 256), meta)))
    return stored
