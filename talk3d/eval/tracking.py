"""Re-detecting faces in rendered frames and re-estimating their head pose.

Landmarks come from the project's tracker (:class:`talk3d.face.FaceTracker`, mediapipe
FaceMesh). The pose is re-estimated independently of prep's estimator with OpenCV's PnP
against the dataset's canonical landmark shape, so the check does not share code (or bugs)
with the pipeline it checks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np
import torch

from talk3d.camera import camera_angles
from talk3d.eval.metrics import LIP_INDICES

NUM_LANDMARKS = 478
PNP_INDICES = tuple(i for i in range(468) if i not in set(LIP_INDICES))
"""Landmarks used for PnP: the mesh without lips and irises (they move with expression/gaze)."""


def make_tracker(static: bool = False):
    """The project's FaceTracker (``.detect(rgb) -> (478, 3) | None``), or a direct mediapipe twin."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's per-graph C++ info lines
    try:
        from talk3d.face import FaceTracker

        return FaceTracker(static=static, max_faces=1)
    except ImportError:
        return _MediapipeTracker(static)


class _MediapipeTracker:
    """Minimal stand-in used only while :mod:`talk3d.face` cannot be imported."""

    def __init__(self, static: bool):
        from mediapipe.python.solutions import face_mesh

        self._mesh = face_mesh.FaceMesh(static_image_mode=static, max_num_faces=1, refine_landmarks=True)

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        res = self._mesh.process(np.ascontiguousarray(rgb))
        if not res.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        pts = res.multi_face_landmarks[0].landmark
        return np.array([[p.x * w, p.y * h, p.z * w] for p in pts], dtype=np.float32)

    def close(self) -> None:
        self._mesh.close()


def detect_sequence(frames: Iterable[np.ndarray], static: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Track landmarks through a sequence of frames.

    Args:
        frames: iterable of ``(H, W, 3)`` uint8 RGB frames (one video: one head angle).
        static: detect each frame independently.
    Returns:
        landmarks ``(N, 478, 3)`` float32 (NaN where no face) and detected ``(N,)`` bool.
    """
    tracker = make_tracker(static)
    out: list[np.ndarray] = []
    found: list[bool] = []
    try:
        for frame in frames:
            lm = tracker.detect(frame)
            found.append(lm is not None)
            out.append(lm if lm is not None else np.full((NUM_LANDMARKS, 3), np.nan, np.float32))
    finally:
        close = getattr(tracker, "close", None)
        if close is not None:
            close()
    if not out:
        return np.zeros((0, NUM_LANDMARKS, 3), np.float32), np.zeros(0, bool)
    return np.stack(out).astype(np.float32), np.array(found)


def pnp_angles(landmarks: np.ndarray, canonical: np.ndarray, intrinsics: np.ndarray, size: int) -> np.ndarray:
    """Camera yaw/pitch/roll relative to the head from 2D landmarks (PnP).

    Args:
        landmarks: ``(N, 478, 2+)`` pixel landmarks (NaN rows where no face).
        canonical: ``(478, 3)`` canonical landmark shape in world units.
        intrinsics: ``(3, 3)`` normalised intrinsics (see :mod:`talk3d.camera`).
        size: image side in pixels.
    Returns:
        ``(N, 3)`` degrees (NaN where no face or PnP failed), same convention as
        :func:`talk3d.camera.camera_angles`.
    """
    import cv2

    k = np.asarray(intrinsics, dtype=np.float64).copy()
    k[:2] *= size
    obj = np.asarray(canonical, dtype=np.float64)[list(PNP_INDICES)]
    out = np.full((len(landmarks), 3), math.nan)
    for i, lm in enumerate(np.asarray(landmarks, dtype=np.float64)):
        img = lm[list(PNP_INDICES), :2]
        if not np.all(np.isfinite(img)):
            continue
        ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            continue
        rot, _ = cv2.Rodrigues(rvec)
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = rot, tvec[:, 0]
        c2w = torch.from_numpy(np.linalg.inv(w2c)).float()
        out[i] = camera_angles(c2w).numpy()
    return out


def angle_errors(measured: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Absolute angle differences in degrees, wrapped to [0, 180] (NaN propagates)."""
    d = np.asarray(measured, dtype=np.float64) - np.asarray(expected, dtype=np.float64)
    return np.abs((d + 180.0) % 360.0 - 180.0)
