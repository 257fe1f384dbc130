"""Building blocks of the labelled frame pairs of bench/roadusers.py: the pair record, the
JPEG encoder and the two image changes every copy is made of (sensor noise, a tone curve).

The first two pair sets (a car-sized object against copies, and a held-out set of buses,
headlights and a walking person) were replaced for issue 16 by bench/roadusers.py's larger
set; git history keeps them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Pair:
    label: str  # "new" (must be stored) or "same" (must be dropped)
    kind: str
    previous: bytes
    current: bytes


def encode(im: Image.Image, quality: int = 90, subsampling: int = -1) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()


def noisy(frame: Image.Image, sigma: float, seed: int, gain: float = 1.0) -> Image.Image:
    rng = np.random.default_rng(seed)
    px = np.asarray(frame, dtype=np.float32) * gain + rng.normal(0, sigma, (*frame.size[::-1], 3))
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))


def gamma_curve(frame: Image.Image, gamma: float) -> Image.Image:
    """A global tone change, as auto-exposure makes between night and day."""
    return frame.point([round(255 * (v / 255) ** gamma) for v in range(256)] * 3)
