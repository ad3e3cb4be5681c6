"""Visual checks written by prep: a contact sheet and a yaw/pitch/roll plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from talk3d.camera import camera_angles, project
from talk3d.dataset import runs_of
from talk3d.face.landmarks import STABLE_LANDMARKS
from talk3d.io import atomic_path

_HEAD_TINT = np.array([255, 60, 60], np.float32)
_TORSO_TINT = np.array([60, 120, 255], np.float32)


def draw_tile(frame: np.ndarray, labels: np.ndarray, landmarks: np.ndarray, cam2world: np.ndarray,
              intrinsics: np.ndarray, caption: str, tile: int = 256) -> np.ndarray:
    """One annotated frame: mask tint, landmarks (stable ones green), pose axes at the head centre.

    Args:
        frame: ``(S, S, 3)`` uint8; labels ``(S, S)`` uint8; landmarks ``(478, 3)`` pixels;
        cam2world ``(4, 4)``; intrinsics ``(3, 3)`` normalised.
    Returns:
        ``(tile, tile, 3)`` uint8.
    """
    import cv2

    size = frame.shape[0]
    img = frame.astype(np.float32)
    for label, tint in ((2, _HEAD_TINT), (1, _TORSO_TINT)):
        m = labels == label
        img[m] = 0.65 * img[m] + 0.35 * tint
    img = cv2.resize(img.clip(0, 255).astype(np.uint8), (tile, tile), interpolation=cv2.INTER_AREA)
    s = tile / size
    stable = np.zeros(len(landmarks), bool)
    stable[STABLE_LANDMARKS] = True
    for i, (x, y) in enumerate(landmarks[:, :2] * s):
        cv2.circle(img, (int(x), int(y)), 1, (60, 255, 60) if stable[i] else (255, 255, 255), -1)
    axes = torch.tensor([[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]], dtype=torch.float64)
    uv, _ = project(axes[None], torch.as_tensor(cam2world, dtype=torch.float64)[None],
                    torch.as_tensor(intrinsics, dtype=torch.float64), tile)
    o = tuple(int(v) for v in uv[0, 0])
    for k, colour in ((1, (255, 0, 0)), (2, (0, 255, 0)), (3, (0, 0, 255))):
        cv2.line(img, o, tuple(int(v) for v in uv[0, k]), colour, 2, cv2.LINE_AA)
    cv2.putText(img, caption, (4, tile - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
    return img


def write_contact_sheet(path: Path, tiles: list[np.ndarray], columns: int = 4) -> None:
    """Grid of tiles ``(t, t, 3)`` written as PNG atomically."""
    import cv2

    t = tiles[0].shape[0]
    rows = -(-len(tiles) // columns)
    sheet = np.zeros((rows * t, columns * t, 3), np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        sheet[r * t:(r + 1) * t, c * t:(c + 1) * t] = tile
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), sheet[..., ::-1]):
            raise OSError(f"could not write {path}")


def write_pose_plot(path: Path, cam2world: np.ndarray, valid: np.ndarray, fps: float, held_out: np.ndarray) -> None:
    """Yaw, pitch, roll (degrees) over time, frames without a face and the held-out frames
    (``held_out``: ``(N,)`` bool) shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ang = camera_angles(torch.as_tensor(np.asarray(cam2world), dtype=torch.float64)).numpy()
    t = np.arange(len(ang)) / fps
    fig, ax = plt.subplots(figsize=(10, 3.5), dpi=100)
    for k, name in enumerate(("yaw", "pitch", "roll")):
        ax.plot(t, ang[:, k], label=name, lw=1)
    miss = ~np.asarray(valid, bool)
    if miss.any():
        ax.scatter(t[miss], np.zeros(miss.sum()), marker="|", color="red", label="no face (interpolated)")
    for k, (a, b) in enumerate(runs_of(np.asarray(held_out, bool))):
        ax.axvspan(a / fps, b / fps, color="gray", alpha=0.25, lw=0, label="held out" if k == 0 else None)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("degrees (camera relative to head)")
    ax.legend(loc="upper right", fontsize=8, ncol=5)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
