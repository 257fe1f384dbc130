"""The local change test's pure parts, on arrays: the reference's size, tone matching, the
changed cell's box, masks, and frames that cannot be compared."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lyoncam_daemon.frames.change import CELL_PX, cell_box, compare, compared_cells, reference

FULL = (1920, 1080)


def scene(seed: int = 0) -> npt.NDArray[np.float32]:
    """A 1/8-scale decode of a 1080p frame: smooth gradients and a few sharp blocks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:135, 0:240]
    g = 40 + 0.5 * x + 0.3 * y
    for _ in range(12):
        r, c = rng.integers(0, 130), rng.integers(0, 235)
        g[r:r + 5, c:c + 5] += 60
    return np.clip(np.round(g), 0, 255).astype(np.float32)


def test_the_reference_of_a_1080p_frame_is_its_1_8_decode_in_32400_bytes() -> None:
    ref = reference(scene(), FULL)
    assert ref.cells.shape == (135, 240) and ref.cells.dtype == np.uint8
    assert ref.nbytes == 32_400
    assert ref.small == (240, 135) and ref.full == FULL


def test_the_same_frame_scores_zero_and_a_tone_curve_almost_nothing() -> None:
    g = scene()
    ref = reference(g, FULL)
    same = compare(ref, g)
    assert same is not None and same.score == 0.0
    toned = np.round(255 * (g / 255) ** 0.8).astype(np.float32)
    brighter = np.clip(np.round(g * 1.08), 0, 255).astype(np.float32)
    for changed in (toned, brighter):
        c = compare(ref, changed)
        assert c is not None and c.score < 1.0  # under the judge's threshold of 1.5


def test_a_small_dark_patch_is_found_where_it_is() -> None:
    g = scene()
    ref = reference(g, FULL)
    person = g.copy()
    person[100:104, 51:53] -= 35  # 16 x 32 full-resolution px, 35 levels darker
    c = compare(ref, person)
    assert c is not None and c.score > 1.5
    x, y, w, h = c.box
    assert (w, h) == (CELL_PX, CELL_PX)
    assert 51 * 8 - CELL_PX <= x <= 53 * 8 and 100 * 8 - CELL_PX <= y <= 104 * 8


def test_a_flat_reference_is_explained_one_way_only() -> None:
    flat = reference(np.full((135, 240), 90, np.float32), FULL)
    c = compare(flat, scene())
    assert c is not None and c.score == 0.0  # any frame maps onto one grey level...
    assert c.reverse is not None and c.reverse > 5  # ...but one grey level onto no scene


def test_masked_cells_are_not_compared() -> None:
    g = scene()
    ref = reference(g, FULL)
    changed = g.copy()
    changed[100:104, 51:53] -= 35
    keep = np.ones(g.shape, np.bool_)
    keep[98:106, 49:55] = False
    use = compared_cells(keep, ref)
    assert not use[98:106, 49:55].any() and use.sum() == 240 * 135 - 8 * 6
    c = compare(ref, changed, keep)
    assert c is not None and c.score < 1.0


def test_frames_of_another_size_cannot_be_compared() -> None:
    ref = reference(scene(), FULL)
    assert compare(ref, np.zeros((90, 160), np.float32)) is None


def test_a_cell_box_is_in_full_resolution_pixels() -> None:
    ref = reference(scene(), FULL)
    assert cell_box(ref, 0, 0) == (0, 0, CELL_PX, CELL_PX)
    assert cell_box(ref, 134, 239) == (1912, 1072, 8, 8)


def test_a_cell_box_is_clipped_to_the_frame() -> None:
    # A 100x60 frame is decoded at full scale: 8x8 pixels per cell, the last ones padded.
    ref = reference(np.zeros((60, 100), np.float32), (100, 60))
    assert ref.cells.shape == (8, 13)
    assert cell_box(ref, 7, 12) == (96, 56, 4, 4)
