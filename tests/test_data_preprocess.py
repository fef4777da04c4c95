"""Crop-first preprocessing against the paper's whole-slice order, and its facts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vision.data.deeplesion import DataError
from vision.data.preprocess import (
    DEFAULT_CONFIG,
    context_positions,
    lesion_patch,
    lesion_patch_whole_slice,
    model_input,
)


def _volume(rng: np.random.Generator, n: int = 9, shape: tuple[int, int] = (200, 180)) -> dict[int, np.ndarray]:
    """Slices numbered 1..n of structured HU (smooth blobs + edges + noise)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = -1000 + 1100 * ((xx - shape[1] / 2) ** 2 / 70**2 + (yy - shape[0] / 2) ** 2 / 80**2 < 1)
    out = {}
    for k in range(1, n + 1):
        blob = 900 * (((xx - 60 - 3 * k) ** 2 + (yy - 90) ** 2) < 15**2)
        out[k] = (base + blob + rng.normal(0, 30, shape)).astype(np.int32)
    return out


def _provider(volume: dict[int, np.ndarray]):
    return volume.get


@settings(max_examples=25, deadline=None)
@given(
    cx=st.floats(0, 179),
    cy=st.floats(0, 199),
    w=st.floats(2, 60),
    h=st.floats(2, 60),
    spacing=st.floats(0.5, 2.0),
    interval=st.sampled_from([0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0]),
    seed=st.integers(0, 3),
)
def test_crop_first_agrees_with_whole_slice_order(cx, cy, w, h, spacing, interval, seed):
    volume = _volume(np.random.default_rng(seed))
    box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    args = (_provider(volume), 5, box, (spacing, spacing * 1.01), interval)
    notes: list[str] = []
    fast, fast_box = lesion_patch(*args, on_warning=notes.append)
    ref, ref_box = lesion_patch_whole_slice(*args, on_warning=notes.append)
    assert fast.shape == ref.shape == (3, 120, 120) and fast.dtype == np.uint8
    diff = np.abs(fast.astype(int) - ref.astype(int))
    assert diff.max() <= 1, f"max grey-level difference {diff.max()}"
    np.testing.assert_allclose(fast_box, ref_box)


def test_channels_are_two_mm_apart_with_linear_interpolation():
    # slice k holds the constant value 10*k HU; 1.25 mm slices -> ±1.6 slices
    volume = {k: np.full((64, 64), 10.0 * k) for k in range(1, 11)}
    patch, _ = lesion_patch(volume.get, 5, [30, 30, 34, 34], (1.0, 1.0), 1.25)
    assert context_positions(5, 1.25) == [3.4, 5.0, 6.6]
    expected_hu = np.array([34.0, 50.0, 66.0])
    lo, hi = DEFAULT_CONFIG.hu_window
    expected = np.rint((expected_hu - lo) * 255 / (hi - lo))
    np.testing.assert_array_equal(patch[:, 60, 60], expected)


def test_missing_neighbour_falls_back_to_nearest_slice_with_warning():
    volume = {k: np.full((64, 64), 100.0 * k) for k in (4, 5)}  # slice 6 is missing
    notes: list[str] = []
    patch, _ = lesion_patch(volume.get, 5, [30, 30, 34, 34], (1.0, 1.0), 2.0, on_warning=notes.append)
    assert len(notes) == 1 and "slice 6" in notes[0] and "5" in notes[0]
    np.testing.assert_array_equal(patch[2], patch[1])  # nearest existing = the key slice


def test_box_maps_into_patch_and_is_centred():
    volume = {k: np.zeros((512, 512)) for k in (1, 2, 3)}
    box = [200.0, 300.0, 240.0, 320.0]
    _, mapped = lesion_patch(volume.get, 2, box, (0.8, 0.8), 2.0)
    width, height = mapped[2] - mapped[0], mapped[3] - mapped[1]
    assert width == pytest.approx(40 * 0.8) and height == pytest.approx(20 * 0.8)
    centre = ((mapped[0] + mapped[2]) / 2, (mapped[1] + mapped[3]) / 2)
    assert abs(centre[0] - 59.5) <= 1 and abs(centre[1] - 59.5) <= 1


def test_replicated_border_outside_the_image():
    image = np.tile(np.arange(100, dtype=float) * 10, (100, 1))
    volume = {1: image, 2: image, 3: image}
    patch, _ = lesion_patch(volume.get, 2, [0, 40, 4, 44], (1.0, 1.0), 2.0)
    left = patch[1, :, :55]  # left of the image edge: all equal to column 0
    assert (left == left[0, 0]).all()


@pytest.mark.parametrize(
    "box, spacing, message",
    [
        ([500, 10, 520, 20], (1.0, 1.0), "outside"),
        ([10, 10, 5, 20], (1.0, 1.0), "malformed"),
        ([10, 10, 20, 20], (float("nan"), 1.0), "spacing"),
    ],
)
def test_bad_lesions_raise_data_errors(box, spacing, message):
    volume = {k: np.zeros((64, 64)) for k in (1, 2, 3)}
    with pytest.raises(DataError, match=message):
        lesion_patch(volume.get, 2, box, spacing, 2.0)


def test_missing_key_slice_is_an_error():
    with pytest.raises(DataError, match="key slice"):
        lesion_patch({1: np.zeros((8, 8))}.get, 2, [1, 1, 2, 2], (1, 1), 2.0)


def test_model_input_subtracts_pixel_mean():
    assert model_input(np.full((3, 2, 2), 50, np.uint8)).max() == 0.0
