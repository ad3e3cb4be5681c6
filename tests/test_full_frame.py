"""The full-frame paste: geometry, blend weights, colour match and the seam figure."""

from __future__ import annotations

import numpy as np
import pytest

from talk3d.render.full_frame import Compositor, Placement, seam_step


def smooth_plate(width: int = 200, height: int = 120) -> np.ndarray:
    """A low-frequency colour image (resampling it costs well under one level)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 90 * np.sin(x / 13.0) * np.cos(y / 17.0)
    g = 128 + 80 * np.cos(x / 11.0 + y / 19.0)
    b = 60 + 0.8 * x
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def crop_of(plate: np.ndarray, box: tuple[int, int, int], side_out: int) -> np.ndarray:
    """The crop prep would cut: ``box`` in plate pixels, scaled to ``side_out`` (area/linear)."""
    import cv2

    x0, y0, side = box
    crop = plate[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side_out < side else cv2.INTER_LINEAR
    return cv2.resize(crop, (side_out, side_out), interpolation=interp)


def test_same_size_crop_lands_exactly():
    plate = smooth_plate()
    box = (40, 10, 64)
    place = Placement.of_box(list(box), [200, 120], (200, 120))
    assert place.roi == (40, 10, 104, 74)
    comp = Compositor(place, colour_match=False)
    render = plate[10:74, 40:104].copy()
    out = comp.compose(plate, render, np.ones((64, 64), np.float32))
    assert np.array_equal(out, plate)


def test_shifted_render_is_caught():
    """A paste one pixel off differs from the plate; the right one does not (the test can fail)."""
    plate = smooth_plate()
    comp = Compositor(Placement.of_box([40, 10, 64], [200, 120], (200, 120)), colour_match=False)
    off = plate[10:74, 41:105].copy()
    out = comp.compose(plate, off, np.ones((64, 64), np.float32))
    assert np.abs(out.astype(int) - plate).max() > 3


@pytest.mark.parametrize("frame_scale,render_side", [(1, 48), (2, 48), (1, 200)])
def test_scaled_crop_lands_within_resampling_error(frame_scale, render_side):
    """A crop rendered at another side (smaller or larger than the box), pasted into the source
    decoded at 1x or 2x prep's size."""
    import cv2

    small = smooth_plate()
    plate = small if frame_scale == 1 else cv2.resize(small, (400, 240), interpolation=cv2.INTER_LINEAR)
    box = (50, 20, 80)
    render = crop_of(small, box, render_side)
    place = Placement.of_box(list(box), [200, 120], (plate.shape[1], plate.shape[0]))
    x_lo, y_lo, x_hi, y_hi = place.roi
    assert (x_lo, y_lo, x_hi - x_lo) == (50 * frame_scale, 20 * frame_scale, 80 * frame_scale)
    person = np.ones((render_side, render_side), np.float32)
    out = Compositor(place, colour_match=False).compose(plate, render, person)
    inner = (slice(y_lo + 6, y_hi - 6), slice(x_lo + 6, x_hi - 6))
    err = np.abs(out[inner].astype(float) - plate[inner]).mean()
    shifted = np.abs(np.roll(out, frame_scale, axis=1)[inner].astype(float) - plate[inner]).mean()
    assert err < 2.0 and shifted > 2 * err


def test_weights_zero_outside_person_and_at_inner_sides():
    plate = smooth_plate()
    place = Placement.of_box([40, 0, 64], [200, 120], (200, 120))  # top side on the frame's edge
    comp = Compositor(place, colour_match=False)
    person = np.zeros((64, 64), np.float32)
    person[:, :32] = 1.0
    w = comp.weights(person, None)[..., 0]
    assert w[:, -8:].max() == 0.0                      # right half: no person, plate only
    assert w[:, 0].max() == pytest.approx(0.0, abs=1e-3)  # left side inside the frame: feathered to 0
    assert w[0, 10:20].min() > 0.9                     # top side on the frame edge: no feather
    assert w[30, 10:20].min() > 0.99
    white = np.full((64, 64, 3), 255, np.uint8)
    out = comp.compose(plate, white, person)
    assert np.array_equal(out[:, 104:], plate[:, 104:]) and np.array_equal(out[:, :40], plate[:, :40])


def test_plate_person_mask_covers_the_recorded_head():
    """Where only the plate shows a person (a turned render), the render replaces it too."""
    place = Placement.of_box([40, 10, 64], [200, 120], (200, 120))
    comp = Compositor(place, colour_match=False)
    person = np.zeros((64, 64), np.float32)
    plate_person = np.zeros((64, 64), np.float32)
    plate_person[20:40, 20:40] = 1.0
    assert comp.weights(person, None).max() == 0.0
    assert comp.weights(person, plate_person)[10 + 30 - 10, 30, 0] > 0.99


def test_colour_match_removes_a_cast_and_lowers_the_seam():
    plate = smooth_plate()
    box = (40, 20, 64)
    place = Placement.of_box(list(box), [200, 120], (200, 120))
    cast = np.clip(plate[20:84, 40:104].astype(int) + 24, 0, 255).astype(np.uint8)
    person = np.ones((64, 64), np.float32)
    plain = Compositor(place, colour_match=False).compose(plate, cast, person)
    matched = Compositor(place, colour_match=True).compose(plate, cast, person)
    source_seam = seam_step(plate, place)
    assert seam_step(plain, place) > source_seam + 5
    assert abs(seam_step(matched, place) - source_seam) < abs(seam_step(plain, place) - source_seam) / 2
    inner = (slice(40, 60), slice(60, 80))
    assert np.abs(matched[inner].astype(int) - plate[inner]).mean() < np.abs(plain[inner].astype(int) - plate[inner]).mean()


def test_seam_is_nan_when_the_crop_is_the_frame():
    plate = smooth_plate(64, 64)
    place = Placement.of_box([0, 0, 64], [64, 64], (64, 64))
    assert np.isnan(seam_step(plate, place))
    assert np.isinf(place.border_distance()).all()
