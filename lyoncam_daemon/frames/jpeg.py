"""Byte facts of a JPEG frame: pure functions on bytes, no decode.

The checks parse JPEG markers instead of decoding, because a decode is what a
decompression bomb or a corrupt file makes expensive. Everything here is cheap enough to
run per poll, before the frame reaches the fingerprint (fingerprint.py) or the judge.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

#: The CriTer "Image indisponible" placeholder (300x200, 22,966 B) served with HTTP 200
#: while a camera is down; see docs/FIELD_NOTES.md.
KNOWN_PLACEHOLDER_SHA256: Final = frozenset(
    {"8be14bdafb0b8b688651206d02fad0656c0be2095c0e18c36945f74a8f598bdd"}
)

_SOI = b"\xff\xd8\xff"
#: The end-of-image marker; a frame without it in its tail is truncated.
EOI: Final = b"\xff\xd9"
# SOF0-SOF15 minus DHT (C4), JPG (C8) and DAC (CC), which share the range.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7, SOI, EOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
_SOS = 0xDA


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
    return data.find(EOI, start) != -1


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


def without_exif(data: bytes) -> bytes:
    """The JPEG minus its APP1 Exif segment. Pillow parses the whole Exif block in Python on
    open (for the DPI), a tenth of the decode's time spent holding the GIL; the pixels do
    not depend on it. Copying the bytes once is far cheaper."""
    exif = _parse_header(data).exif
    if exif is None:
        return data
    offset, length = exif
    start = offset - 10  # FF E1, the 2-byte length, "Exif\0\0"
    return data[:start] + data[offset + length:]
