"""Perceptual fingerprints of camera frames: a reduced decode and a hash of it.

The fingerprint decodes through libjpeg's DCT scaling (`draft`), which never builds the
full-size image: for a 1920x1080 frame it yields 240x135 pixels for about a third of the
cost of a full decode. Region-of-interest masks blank what must not count as change.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import imagehash
import numpy as np
import numpy.typing as npt
import scipy.fft
from PIL import Image

from lyoncam_daemon.frames.jpeg import EOI, has_eoi, without_exif

#: Bumped whenever the hashing changes, so fingerprints written by an older release are
#: not compared bit for bit with new ones (they would look like a scene change or worse,
#: like a duplicate).
FINGERPRINT_VERSION: Final = 1

ALGORITHMS: Final = ("phash", "dhash", "ahash", "whash")

Rect = tuple[int, int, int, int]
Gray = npt.NDArray[np.float32]
Keep = npt.NDArray[np.bool_]


class CorruptFrame(Exception):
    """The bytes claim to be a JPEG but libjpeg cannot decode them."""


class IncompatibleFingerprints(ValueError):
    """Two fingerprints made with different algorithms or sizes cannot be compared."""


def read_gray(path: Path, what: str, error: type[ValueError] = ValueError) -> Image.Image:
    """An image file named in the config (mask, placeholder), as 8-bit grey.

    Raises `error` naming `what` and the path, so a bad setting reads as one line.
    """
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("L")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise error(f"{what} {path}: cannot read: {exc}") from None


class MaskError(ValueError):
    """A region-of-interest mask image that cannot be used; the message names the path."""


# --- fingerprints ----------------------------------------------------------------------------


class Fingerprint:
    """A perceptual hash: `hex` holds the bits, comparable only within one algo and size.

    Kept as an int, its hex written out when asked: every camera holds its last stored
    frame's, and a 64x64 phash is a 1,073-byte string but a 576-byte int. Immutable.
    """

    __slots__ = ("_digits", "_value", "algo", "hash_size")
    algo: str
    hash_size: int
    _digits: int  # hex digits, leading zeros included
    _value: int

    def __init__(self, algo: str, hash_size: int, hex: str) -> None:
        set_ = object.__setattr__
        set_(self, "algo", algo)
        set_(self, "hash_size", hash_size)
        set_(self, "_digits", len(hex))
        set_(self, "_value", int(hex, 16))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Fingerprint is immutable ({name})")

    @property
    def hex(self) -> str:
        return f"{self._value:0{self._digits}x}"

    def _key(self) -> tuple[str, int, int, int]:
        return self.algo, self.hash_size, self._digits, self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fingerprint) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Fingerprint(algo={self.algo!r}, hash_size={self.hash_size!r}, hex={self.hex!r})"

    def compatible(self, other: Fingerprint) -> bool:
        return (self.algo, self.hash_size, self._digits) == (
            other.algo, other.hash_size, other._digits
        )

    def distance(self, other: Fingerprint) -> int:
        """Hamming distance in bits; IncompatibleFingerprints if algo or size differ."""
        if not self.compatible(other):
            raise IncompatibleFingerprints(
                f"cannot compare {self.algo}/{self.hash_size} with {other.algo}/{other.hash_size}"
            )
        return (self._value ^ other._value).bit_count()

    def to_json(self) -> dict[str, Any]:
        return {"algo": self.algo, "hash_size": self.hash_size, "hex": self.hex,
                "v": FINGERPRINT_VERSION}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Fingerprint:
        """ValueError on anything but a well-formed fingerprint of the current version."""
        if not isinstance(d, Mapping):
            raise ValueError("fingerprint must be a mapping")
        algo, size, hx, v = d.get("algo"), d.get("hash_size"), d.get("hex"), d.get("v", 1)
        if v != FINGERPRINT_VERSION:
            raise ValueError(f"fingerprint version {v!r}, expected {FINGERPRINT_VERSION}")
        if algo not in ALGORITHMS:
            raise ValueError(f"unknown fingerprint algorithm {algo!r}")
        if not isinstance(size, int) or isinstance(size, bool) or not 2 <= size <= 64:
            raise ValueError(f"bad hash_size {size!r}")
        if not isinstance(hx, str) or not hx or len(hx) != _hex_len(algo, size):
            raise ValueError("bad fingerprint hex length")
        try:
            int(hx, 16)
        except ValueError:
            raise ValueError("fingerprint hex is not hexadecimal") from None
        return cls(algo, size, hx.lower())


# --- region-of-interest masks ----------------------------------------------------------------


class RoiMask:
    """The part of the frame the near-duplicate stage compares.

    Built from `ignore` rectangles in full-frame pixels and/or a mask image (white =
    compared, black = ignored, any size: it is stretched over the frame). Ignored pixels
    are replaced by the mean of the compared ones before hashing, so nothing that happens
    inside them can move a bit. The per-resolution boolean grid is cached because every
    frame of a camera has the same size.
    """

    def __init__(self, ignore: Iterable[Rect] = (), image: Image.Image | None = None,
                 source: Path | None = None) -> None:
        self.ignore: tuple[Rect, ...] = tuple(ignore)
        self._image = image.convert("L") if image is not None else None
        self.source = source
        self._cache: dict[tuple[int, int, int, int], Keep] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, ignore: Iterable[Rect] = (), path: Path | None = None) -> RoiMask | None:
        """None when there is nothing to ignore; MaskError naming `path` if unreadable."""
        rects = tuple(ignore)
        if path is None:
            return cls(rects) if rects else None
        return cls(rects, read_gray(path, "mask image", MaskError), path)

    def keep(self, full: tuple[int, int], small: tuple[int, int]) -> Keep:
        """Which pixels of the `small` (w, h) decode of a `full` (w, h) frame count."""
        key = (*full, *small)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        sw, sh = small
        fx, fy = sw / full[0], sh / full[1]
        keep = np.ones((sh, sw), dtype=np.bool_)
        if self._image is not None:
            scaled = self._image.resize((sw, sh), Image.Resampling.BOX)
            keep &= np.asarray(scaled) >= 128
        for x, y, w, h in self.ignore:
            # Outward rounding: a small pixel partly over the ignored area is ignored, so
            # nothing of that area leaks into the hash through the averaging.
            x0, y0 = int(np.floor(x * fx)), int(np.floor(y * fy))
            x1, y1 = int(np.ceil((x + w) * fx)), int(np.ceil((y + h) * fy))
            keep[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = False
        keep.setflags(write=False)
        with self._lock:
            self._cache[key] = keep
        return keep


# --- decoding and hashing --------------------------------------------------------------------


def decode_gray(data: bytes, min_size: tuple[int, int] = (64, 64)) -> tuple[Gray, tuple[int, int]]:
    """Grayscale pixels at the smallest DCT scale (1/8 .. 1) still covering `min_size`.

    Returns the pixels and the full frame's (width, height). A frame without EOI is
    decoded as far as its data goes: appending the missing EOI makes libjpeg finish the
    scan with grey rows, exactly as `ImageFile.LOAD_TRUNCATED_IMAGES` would, without
    touching that process-wide flag from a worker thread.
    """
    if not has_eoi(data):
        data = data + EOI
    data = without_exif(data)
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as im:
            full = im.size
            im.draft("L", min_size)
            im.load()
            # CMYK and other exotic JPEGs are not drafted to L.
            gray = im.convert("L") if im.mode != "L" else im
            pixels = np.asarray(gray, dtype=np.float32)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise CorruptFrame(str(exc) or type(exc).__name__) from None
    if pixels.ndim != 2 or pixels.size == 0:
        raise CorruptFrame("decoded to an empty image")
    return pixels, full


def _resize(pixels: Gray, size: tuple[int, int]) -> Gray:
    """Area-average resize: every source pixel weighs the same, so masks fill fairly."""
    im = Image.fromarray(pixels, mode="F")
    return np.asarray(im.resize(size, Image.Resampling.BOX), dtype=np.float32)


def _bits_phash(pixels: Gray, n: int) -> npt.NDArray[np.bool_]:
    # The n x n lowest 2-D DCT coefficients of the whole decode, taken directly on its
    # own grid (no square resize: the aspect ratio stays true). Each bit says whether a
    # coefficient is above the median of the AC ones, so a uniform brightness change,
    # which only moves the DC term, flips nothing. scipy's FFT-based DCT runs in the
    # calling thread; a BLAS matrix product would fan out into OpenBLAS threads and, next
    # to the other decode workers on a 2-core server, measured 50x slower under load.
    h, w = pixels.shape
    if h < n or w < n:  # a tiny frame: stretch so that n frequencies exist
        pixels = _resize(pixels, (max(w, n), max(h, n)))
        h, w = pixels.shape
    rows = scipy.fft.dct(pixels, type=2, norm="ortho", axis=1)[:, :n]
    coeffs = scipy.fft.dct(rows, type=2, norm="ortho", axis=0)[:n].ravel()
    return np.asarray(coeffs > _median(coeffs[1:]))


def _median(values: Gray) -> float:
    """np.median by partition alone: the same value, without np.median's generic machinery,
    which held the GIL for a tenth of a decode worker's time."""
    mid = values.size // 2
    if values.size % 2:
        return float(np.partition(values, mid)[mid])
    low, high = np.partition(values, (mid - 1, mid))[mid - 1 : mid + 1]
    return float((low + high) / values.dtype.type(2))  # in the array's precision, as np.median


