"""Per-frame camera and blink tracks for rendering: head motion, novel views, orbit, stereo.

All cameras follow :mod:`talk3d.camera` (canonical head space, OpenCV camera axes).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from talk3d.camera import camera_angles, orbit
from talk3d.console import warn
from talk3d.errors import UserError

MAX_ANGLE = 90.0


def ping_pong_indices(num_out: int, num_src: int, start: int = 0) -> np.ndarray:
    """Indices that play ``num_src`` items forward then backward, repeatedly (no jumps).

    Returns:
        ``(num_out,)`` int64 in ``[0, num_src)``; consecutive entries differ by at most 1.
    """
    if num_src <= 0:
        raise ValueError("ping-pong needs at least one source item")
    if num_src == 1:
        return np.zeros(num_out, dtype=np.int64)
    period = 2 * (num_src - 1)
    k = (np.arange(num_out, dtype=np.int64) + start) % period
    return np.where(k < num_src, k, period - k)


def mean_pose(poses: torch.Tensor) -> torch.Tensor:
    """Mean camera pose: chordal mean rotation (SVD projection); the position is the mean of the
    camera positions expressed in each camera's own frame, carried by the mean rotation (so
    cameras orbiting the head average to a camera at the same distance, not a closer one).

    Args:
        poses: ``(N, 4, 4)`` camera-to-world.
    Returns:
        ``(4, 4)``.
    """
    rot = poses[:, :3, :3].mean(0)
    u, _, vh = torch.linalg.svd(rot)
    r = u @ vh
    if torch.det(r) < 0:
        u = u.clone()
        u[:, -1] = -u[:, -1]
        r = u @ vh
    out = torch.eye(4, dtype=poses.dtype)
    out[:3, :3] = r
    local = (poses[:, :3, :3].transpose(1, 2) @ poses[:, :3, 3:4]).mean(0)  # (3, 1)
    out[:3, 3] = (r @ local)[:, 0]
    return out


def head_motion(poses: torch.Tensor, num_frames: int, mode: str) -> tuple[torch.Tensor, np.ndarray]:
    """Head-motion cameras for ``num_frames`` output frames.

    Args:
        poses: ``(N, 4, 4)`` tracked camera-to-world of the training clip.
        mode: ``tracked`` (ping-pong over the tracked poses) or ``fixed`` (mean pose).
    Returns:
        cameras ``(F, 4, 4)`` and the source index of each frame ``(F,)`` (``-1`` when fixed).
    """
    if mode == "tracked":
        idx = ping_pong_indices(num_frames, poses.shape[0])
        return poses[torch.from_numpy(idx)].clone(), idx
    if mode == "fixed":
        return mean_pose(poses).expand(num_frames, 4, 4).clone(), np.full(num_frames, -1, dtype=np.int64)
    raise UserError(f"--pose must be 'tracked' or 'fixed', got '{mode}'")


def torso_track(offsets: np.ndarray, source_index: np.ndarray) -> np.ndarray:
    """Torso offsets per output frame ``(F, 2)`` following :func:`head_motion`'s source frames.

    The torso sways with the tracked head motion it was recorded with; with a fixed head
    (source index ``-1``) it rests at its median position (offset 0).
    """
    offsets = np.asarray(offsets, dtype=np.float32)
    idx = np.asarray(source_index, dtype=np.int64)
    out = np.zeros((idx.size, 2), dtype=np.float32)
    if offsets.size:
        out[idx >= 0] = offsets[idx[idx >= 0]]
    return out


def blink_track(blink: np.ndarray, num_frames: int, mode: str) -> np.ndarray:
    """Eye closure per output frame ``(F,)`` float32: ping-pong over the clip's track, or zeros."""
    if mode == "off" or blink.size == 0:
        return np.zeros(num_frames, dtype=np.float32)
    if mode == "auto":
        return np.asarray(blink, dtype=np.float32)[ping_pong_indices(num_frames, blink.shape[0])]
    raise UserError(f"--blink must be 'auto' or 'off', got '{mode}'")


def yaw_schedule(num_frames: int, fps: float, yaw: float, orbit_on: bool, orbit_range: float,
                 orbit_period: float) -> np.ndarray:
    """Extra yaw per frame ``(F,)`` degrees: constant, or a sinusoid sweep when orbiting."""
    out = np.full(num_frames, float(yaw), dtype=np.float64)
    if orbit_on and num_frames > 1:
        period = orbit_period if orbit_period > 0 else num_frames / fps
        t = np.arange(num_frames) / fps
        out = out + orbit_range * np.sin(2.0 * math.pi * t / period)
    return out


def check_angles(yaw: np.ndarray, pitch: float, tracked: torch.Tensor,
                 head: torch.Tensor | None = None) -> None:
    """Refuse views beyond +-90 degrees; warn when they leave the range seen in training.

    Args:
        yaw: ``(F,)`` requested extra yaw per frame (degrees).
        pitch: requested extra pitch (degrees).
        tracked: ``(N, 4, 4)`` the run's tracked poses (the training range).
        head: ``(F, 4, 4)`` the head-motion cameras the views are orbited from (tracked loop or
            fixed mean pose); ``None`` assumes the tracked range.
    """
    ymax = float(np.abs(yaw).max()) if yaw.size else 0.0
    if ymax > MAX_ANGLE or abs(pitch) > MAX_ANGLE:
        raise UserError(
            f"requested view (yaw up to {ymax:.0f}, pitch {pitch:.0f} degrees) is beyond +-{MAX_ANGLE:.0f}: "
            f"the back of the head was never seen; choose angles within +-{MAX_ANGLE:.0f}"
        )
    ang = camera_angles(tracked.float())
    lo, hi = ang.min(0).values, ang.max(0).values
    if head is not None and len(head) == len(yaw) and len(head):
        # the angles of the cameras that will really be rendered
        seen = camera_angles(view_cameras(head.float(), yaw, pitch))
        y_lo, y_hi = float(seen[:, 0].min()), float(seen[:, 0].max())
        p_lo, p_hi = float(seen[:, 1].min()), float(seen[:, 1].max())
    else:  # total angles of the rendered cameras ~ tracked range shifted by the request
        y_lo, y_hi = float(lo[0]) + float(yaw.min()), float(hi[0]) + float(yaw.max())
        p_lo, p_hi = float(lo[1]) + pitch, float(hi[1]) + pitch
    margin = 5.0
    if y_lo < float(lo[0]) - margin or y_hi > float(hi[0]) + margin:
        warn(f"yaw reaches {y_lo:.0f}..{y_hi:.0f} degrees but training saw "
             f"{float(lo[0]):.0f}..{float(hi[0]):.0f}: views outside that range are extrapolated")
    if p_lo < float(lo[1]) - margin or p_hi > float(hi[1]) + margin:
        warn(f"pitch reaches {p_lo:.0f}..{p_hi:.0f} degrees but training saw "
             f"{float(lo[1]):.0f}..{float(hi[1]):.0f}: views outside that range are extrapolated")


def view_cameras(head: torch.Tensor, yaw: np.ndarray, pitch: float) -> torch.Tensor:
    """Rotate head-motion cameras ``(F, 4, 4)`` about the head centre by per-frame yaw and pitch."""
    return orbit(head, torch.as_tensor(yaw, dtype=head.dtype), float(pitch))


def stereo_pair(cam2world: torch.Tensor, ipd: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Parallel-axis eye cameras: the left eye moves by ``-ipd/2`` along camera x, the right by ``+ipd/2``.

    Args:
        cam2world: ``(F, 4, 4)`` centre cameras.
        ipd: baseline in canonical units.
    Returns:
        left, right ``(F, 4, 4)``. A point in front of both cameras appears further right
        in the left image than in the right one (positive disparity ``x_left - x_right``).
    """
    x_axis = cam2world[:, :3, 0]
    left, right = cam2world.clone(), cam2world.clone()
    left[:, :3, 3] -= 0.5 * ipd * x_axis
    right[:, :3, 3] += 0.5 * ipd * x_axis
    return left, right
