"""Image, landmark and signal metrics used by ``talk3d eval``.

All functions are pure (no files, no models) so they can be tested on constructed inputs
with known answers. Images are float tensors in [0, 1]; landmarks are pixel coordinates.
"""

from __future__ import annotations

import math

import numpy as np

from talk3d.face.landmarks import MOUTH
from talk3d.face.landmarks import mouth_opening as face_mouth_opening
from talk3d.image import box_crop, masked_psnr, psnr, ssim  # noqa: F401  (the metrics eval reports; one implementation)

# mediapipe FaceMesh indices (478-point topology).
LIP_INDICES = tuple(int(k) for k in MOUTH)
"""Outer and inner lip contour points: the "mouth" landmark set for LMD and the mouth box."""
LMD_REFERENCE_SIZE = 512
"""LMD is reported in pixels at this image side (published figures use 512)."""


def mouth_box(landmarks: np.ndarray, size: int, margin: float = 0.25) -> tuple[int, int, int, int]:
    """Square-ish box around the lips, enlarged by ``margin`` of its size on each side.

    Args:
        landmarks: ``(478, 2+)`` pixel landmarks.
        size: image side (the box is clipped to it).
    Returns:
        ``(x0, y0, x1, y1)`` integer pixels.
    """
    lips = np.asarray(landmarks)[list(LIP_INDICES), :2]
    x0, y0 = lips.min(0)
    x1, y1 = lips.max(0)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    return tuple(int(np.clip(round(v), 0, size)) for v in box)  # type: ignore[return-value]


def landmark_distance(pred: np.ndarray, target: np.ndarray, size: int,
                      indices: tuple[int, ...] | None = None,
                      reference_size: int = LMD_REFERENCE_SIZE) -> float:
    """Landmark distance (LMD): mean Euclidean 2D distance, in pixels at ``reference_size``.

    Args:
        pred, target: ``(N, P, 2+)`` or ``(P, 2+)`` pixel landmarks in images of side ``size``
            (only x, y are used).
        size: side of the images the landmarks were measured in.
        indices: landmark subset (e.g. :data:`LIP_INDICES`); all when ``None``.
        reference_size: report distances as if the images were this size.
    Returns:
        mean distance over frames and points.
    """
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"landmark shapes differ: {p.shape} vs {t.shape}")
    if indices is not None:
        p, t = p[..., list(indices), :], t[..., list(indices), :]
    d = np.linalg.norm(p[..., :2] - t[..., :2], axis=-1)
    return float(d.mean() * reference_size / size)


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip gap divided by the outer eye-corner distance, measured in the image plane.

    :func:`talk3d.face.landmarks.mouth_opening` on the x, y coordinates (scale and resolution free).

    Args:
        landmarks: ``(N, 478, 2+)`` or ``(478, 2+)`` mediapipe landmarks.
    Returns:
        ``(N,)`` or scalar array, 0 for closed lips, about 0.3-0.5 wide open.
    """
    lm = np.asarray(landmarks, dtype=np.float64)[..., :2]
    opening = face_mouth_opening(lm).astype(np.float64)
    return opening[0] if lm.ndim == 2 else opening


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-length signals, ignoring NaN entries.

    Returns:
        value in [-1, 1]; ``nan`` when fewer than 3 valid samples or a signal is constant.
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"signals differ in length: {a.shape} vs {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    if den < 1e-12:
        return math.nan
    return float(np.clip((a * b).sum() / den, -1.0, 1.0))


def best_lag_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    """Highest correlation of ``a[t]`` with ``b[t + lag]`` over ``|lag| <= max_lag`` frames.

    Returns:
        ``(correlation, lag)``; ``(nan, 0)`` when no lag gives a defined value.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    best, best_lag = math.nan, 0
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            c = correlation(a[: len(a) - lag], b[lag:]) if lag < len(a) else math.nan
        else:
            c = correlation(a[-lag:], b[: len(b) + lag]) if -lag < len(b) else math.nan
        if math.isfinite(c) and (not math.isfinite(best) or c > best):
            best, best_lag = c, lag
    return best, best_lag


def speech_pause_ratio(opening: np.ndarray, speech: np.ndarray) -> float:
    """Mean mouth opening during speech divided by that during pauses.

    Args:
        opening: ``(N,)`` mouth opening per frame (NaN where no face).
        speech: ``(N,)`` bool, or fraction in [0, 1] (> 0.5 counts as speech).
    Returns:
        ratio (> 1 when the mouth opens more while speaking); ``nan`` if either set is empty.
    """
    o = np.asarray(opening, dtype=np.float64)
    s = np.asarray(speech, dtype=np.float64) > 0.5
    ok = np.isfinite(o)
    on, off = o[ok & s], o[ok & ~s]
    if on.size == 0 or off.size == 0:
        return math.nan
    return float(on.mean() / max(off.mean(), 1e-6))


def finite_mean(values: np.ndarray | list[float]) -> float:
    """Mean of the finite entries (``nan`` when none); ``inf`` when all entries are ``inf``."""
    v = np.asarray(values, dtype=np.float64)
    if v.size and np.all(np.isposinf(v)):
        return math.inf
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan
