"""The head volume of a dataset (:mod:`talk3d.model.head_volume`), measured once at fit start.

Width and height come from the head masks of the training frames (where their pixels' rays
cross the volume's middle depth), depth from the landmarks: from just in front of the nose tip back
by :data:`HEAD_DEPTH` face widths, so a short-haired and a long-haired person each get the
volume they fill.
"""

from __future__ import annotations

import numpy as np
import torch

from talk3d.camera import generate_rays
from talk3d.dataset import TalkingHeadDataset
from talk3d.fit.data import resize_labels

HEAD_LABEL = 2
MARGIN = 0.08
"""Canonical units added around the measured head (the volume's fade starts beyond it)."""
HEAD_DEPTH = 1.85
"""Front of the volume (nose tip + margin) to its back, in face widths (the landmarks' x extent):
about 2 canonical units, a little more than the nose tip to the back of the skull with its hair."""
LIMIT = 100.0
"""A volume reaching this far (canonical units; the head is ~2 across) is no measurement of a head."""
BROW = 168
"""Canonical landmark (mediapipe FaceMesh) at whose height the volume's cap starts."""


def measure_head_volume(dataset: TalkingHeadDataset, frames: np.ndarray, rays: int = 64,
                        every: int = 4) -> tuple[float, float, float, float, float] | None:
    """``(ax, ytop, zc, az, yc)`` of the dataset's head, or None when its masks hold no head.

    The depth comes from the landmarks; the cross-section at the volume's middle depth ``zc`` is
    then grown until it holds every head pixel's ray (where the ray crosses that depth), plus
    :data:`MARGIN`.

    Args:
        frames: the training frames (every ``every``-th is looked at).
        rays: side of the ray grid per frame (the masks are sampled at ``rays x rays``).
    """
    canon = np.asarray(dataset.canonical_landmarks, dtype=np.float64)
    idx = np.asarray(frames)[::every]
    if idx.size == 0 or not np.abs(canon).any():
        return None
    face_width = float(canon[:, 0].max() - canon[:, 0].min())
    z_front = float(canon[:, 2].max()) + MARGIN
    z_back = z_front - HEAD_DEPTH * face_width
    zc, az, yc = (z_front + z_back) / 2.0, (z_front - z_back) / 2.0, float(canon[BROW, 1])
    crossing = _head_crossings(dataset, idx, rays, zc)
    if crossing is None:
        return None
    x, y = np.abs(crossing[:, 0]), crossing[:, 1]
    ax, height = float(x.max()), float(y.max()) - yc
    if ax <= 0 or height <= 0:
        return None
    grow = float(np.sqrt((x / ax) ** 2 + (np.clip(y - yc, 0, None) / height) ** 2).max())  # >= 1
    volume = (ax * grow + MARGIN, yc + height * grow + MARGIN, zc, az, yc)
    return volume if max(abs(v) for v in volume) < LIMIT else None


def _head_crossings(dataset: TalkingHeadDataset, idx: np.ndarray, rays: int, depth: float) -> np.ndarray | None:
    """``(P, 3)`` points where the head pixels' rays of frames ``idx`` cross the plane ``z = depth``."""
    cams = torch.as_tensor(np.asarray(dataset.poses)[idx], dtype=torch.float64)
    origins, dirs = generate_rays(cams, torch.as_tensor(np.asarray(dataset.intrinsics), dtype=torch.float64),
                                  rays, rays)
    head = np.stack([resize_labels(np.asarray(dataset.mask(int(i))), rays) == HEAD_LABEL for i in idx])
    head = head.reshape(len(idx), -1)
    if not head.any():
        return None
    t = (depth - origins[..., 2]) / dirs[..., 2]
    points = (origins + t[..., None] * dirs).numpy()[head]
    points = points[np.isfinite(points).all(-1)]  # rays parallel to the plane cross it nowhere
    return points if len(points) else None

