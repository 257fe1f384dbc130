"""The local change test: does any small patch of the frame differ from the camera's last
stored frame by more than lighting, noise and re-encoding explain?

The global fingerprint (fingerprint.py) spreads a small change thinly over all its bits,
where it looks like JPEG noise: a 48 px person moves a few of 4096 bits, a re-encode moves
dozens. This test looks at the same reduced decode locally instead:

1. **Cells.** The 1/8-scale decode (libjpeg's DCT scaling: each pixel is the mean of an
   8x8 block, so JPEG error and sensor noise have already averaged out) is the grid of
   cells: 8 full-resolution px each (smaller frames, decoded at a larger scale, are pooled
   to the same 8 px). The cells of the last stored frame, as uint8, are the camera's
   reference: 240 x 135 = 32,400 bytes at 1920x1080.
2. **Tone.** The new frame's cells are mapped onto the reference's histogram (quantile
   matching), so gain, brightness, gamma and contrast drift, which are monotone tone
   curves, leave (almost) nothing behind.
3. **Score.** Each cell's remaining difference is divided by its tolerance,
   ``BASE + SLOPE * local range + LIT * brightness above mid-grey``, the local range being
   that of the reference's cells in the 3x3 neighbourhood: a re-encode or a gamma change
   moves the cells at a lamp or a sharp edge by up to a dozen grey levels, the middle of
   the road by one. The frame's score is
   the largest cell score; the judge compares it with the camera's threshold.

Everything here is pure: arrays in, numbers out. Measured on the frames of bench/dedup.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

#: A cell's side in full-resolution pixels: one pixel of the 1/8 decode. A 32 px person is
#: about 12 px wide, so it always covers at least three quarters of a cell's width; 16 px
#: cells could split it in halves, and on the held-out pairs of bench/dedup.py kept 90 % of
#: people from 32 px where 8 px cells keep 99 %. The price is memory: 32,400 bytes per
#: camera at 1080p instead of 8,160 (cells 8 px wide and 16 px tall, 16,200 bytes, kept
#: 96.6 %: under the 97 % aimed at).
CELL_PX: Final = 8
#: Tolerance of a cell, in grey levels: BASE + SLOPE * the 3x3 range of the reference
#: + LIT * how far the reference cell is above mid-grey. Chosen on the tuning half of
#: bench/roadusers.py only (see bench/dedup.py). The worst copies there are cells at lamps
#: and at the cyan traffic light when brightness, contrast or gamma change: clipped and
#: saturated light does not follow a tone curve. The range term pays for sharp edges, the
#: lit term for light sources; a steeper range term hides people on the zebra crossing,
#: whose stripes make a wide local range.
BASE: Final = 3.0
SLOPE: Final = 0.15
LIT: Final = 0.15
#: Cell scores are clipped here before they are averaged into the frame's noise level, so a
#: real change in a few cells does not count as noise.
NOISE_CLIP: Final = 1.0

Cells = npt.NDArray[np.uint8]
#: Cell sums as the index type, which bincount and take use without a conversion.
Sums = npt.NDArray[np.intp]
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Reference:
    """What a camera keeps of its last stored frame for the local test."""

    cells: Cells  # (rows, cols) uint8: each cell's mean grey level
    #: (width, height) of the full frame and of the decode the cells were pooled from.
    full: tuple[int, int]
    small: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return int(self.cells.nbytes)


@dataclass(frozen=True)
class Change:
    """The local test's result for one frame."""

    #: The largest cell score (difference / tolerance); 0 when nothing was compared.
    score: float
    #: The cell with that score, (x, y, w, h) in full-resolution pixels.
    box: Box
    #: This frame's noise level: the mean cell score, each clipped at NOISE_CLIP.
    noise: float
    #: The largest cell score with the roles swapped (the reference mapped onto the new
    #: frame's histogram). Small both ways means a tone change explains the difference; a
    #: flat reference (a black frame) explains anything one way only. None when `score`
    #: was already at or over the `reverse_below` the caller gave: not needed then.
    reverse: float | None = None


def factor(full: tuple[int, int], small: tuple[int, int]) -> int:
    """Decode pixels per cell side: 1 for the 1/8 decode of any frame over 512 px wide."""
    return max(1, round(CELL_PX * small[0] / full[0]))


