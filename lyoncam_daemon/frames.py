"""Byte checks and perceptual fingerprints of camera frames: pure functions on bytes.

Everything here is cheap enough to run per poll. The byte checks parse JPEG markers
instead of decoding, because a decode is what a decompression bomb or a corrupt file
makes expensive. The fingerprint decodes through libjpeg's DCT scaling (`draft`), which
never builds the full-size image: for a 1920x1080 frame it yields 240x135 pixels for
about a third of the cost of a full decode.
"""

from __future__ import annotations

import hashlib
import io
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import imagehash
import numpy as np
import numpy.typing as npt
import scipy.fft
from PIL import Image

#: The CriTer "Image indisponible" placeholder (300x200, 22,966 B) served with HTTP 200
#: while a camera is down; see docs/FIELD_NOTES.md.
KNOWN_PLACEHOLDER_SHA256: Final = frozenset(
    {"8be14bdafb0b8b688651206d02fad0656c0be2095c0e18c36945f74a8f598bdd"}
)

#: Bumped whenever the hashing changes, so fingerprints written by an older release are
#: not compared bit for bit with new ones (they would look like a scene change or worse,
#: like a duplicate).
FINGERPRINT_VERSION: Final = 1

ALGORITHMS: Final = ("phash", "dhash", "ahash", "whash")

Rect = tuple[int, int, int, int]
Gray = npt.NDArray[np.float32]
Keep = npt.NDArray[np.bool_]

_SOI = b"\xff\xd8\xff"
_EOI = b"\xff\xd9"
# SOF0-SOF15 minus DHT (C4), JPG (C8) and DAC (CC), which share the range.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7, SOI, EOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
_SOS = 0xDA


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


# --- byte checks -----------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def looks_like_jpeg(data: bytes) -> bool:
    """SOI followed by the first marker's FF: HTML error pages and empty bodies fail this."""
    return data[:3] == _SOI


@dataclass(frozen=True)
class _Header:
    width: int | None
    height: int | None
    #: Offset just past the SOS marker's header, where entropy-coded data begins.
    scan_start: int | None
    #: (offset, length) of the APP1 Exif payload, if any.
    exif: tuple[int, int] | None


def _parse_header(data: bytes) -> _Header:
    """Walk the marker segments up to the first scan; never reads entropy-coded data."""
    width = height = None
    exif = None
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2 or pos + 2 + length > n:
            break
        body = pos + 4
        if marker in _SOF_MARKERS and length >= 7:
            height, width = struct.unpack_from(">HH", data, body + 1)
        elif marker == 0xE1 and exif is None and data[body : body + 6] == b"Exif\x00\x00":
            exif = (body + 6, length - 8)
        elif marker == _SOS:
            return _Header(width, height, pos + 2 + length, exif)
        pos += 2 + length
    return _Header(width, height, None, exif)


def has_eoi(data: bytes, tail: int = 4096) -> bool:
    """True when the end-of-image marker FF D9 is in the last `tail` bytes.

    Only the tail is searched, and never the header: the EXIF thumbnail near the start
    carries its own EOI, which would make a truncated frame look whole. Entropy-coded
    data cannot contain FF D9 (FF is always stuffed), so a hit after the scan is real.
    """
    start = max(len(data) - tail, 2)
    scan = _parse_header(data).scan_start
    if scan is not None:
        start = max(start, scan)
    return data.find(_EOI, start) != -1


def jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the SOFn marker, or None when the header has none usable."""
    if not looks_like_jpeg(data):
        return None
    h = _parse_header(data)
    if not h.width or not h.height:
        return None
    return h.width, h.height


_TIFF_TYPES = {2: 1, 3: 2, 4: 4}  # ASCII, SHORT, LONG: the only ones read here
_TAG_DATETIME = 0x0132
_TAG_EXIF_IFD = 0x8769
_TAG_DATETIME_ORIGINAL = 0x9003


def _ifd(tiff: bytes, offset: int, endian: str) -> dict[int, tuple[int, int, int]]:
    """Tag -> (type, count, value-or-offset) for one IFD; empty on any inconsistency."""
    if offset < 8 or offset + 2 > len(tiff):
        return {}
    (count,) = struct.unpack_from(endian + "H", tiff, offset)
    entries: dict[int, tuple[int, int, int]] = {}
    for i in range(count):
        at = offset + 2 + 12 * i
        if at + 12 > len(tiff):
            break
        tag, typ, cnt = struct.unpack_from(endian + "HHI", tiff, at)
        if typ == 3 and cnt == 1:
            (value,) = struct.unpack_from(endian + "H", tiff, at + 8)
        else:
            (value,) = struct.unpack_from(endian + "I", tiff, at + 8)
        entries[tag] = (typ, cnt, value)
    return entries


def _ascii(tiff: bytes, entry: tuple[int, int, int] | None) -> str | None:
    if entry is None or entry[0] != 2:
        return None
    _, count, value = entry
    raw = tiff[value : value + count] if count > 4 else struct.pack("<I", value)[:count]
    text = raw.split(b"\x00", 1)[0].decode("ascii", "replace").strip()
    return text or None


def _iso(exif_time: str) -> str | None:
    """'2024:05:14 01:15:37' -> '2024-05-14T01:15:37' (no zone: the camera's is unknown)."""
    date, _, time = exif_time.partition(" ")
    parts = date.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or not time:
        return None
    if parts[0] in ("0000", "") or parts[1] == "00":  # "0000:00:00 00:00:00" means unset
        return None
    return f"{'-'.join(parts)}T{time}"


def exif_datetime(data: bytes) -> str | None:
    """The camera's own clock from EXIF (DateTimeOriginal, else DateTime), ISO-like.

    Parsed from the APP1 segment directly: opening the image with Pillow would cost
    more than the rest of the byte checks together.
    """
    if not looks_like_jpeg(data):
        return None
    where = _parse_header(data).exif
    if where is None:
        return None
    start, length = where
    tiff = data[start : start + length]
    if tiff[:4] == b"II*\x00":
        endian = "<"
    elif tiff[:4] == b"MM\x00*":
        endian = ">"
    else:
        return None
    try:
        (ifd0_at,) = struct.unpack_from(endian + "I", tiff, 4)
        ifd0 = _ifd(tiff, ifd0_at, endian)
        candidates = []
        sub = ifd0.get(_TAG_EXIF_IFD)
        if sub is not None:
            candidates.append(_ascii(tiff, _ifd(tiff, sub[2], endian).get(_TAG_DATETIME_ORIGINAL)))
        candidates.append(_ascii(tiff, ifd0.get(_TAG_DATETIME)))
    except struct.error:
        return None
    for text in candidates:
        if text and (iso := _iso(text)):
            return iso
    return None


# --- fingerprints ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    """A perceptual hash: `hex` holds the bits, comparable only within one algo and size."""

    algo: str
    hash_size: int
    hex: str

    def compatible(self, other: Fingerprint) -> bool:
        return (self.algo, self.hash_size, len(self.hex)) == (
            other.algo, other.hash_size, len(other.hex)
        )

    def distance(self, other: Fingerprint) -> int:
        """Hamming distance in bits; IncompatibleFingerprints if algo or size differ."""
        if not self.compatible(other):
            raise IncompatibleFingerprints(
                f"cannot compare {self.algo}/{self.hash_size} with {other.algo}/{other.hash_size}"
            )
        return (int(self.hex, 16) ^ int(other.hex, 16)).bit_count()

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


def _without_exif(data: bytes) -> bytes:
    """The JPEG minus its APP1 Exif segment. Pillow parses the whole Exif block in Python on
    open (for the DPI), a tenth of the decode's time spent holding the GIL; the pixels do
    not depend on it. Copying the bytes once is far cheaper."""
    exif = _parse_header(data).exif
    if exif is None:
        return data
    offset, length = exif
    start = offset - 10  # FF E1, the 2-byte length, "Exif\0\0"
    return data[:start] + data[offset + length:]


def decode_gray(data: bytes, min_size: tuple[int, int] = (64, 64)) -> tuple[Gray, tuple[int, int]]:
    """Grayscale pixels at the smallest DCT scale (1/8 .. 1) still covering `min_size`.

    Returns the pixels and the full frame's (width, height). A frame without EOI is
    decoded as far as its data goes: appending the missing EOI makes libjpeg finish the
    scan with grey rows, exactly as `ImageFile.LOAD_TRUNCATED_IMAGES` would, without
    touching that process-wide flag from a worker thread.
    """
    if not has_eoi(data):
        data = data + _EOI
    data = _without_exif(data)
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
