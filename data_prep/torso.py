"""Per-frame torso translation: where the shoulders and clothes sit in each frame.

The head pose does not say where the body is: people sway, lean and shrug. On the Obama
clip the held-out frames' torso sits ~3 px (at 256) left of the training frames' mean, and
undoing that shift halves the torso's pixel error. Prep therefore tracks a 2D offset of the
torso (phase correlation of each frame against a typical training frame, restricted to the
pixels that are torso in nearly every frame); fit and render warp the image-space torso by it,
like the head is placed by its tracked pose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from talk3d.dataset import MASK_TORSO, frame_name

MIN_REGION_FRACTION = 0.02
"""Smallest steady-torso area (fraction of the frame) worth tracking; below it offsets stay 0."""
MIN_RESPONSE = 0.05
"""Phase-correlation peaks weaker than this are unreliable: the frame's offset is interpolated."""


def _read_resized(path: Path, size: int, labels: bool = False) -> np.ndarray:
    """A frame as ``(size, size)`` float32 grey levels, or a mask as uint8 labels (nearest neighbour)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED if labels else cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise OSError(f"could not read '{path}'")
    if labels:
        return cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def steady_torso_window(masks_dir: Path, frames: np.ndarray, size: int, presence: float = 0.9) -> np.ndarray | None:
    """Soft window ``(size, size)`` float32 over the pixels labelled torso in ``presence`` of ``frames``.

    Returns None when that region covers less than :data:`MIN_REGION_FRACTION` of the frame
    (no visible body, or one that moves too much to have a steady part).
    """
    import cv2

    freq = np.mean([_read_resized(masks_dir / frame_name(int(i), "png"), size, labels=True) == MASK_TORSO for i in frames], axis=0)
    region = (freq >= presence).astype(np.float32)
    if region.mean() < MIN_REGION_FRACTION:
        return None
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    taper = np.zeros((size, size), np.float32)
    taper[y0:y1, x0:x1] = cv2.createHanningWindow((int(x1 - x0), int(y1 - y0)), cv2.CV_32F) if min(
        y1 - y0, x1 - x0) > 2 else 1.0
    # keep off the region's edges (a static neighbour there pulls the estimate towards 0)
    erode = max(1, size // 64)
    region = cv2.erode(region, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    if region.mean() < MIN_REGION_FRACTION / 2:
        return None
    soft = cv2.GaussianBlur(region, (0, 0), sigmaX=size / 128)
    return np.ascontiguousarray(taper * soft)


def track_torso(dataset_dir: Path, num_frames: int, train: np.ndarray, work_size: int = 256,
                reference_frames: int = 60, smooth_frames: int = 5) -> tuple[np.ndarray, dict[str, float]]:
    """Torso offset of every frame relative to its median position.

    Args:
        dataset_dir: folder with ``frames/`` and ``masks/`` written.
        num_frames: ``N``; train: ``(T,)`` the training frames, which build the reference image.
        work_size: side the frames are compared at.
        reference_frames: training frames averaged into the reference (evenly spaced).
        smooth_frames: Savitzky-Golay window over time (<= 2 disables it).
    Returns:
        offsets ``(N, 2)`` float32 in image widths (x right, y down; the torso content moved by
        ``offset * size`` pixels) and stats (``torso_tracked``, ``torso_shift_std_px256``: the
        larger of the x/y standard deviations in pixels at 256, ``torso_low_response_frames``).
    """
    import cv2
    from scipy.signal import savgol_filter

    frames_dir, masks_dir = Path(dataset_dir) / "frames", Path(dataset_dir) / "masks"
    train = np.asarray(train) if len(train) else np.arange(1)
    sample = np.unique(train[np.linspace(0, train.size - 1, min(reference_frames, train.size)).round().astype(int)])
    window = steady_torso_window(masks_dir, sample, work_size)
    if window is None:
        return np.zeros((num_frames, 2), np.float32), {"torso_tracked": 0.0}
    # a sharp reference: the sampled training frame closest to their mean (the mean itself is
    # blurred by the sway and biases phase correlation towards zero shift)
    grays = np.stack([_read_resized(frames_dir / frame_name(int(i), "jpg"), work_size) for i in sample])
    mean = grays.mean(axis=0)
    reference = grays[int(np.argmin([float(np.sum(window * (g - mean) ** 2)) for g in grays]))]
    del grays
    shifts = np.zeros((num_frames, 2), np.float64)
    good = np.zeros(num_frames, bool)
    for i in range(num_frames):
        img = _read_resized(frames_dir / frame_name(i, "jpg"), work_size)
        # phaseCorrelate scales its inputs by the window in place: give it copies
        (dx, dy), response = cv2.phaseCorrelate(reference.copy(), img, window.copy())
        shifts[i] = (dx, dy)
        good[i] = response >= MIN_RESPONSE and abs(dx) < work_size / 4 and abs(dy) < work_size / 4
    if not good.any():
        return np.zeros((num_frames, 2), np.float32), {"torso_tracked": 0.0, "torso_low_response_frames": num_frames}
    if not good.all():
        t = np.arange(num_frames)
        for j in range(2):
            shifts[~good, j] = np.interp(t[~good], t[good], shifts[good, j])
    win = min(smooth_frames, num_frames if num_frames % 2 else num_frames - 1)
    if win >= 3:
        shifts = savgol_filter(shifts, win, min(2, win - 1), axis=0, mode="interp")
    shifts -= np.median(shifts, axis=0)
    offsets = (shifts / work_size).astype(np.float32)
    stats = {"torso_tracked": 1.0, "torso_low_response_frames": int((~good).sum()),
             "torso_shift_std_px256": float(shifts.std(axis=0).max() * 256 / work_size)}
    return offsets, stats
