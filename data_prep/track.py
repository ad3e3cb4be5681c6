"""Face tracking over a whole video, gap filling, and the fixed square crop."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from talk3d.console import make_progress
from talk3d.errors import UserError
from talk3d.face import FaceTracker


@dataclass
class TrackResult:
    """Raw tracking of the decoded (uncropped) video."""

    landmarks: np.ndarray
    """``(N, 478, 3)`` float32 source-pixel landmarks (zeros where not detected)."""
    valid: np.ndarray
    """``(N,)`` bool: a face was detected."""
    num_faces: np.ndarray
    """``(N,)`` uint8: faces seen in each frame."""


def track_frames(frames: Iterable[np.ndarray], total: int, description: str = "tracking face") -> TrackResult:
    """Run FaceMesh (tracking mode) on every frame.

    Args:
        frames: iterable of ``(H, W, 3)`` uint8 RGB frames.
        total: expected count (for the progress bar only).
    """
    lms: list[np.ndarray] = []
    valid: list[bool] = []
    faces: list[int] = []
    empty = np.zeros((478, 3), np.float32)
    with FaceTracker(static=False) as tracker, make_progress() as bar:
        task = bar.add_task(description, total=total, status="")
        for frame in frames:
            pts = tracker.detect(frame)
            lms.append(empty if pts is None else pts)
            valid.append(pts is not None)
            faces.append(tracker.num_faces)
            bar.update(task, advance=1, status=f"{sum(valid)}/{len(valid)} with a face")
    return TrackResult(np.stack(lms).astype(np.float32), np.array(valid, bool), np.array(faces, np.uint8))


def frame_ranges(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` index ranges where ``mask`` is true."""
    idx = np.flatnonzero(np.asarray(mask, bool))
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]])
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def format_ranges(ranges: list[tuple[int, int]], limit: int = 6) -> str:
    """``"12-30, 88, 140-141"`` (first ``limit`` ranges, then ``...``)."""
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:limit]]
    return ", ".join(parts) + (", ..." if len(ranges) > limit else "")


def fill_gaps(landmarks: np.ndarray, valid: np.ndarray, max_missing: float = 0.05) -> np.ndarray:
    """Linearly interpolate landmarks over frames without a face (ends are held).

    Args:
        landmarks: ``(N, 478, 3)``; valid: ``(N,)`` bool.
        max_missing: largest allowed fraction of frames without a face.
    Returns:
        ``(N, 478, 3)`` float32 with every frame filled.
    Raises:
        UserError: naming the frame ranges without a face when there are too many.
    """
    valid = np.asarray(valid, bool)
    n = valid.size
    missing = ~valid
    if valid.sum() == 0:
        raise UserError("no face was found in any frame; give a video where one face is clearly visible")
    if missing.mean() > max_missing:
        raise UserError(
            f"no face found in {missing.sum()} of {n} frames ({100 * missing.mean():.0f}%, more than "
            f"{100 * max_missing:.0f}%): frames {format_ranges(frame_ranges(missing))}; trim those parts "
            f"or use a video where the face stays visible"
        )
    out = np.asarray(landmarks, np.float32).copy()
    if missing.any():
        t = np.arange(n)
        flat = out.reshape(n, -1)
        good = np.flatnonzero(valid)
        for j in range(flat.shape[1]):
            flat[missing, j] = np.interp(t[missing], good, flat[good, j])
    return out


def _face_frame(landmarks: np.ndarray, valid: np.ndarray, shift_down: float) -> tuple[float, float, float]:
    """Median face centre ``(cx, cy)`` (moved down by ``shift_down`` face heights) and face height."""
    lm = np.asarray(landmarks)[np.asarray(valid, bool)]
    x0s, x1s = lm[..., 0].min(1), lm[..., 0].max(1)
    y0s, y1s = lm[..., 1].min(1), lm[..., 1].max(1)
    face_h = float(np.median(y1s - y0s))
    cx = float(np.median(0.5 * (x0s + x1s)))
    cy = float(np.median(0.5 * (y0s + y1s))) + shift_down * face_h
    return cx, cy, face_h


def framing_side(landmarks: np.ndarray, valid: np.ndarray, scale: float = 2.8) -> float:
    """The crop side the framing asks for (``scale`` x the median face height), in source pixels.

    The dataset focal length is defined on this side, so a crop shrunk to fit tight footage
    keeps the same perspective (its normalised focal grows by ``framing_side / side``).
    """
    return scale * _face_frame(landmarks, valid, 0.0)[2]


def choose_crop(landmarks: np.ndarray, valid: np.ndarray, width: int, height: int,
                scale: float = 2.8, shift_down: float = 0.1, allow_padding: bool = False) -> tuple[int, int, int]:
    """One square crop for the whole video around head and shoulders.

    The crop is centred on the median face centre (moved down by ``shift_down`` face
    heights to include the shoulders) with side ``scale`` x the median face height (chin to
    forehead), then moved to stay inside the image. A side larger than the image's short
    side is shrunk to it (tight footage is framed closer) unless ``allow_padding``, which
    keeps the side and pads the border by edge replication. Padding costs quality: the
    replicated rows of a moving torso are streaks no model can predict.

    Returns:
        ``(x0, y0, side)`` integers in source pixels (continuous coordinates: the crop covers
        pixels ``x0 .. x0 + side - 1``).
    """
    cx, cy, face_h = _face_frame(landmarks, valid, shift_down)
    side = scale * face_h
    if not allow_padding:
        side = min(side, float(width), float(height))
    x0, y0 = cx - side / 2, cy - side / 2

    iside = max(2, int(side // 2) * 2)

    def fit(start: float, extent: int) -> int:
        lo, hi = sorted((0, extent - iside))  # inside the image, or covering it when larger
        return int(np.clip(round(start), lo, hi))

    return fit(x0, width), fit(y0, height), iside


def landmarks_to_crop(landmarks: np.ndarray, crop_box: tuple[float, float, float] | list[float],
                      size: int) -> np.ndarray:
    """Source-pixel landmarks ``(..., 478, 3)`` to crop pixels at ``size`` (z scaled like x)."""
    x0, y0, side = crop_box
    s = size / side
    out = np.asarray(landmarks, np.float32).copy()
    out[..., 0] = (out[..., 0] - x0) * s
    out[..., 1] = (out[..., 1] - y0) * s
    out[..., 2] = out[..., 2] * s
    return out