def _library_bits(name: str) -> Callable[[Gray, int], npt.NDArray[np.bool_]]:
    """dhash, ahash and whash straight from imagehash, on the (masked) reduced decode.

    phash is the one hash computed here: imagehash's phash first resamples to a square
    (Lanczos), which costs about a third of the decode and bends the aspect ratio.
    """
    fn = getattr(imagehash, name)

    def bits(pixels: Gray, n: int) -> npt.NDArray[np.bool_]:
        im = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
        return np.asarray(fn(im, hash_size=n).hash, dtype=np.bool_).ravel()

    return bits


_BITS = {
    "phash": _bits_phash,
    "dhash": _library_bits("dhash"),
    "ahash": _library_bits("average_hash"),
    "whash": _library_bits("whash"),
}


def _hex_len(algo: str, n: int) -> int:
    return (n * n + 3) // 4


def working_size(algo: str, n: int) -> tuple[int, int]:
    """The smallest decode each algorithm needs; `draft` picks the DCT scale from it."""
    side = n if algo == "phash" else n + 1
    return side, side


def _to_hex(bits: npt.NDArray[np.bool_], length: int) -> str:
    value = int.from_bytes(np.packbits(bits).tobytes(), "big") >> (-bits.size % 8)
    return f"{value:0{length}x}"


def hash_pixels(pixels: Gray, full: tuple[int, int], algo: str, hash_size: int,
                mask: RoiMask | None = None) -> Fingerprint:
    """Fingerprint of an already decoded grayscale frame (see `decode_gray`)."""
    if algo not in _BITS:
        raise ValueError(f"unknown fingerprint algorithm {algo!r}")
    if mask is not None:
        keep = mask.keep(full, (pixels.shape[1], pixels.shape[0]))
        if not keep.all():
            fill = float(pixels[keep].mean()) if keep.any() else 0.0
            pixels = np.where(keep, pixels, np.float32(fill))
    bits = _BITS[algo](pixels, hash_size)
    return Fingerprint(algo, hash_size, _to_hex(bits, _hex_len(algo, hash_size)))


def fingerprint(data: bytes, algo: str = "phash", hash_size: int = 64,
                mask: RoiMask | None = None) -> Fingerprint:
    """Decode at reduced scale and hash; CorruptFrame if libjpeg cannot decode `data`."""
    pixels, full = decode_gray(data, working_size(algo, hash_size))
    return hash_pixels(pixels, full, algo, hash_size, mask)
