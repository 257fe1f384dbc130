"""Byte checks and fingerprints on the real CriTer fixture frame."""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from lyoncam_daemon.frames import fingerprint as fingerprint_module
from lyoncam_daemon.frames import jpeg
from lyoncam_daemon.frames.fingerprint import (
    ALGORITHMS,
    CorruptFrame,
    Fingerprint,
    IncompatibleFingerprints,
    MaskError,
    RoiMask,
    decode_gray,
    fingerprint,
)
from lyoncam_daemon.frames.jpeg import (
    KNOWN_PLACEHOLDER_SHA256,
    exif_datetime,
    has_eoi,
    jpeg_dimensions,
    looks_like_jpeg,
    sha256_hex,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "CWL9018_night.jpg"


@pytest.fixture(scope="module")
def src() -> bytes:
    return FIXTURE.read_bytes()


def _encode(im: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def with_size(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its SOF0 header claiming another size."""
    at = data.index(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def test_known_placeholder_and_sha(src: bytes) -> None:
    assert "8be14bdafb0b8b688651206d02fad0656c0be2095c0e18c36945f74a8f598bdd" in (
        KNOWN_PLACEHOLDER_SHA256
    )
    assert sha256_hex(src) == hashlib.sha256(src).hexdigest()


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"", False), (b"<!DOCTYPE html><html>", False), (b"\xff\xd8", False),
     (b"\x89PNG\r\n\x1a\n", False), (b"\xff\xd8\xff\xe0", True)],
)
def test_looks_like_jpeg(data: bytes, expected: bool) -> None:
    assert looks_like_jpeg(data) is expected


def test_eoi_only_in_the_tail(src: bytes) -> None:
    assert has_eoi(src)
    assert not has_eoi(src[:-2])
    assert not has_eoi(src[:141_620])
    # EOI followed by a little padding still counts; one pushed out of the tail does not.
    assert has_eoi(src + b"\x00" * 100)
    assert not has_eoi(src + b"\x00" * 5000)


def test_header_eoi_does_not_make_a_short_truncated_frame_whole(src: bytes) -> None:
    # An EOI inside a header segment (as in an EXIF thumbnail) within the last 4 KB.
    comment = b"\xff\xfe" + struct.pack(">H", 2 + 4) + b"\xff\xd9\xff\xd9"
    data = src[:2] + comment + src[2:]
    cut = data[: data.index(b"\xff\xda") + 1500]
    assert len(cut) < 4096 + 2000
    assert b"\xff\xd9" in cut[-4096:]
    assert not has_eoi(cut)
    assert has_eoi(data)


def test_dimensions_from_the_header(src: bytes) -> None:
    assert jpeg_dimensions(src) == (1920, 1080)
    assert jpeg_dimensions(with_size(src, 60000, 60000)) == (60000, 60000)
    assert jpeg_dimensions(b"\xff\xd8\xff" + bytes(range(256)) * 10) is None
    assert jpeg_dimensions(b"<html></html>") is None
    prog = _encode(Image.new("RGB", (321, 123), (9, 9, 9)), progressive=True)
    assert b"\xff\xc2" in prog
    assert jpeg_dimensions(prog) == (321, 123)


def test_exif_datetime(src: bytes) -> None:
    assert exif_datetime(src) == "2024-05-14T01:15:37"
    plain = _encode(Image.new("RGB", (16, 16)))
    assert exif_datetime(plain) is None
    exif = Image.Exif()
    exif[0x0132] = "2023:01:02 03:04:05"
    assert exif_datetime(_encode(Image.new("RGB", (16, 16)), exif=exif)) == "2023-01-02T03:04:05"
    exif[0x0132] = "0000:00:00 00:00:00"
    assert exif_datetime(_encode(Image.new("RGB", (16, 16)), exif=exif)) is None
    assert exif_datetime(b"not a jpeg") is None


def test_decode_is_dct_scaled_grey(src: bytes) -> None:
    pixels, full = decode_gray(src, (64, 64))
    assert full == (1920, 1080)
    assert pixels.shape == (135, 240)  # 1/8 scale: never a full-size decode
    assert 40 < float(pixels.mean()) < 130


def test_exif_is_stripped_before_decoding_and_the_pixels_do_not_change(
    src: bytes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert exif_datetime(src) is not None  # the fixture has an Exif segment to strip
    stripped = jpeg.without_exif(src)
    assert exif_datetime(stripped) is None and b"Exif\x00\x00" not in stripped
    app1 = src.index(b"\xff\xe1")  # the whole segment goes: marker, length, payload
    (length,) = struct.unpack_from(">H", src, app1 + 2)
    assert src[app1 + 4 : app1 + 10] == b"Exif\x00\x00"
    assert stripped == src[:app1] + src[app1 + 2 + length :]
    opened: list[bytes] = []
    pillow_open = Image.open

    def spy(fp: io.BytesIO, *args: Any, **kw: Any) -> ImageFile.ImageFile:
        opened.append(fp.getvalue())
        return pillow_open(fp, *args, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(Image, "open", spy)
        pixels, full = decode_gray(src)
        cut_pixels, cut_full = decode_gray(src[: len(src) // 2])  # truncated: stripped too
    assert len(opened) == 2 and not [data for data in opened if b"Exif\x00\x00" in data]
    monkeypatch.setattr(fingerprint_module, "without_exif", lambda data: data)
    assert np.array_equal(decode_gray(src)[0], pixels) and decode_gray(src)[1] == full
    assert np.array_equal(decode_gray(src[: len(src) // 2])[0], cut_pixels)
    assert cut_full == full and cut_pixels.shape == pixels.shape


def test_a_jpeg_without_exif_is_decoded_from_the_very_bytes_given() -> None:
    plain = _encode(Image.new("RGB", (16, 16)))
    assert jpeg.without_exif(plain) is plain


def test_truncated_frame_fingerprints_without_the_global_flag(src: bytes) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    whole = fingerprint(src, "phash", 64)
    # Most of the frame received: close to the whole one, but not equal.
    near_end = fingerprint(src[:-3000], "phash", 64)
    half = fingerprint(src[: len(src) // 2], "phash", 64)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert 0 < whole.distance(near_end) < whole.distance(half)
    with pytest.raises(OSError):  # the strict decoder still refuses it
        Image.open(io.BytesIO(src[: len(src) // 2])).load()


@pytest.mark.parametrize(
    "data",
    [b"\xff\xd8\xff" + np.random.default_rng(1).bytes(300_000), b"\xff\xd8\xff\xe0\x00\x10", b""],
)
def test_undecodable_is_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptFrame):
        fingerprint(data)


def test_missing_quantization_tables_is_corrupt(src: bytes) -> None:
    out, pos = bytearray(src[:2]), 2
    while src[pos + 1] != 0xDA:
        (length,) = struct.unpack_from(">H", src, pos + 2)
        if src[pos + 1] != 0xDB:
            out += src[pos : pos + 2 + length]
        pos += 2 + length
    out += src[pos:]
    with pytest.raises(CorruptFrame):
        fingerprint(bytes(out))


@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("size", [8, 16, 64])
def test_fingerprint_shape_and_json(src: bytes, algo: str, size: int) -> None:
    fp = fingerprint(src, algo, size)
    assert (fp.algo, fp.hash_size) == (algo, size)
    assert len(fp.hex) == (size * size + 3) // 4
    assert 0 < int(fp.hex, 16).bit_count() < size * size
    assert fp.distance(fp) == 0
    assert Fingerprint.from_json(fp.to_json()) == fp
    assert fingerprint(src, algo, size) == fp  # deterministic


def test_distance_is_hamming_and_checks_compatibility() -> None:
    a = Fingerprint("phash", 2, "f")
    b = Fingerprint("phash", 2, "6")
    assert a.distance(b) == b.distance(a) == 2
    with pytest.raises(IncompatibleFingerprints):
        a.distance(Fingerprint("dhash", 2, "f"))
    with pytest.raises(IncompatibleFingerprints):
        a.distance(Fingerprint("phash", 4, "ffff"))


@pytest.mark.parametrize(
    "bad",
    [{"algo": "phash", "hash_size": 2, "hex": "z"},
     {"algo": "phash", "hash_size": 2, "hex": "ff"},
     {"algo": "md5", "hash_size": 2, "hex": "f"},
     {"algo": "phash", "hash_size": 2, "hex": "f", "v": 999},
     {"algo": "phash", "hash_size": True, "hex": "f"},
     {"algo": "phash", "hex": "f"}],
)
def test_from_json_rejects_malformed(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Fingerprint.from_json(bad)


def test_rect_mask_maps_outwards_onto_the_small_grid() -> None:
    mask = RoiMask([(0, 0, 9, 9), (1900, 1070, 20, 10)])
    keep = mask.keep((1920, 1080), (240, 135))
    assert keep.shape == (135, 240)
    assert not keep[0, 0] and not keep[1, 1]  # 9 px -> covers small pixels 0 and 1
    assert keep[2, 2]
    assert not keep[134, 239] and not keep[133, 237]
    assert int((~keep).sum()) == 4 + 3 * 2
    assert mask.keep((1920, 1080), (240, 135)) is keep  # cached


def test_mask_image_white_is_compared(tmp_path: Path) -> None:
    img = Image.new("L", (192, 108), 255)
    img.paste(0, (0, 0, 96, 108))  # left half ignored
    path = tmp_path / "mask.png"
    img.save(path)
    mask = RoiMask.load((), path)
    assert mask is not None
    keep = mask.keep((1920, 1080), (240, 135))
    assert not keep[:, :120].any() and keep[:, 120:].all()


def test_mask_ignores_changes_inside_it(src: bytes) -> None:
    frame = Image.open(io.BytesIO(src)).convert("RGB")
    changed = frame.copy()
    changed.paste((250, 250, 250), (100, 100, 400, 300))
    a, b = _encode(frame, quality=90), _encode(changed, quality=90)
    mask = RoiMask([(90, 90, 320, 220)])
    assert fingerprint(a, "phash", 64).distance(fingerprint(b, "phash", 64)) > 150
    assert fingerprint(a, "phash", 64, mask).distance(fingerprint(b, "phash", 64, mask)) <= 2


def test_bad_mask_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(MaskError, match=r"nope\.png"):
        RoiMask.load((), missing)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    with pytest.raises(MaskError, match=r"garbage\.png"):
        RoiMask.load((), garbage)
    assert RoiMask.load((), None) is None


@pytest.mark.parametrize("size", [1, 2, 24, 63, 4095, 4096])
def test_phash_median_is_numpys_to_the_bit(size: int) -> None:
    """Stored fingerprints must not change with the faster median: the same value as
    np.median, in float32, for odd and even counts (hash sizes)."""
    from lyoncam_daemon.frames.fingerprint import _median

    rng = np.random.default_rng(size)
    for _ in range(20):
        values = (rng.standard_normal(size) * 1000).astype(np.float32)
        assert _median(values) == float(np.median(values))


def test_a_fingerprint_keeps_its_hex_leading_zeros_and_cannot_be_changed() -> None:
    """Kept as an int (every camera holds one: 576 bytes, not 1,073 as text)."""
    fp = Fingerprint("phash", 4, "00f0")
    assert fp.hex == "00f0" and fp.to_json()["hex"] == "00f0"
    assert fp == Fingerprint("phash", 4, "00f0") and len({fp, Fingerprint("phash", 4, "00f0")}) == 1
    assert fp != Fingerprint("phash", 4, "00f1") and fp != Fingerprint("dhash", 4, "00f0")
    assert fp.distance(Fingerprint("phash", 4, "000f")) == 8
    with pytest.raises(AttributeError):
        fp.algo = "dhash"