def _sums(pixels: npt.NDArray[np.float32], f: int) -> Sums:
    """Sum of each f x f block of the decode, edges padded by repetition. Summed in float32,
    exact for these integers, and converted once."""
    if f == 1:  # the 1/8 decode of any frame over 512 px wide: the pixels are the cells
        return pixels.astype(np.intp)
    g = pixels
    h, w = g.shape
    ph, pw = -h % f, -w % f
    if ph or pw:
        g = np.pad(g, ((0, ph), (0, pw)), mode="edge")
    return np.asarray(g.reshape(g.shape[0] // f, f, g.shape[1] // f, f).sum(axis=(1, 3)),
                      dtype=np.intp)


def reference(pixels: npt.NDArray[np.float32], full: tuple[int, int]) -> Reference:
    """The reference kept after storing a frame, from the decode the judge made anyway."""
    small = (pixels.shape[1], pixels.shape[0])
    f = factor(full, small)
    return _from_sums(_sums(pixels, f), f, full, small)


def _from_sums(sums: Sums, f: int, full: tuple[int, int], small: tuple[int, int]
               ) -> Reference:
    n = f * f
    cells = (sums if n == 1 else (sums + n // 2) // n).astype(np.uint8)
    cells.setflags(write=False)
    return Reference(cells, full, small)


def assess(ref: Reference | None, pixels: npt.NDArray[np.float32], full: tuple[int, int],
           keep: npt.NDArray[np.bool_] | None = None, reverse_below: float = math.inf
           ) -> tuple[Change | None, Reference]:
    """`compare` against `ref` (None without one) and this frame's own reference, from one
    pooling of the decode: what the judge needs of every frame."""
    small = (pixels.shape[1], pixels.shape[0])
    f = factor(full, small)
    sums = _sums(pixels, f)
    change = None
    if ref is not None and ref.full == full and ref.small == small:
        change = _compare_sums(ref, sums, f, keep, reverse_below)
    return change, _from_sums(sums, f, full, small)


def compared_cells(keep: npt.NDArray[np.bool_] | None, ref: Reference) -> npt.NDArray[np.bool_]:
    """Cells the test looks at: those with every decode pixel kept by the mask."""
    rows, cols = ref.cells.shape
    if keep is None:
        return np.ones((rows, cols), np.bool_)
    f = factor(ref.full, ref.small)
    k = keep
    ph, pw = rows * f - k.shape[0], cols * f - k.shape[1]
    if ph or pw:
        k = np.pad(k, ((0, ph), (0, pw)), mode="edge")
    return np.asarray(k.reshape(rows, f, cols, f).all(axis=(1, 3)))


def _range3(cells: Cells) -> Cells:
    """Max minus min of each cell's 3x3 neighbourhood (edges clamp), by shifted slices.
    The edge padding is written by hand: np.pad took as long as all the rest."""
    h, w = cells.shape
    p = np.empty((h + 2, w + 2), np.uint8)
    p[1:-1, 1:-1] = cells
    p[0, 1:-1], p[-1, 1:-1] = cells[0], cells[-1]
    p[:, 0], p[:, -1] = p[:, 1], p[:, -2]
    hi = np.maximum(np.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    lo = np.minimum(np.minimum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    hi = np.maximum(np.maximum(hi[:-2], hi[1:-1]), hi[2:])
    lo = np.minimum(np.minimum(lo[:-2], lo[1:-1]), lo[2:])
    return np.asarray(hi - lo)  # never negative: no wrap-around in uint8


def _tolerance(levels: npt.NDArray[np.float32], ranges: Cells) -> npt.NDArray[np.float32]:
    """BASE + SLOPE * range + LIT * (level above 128), in place on one float32 array: the
    judge computes it for every cell of every polled frame."""
    tolerance = np.maximum(levels, np.float32(128))
    tolerance -= np.float32(128)
    tolerance *= np.float32(LIT)
    slope = ranges.astype(np.float32)
    slope *= np.float32(SLOPE)
    tolerance += slope
    tolerance += np.float32(BASE)
    return tolerance


def _tone_map(sums: Sums, n: int, target: Cells) -> npt.NDArray[np.float32]:
    """Each of the new frame's cell sums (0 .. 255 n) mapped onto the reference's grey
    levels by rank: a run of equal values takes the mean of the reference values at the
    same ranks, so ties (flat areas) land on the middle, not an end, of their range.
    The mapping is worked out per possible sum (256 n values), then looked up per cell."""
    hist = np.bincount(sums, minlength=255 * n + 1)
    hi = np.cumsum(hist)
    lo = hi - hist
    ref_hist = np.bincount(target, minlength=256)
    knots = np.concatenate(([0], np.cumsum(ref_hist))).astype(np.float64)
    totals = np.concatenate(([0], np.cumsum(ref_hist * np.arange(256)))).astype(np.float64)
    # The sum of the r smallest reference values is linear in r within one grey level.
    acc_hi = np.interp(hi, knots, totals)
    acc_lo = np.interp(lo, knots, totals)
    level = np.divide(acc_hi - acc_lo, hist, out=np.zeros(hist.shape), where=hist > 0)
    return np.asarray(level.astype(np.float32).take(sums))


def compare(ref: Reference, pixels: npt.NDArray[np.float32],
            keep: npt.NDArray[np.bool_] | None = None, reverse_below: float = math.inf
            ) -> Change | None:
    """Score `pixels` (the new frame's decode) against `ref`; None when the two cannot be
    compared (another frame size or decode scale: the camera changed resolution). The
    reverse score is computed only while the score is under `reverse_below`."""
    if (pixels.shape[1], pixels.shape[0]) != ref.small:
        return None
    f = factor(ref.full, ref.small)
    return _compare_sums(ref, _sums(pixels, f), f, keep, reverse_below)


def _compare_sums(ref: Reference, sums: Sums, f: int,
                  keep: npt.NDArray[np.bool_] | None, reverse_below: float) -> Change | None:
    if sums.shape != ref.cells.shape:
        return None
    n = f * f
    if keep is None:
        where = None
        target, new = ref.cells.ravel(), sums.ravel()
        rng = _range3(ref.cells).ravel()
    else:
        use = compared_cells(keep, ref)
        if not use.any():
            return Change(0.0, (0, 0, 0, 0), 0.0)
        where = np.flatnonzero(use)
        target, new = ref.cells.ravel()[where], sums.ravel()[where]
        rng = _range3(ref.cells).ravel()[where]
    levels = target.astype(np.float32)
    tolerance = _tolerance(levels, rng)
    scores = np.abs(_tone_map(new, n, target) - levels)
    scores /= tolerance
    at = int(np.argmax(scores))
    flat = at if where is None else int(where[at])
    row, col = divmod(flat, ref.cells.shape[1])
    score = float(scores[at])
    reverse = None
    if score < reverse_below:
        own = (new if n == 1 else (new + n // 2) // n).astype(np.uint8)
        mean = new.astype(np.float32) / np.float32(n)
        back = np.abs(_tone_map(target.astype(np.intp), 1, own) - mean)
        reverse = round(float((back / tolerance).max()), 3)
    noise = float(np.minimum(scores, np.float32(NOISE_CLIP), out=scores).mean())
    return Change(round(score, 3), cell_box(ref, row, col), round(noise, 4), reverse)


def cell_box(ref: Reference, row: int, col: int) -> Box:
    """A cell's (x, y, w, h) in full-resolution pixels, clipped to the frame."""
    f = factor(ref.full, ref.small)
    sx, sy = ref.full[0] / ref.small[0], ref.full[1] / ref.small[1]
    x0, y0 = round(col * f * sx), round(row * f * sy)
    x1 = min(round((col + 1) * f * sx), ref.full[0])
    y1 = min(round((row + 1) * f * sy), ref.full[1])
    return x0, y0, x1 - x0, y1 - y0


def cell_scores(ref: Reference, pixels: npt.NDArray[np.float32],
                keep: npt.NDArray[np.bool_] | None = None) -> npt.NDArray[np.float64] | None:
    """Every cell's score as a (rows, cols) grid (NaN where masked): for drawing."""
    if (pixels.shape[1], pixels.shape[0]) != ref.small:
        return None
    f = factor(ref.full, ref.small)
    sums = _sums(pixels, f)
    use = compared_cells(keep, ref)
    grid = np.full(ref.cells.shape, np.nan)
    if use.any():
        target = ref.cells[use]
        levels = target.astype(np.float32)
        mapped = _tone_map(sums[use], f * f, target)
        grid[use] = np.abs(mapped - levels) / _tolerance(levels, _range3(ref.cells)[use])
    return grid
