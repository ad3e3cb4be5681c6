"""Camera conventions and camera math shared by prep, fit and render.

Conventions (used everywhere in talk3d):

* **Canonical (world) space** is head-centred: origin at the head centre, ``+x`` to the
  viewer's right when the face is seen frontally (the subject's left), ``+y`` up, ``+z``
  out of the face towards a frontal camera. The head fits in roughly ``[-1, 1]^3``.
* **Cameras** are camera-to-world matrices ``(4, 4)`` in the OpenCV convention: camera
  ``+x`` right, ``+y`` down, ``+z`` forward (the viewing direction).
  A frontal camera at distance ``d`` is ``R = diag(1, -1, -1)``, ``t = (0, 0, d)``.
* **Intrinsics** are normalised by the image size: ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``
  with ``fx = fx_pixels / width``, ``cx = cx_pixels / width`` (``0.5`` when centred), so one
  matrix serves every resolution. Pixel centres sit at ``(i + 0.5) / width``.
* **Angles** (degrees) describe the camera relative to the head: ``yaw`` > 0 puts the camera
  towards ``+x`` (we see more of the subject's left cheek), ``pitch`` > 0 puts the camera
  above the head, ``roll`` rotates it about the viewing axis. The world rotation is
  ``R_y(yaw) @ R_x(-pitch) @ R_z(roll)`` applied to the frontal camera.
"""

from __future__ import annotations

import math

import torch

FRONTAL_ROTATION = torch.diag(torch.tensor([1.0, -1.0, -1.0]))


def _rot_x(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*a.shape, 3, 3)


def _rot_y(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*a.shape, 3, 3)


def _rot_z(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*a.shape, 3, 3)


def rotation_from_angles(yaw: torch.Tensor | float, pitch: torch.Tensor | float = 0.0,
                         roll: torch.Tensor | float = 0.0) -> torch.Tensor:
    """World rotation ``R_y(yaw) R_x(-pitch) R_z(roll)`` from angles in degrees.

    Args:
        yaw, pitch, roll: scalars or tensors of the same shape ``(...)``.
    Returns:
        ``(..., 3, 3)`` rotation matrices.
    """
    yaw, pitch, roll = (torch.as_tensor(v, dtype=torch.float32) for v in (yaw, pitch, roll))
    yaw, pitch, roll = torch.broadcast_tensors(yaw, pitch, roll)
    d = math.pi / 180.0
    return _rot_y(yaw * d) @ _rot_x(-pitch * d) @ _rot_z(roll * d)


def angles_from_rotation(rot: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rotation_from_angles`.

    Args:
        rot: ``(..., 3, 3)`` world rotation.
    Returns:
        ``(..., 3)`` yaw, pitch, roll in degrees.
    """
    yaw = torch.atan2(rot[..., 0, 2], rot[..., 2, 2])
    pitch = torch.asin(rot[..., 1, 2].clamp(-1.0, 1.0))  # -(-sin(pitch))
    roll = torch.atan2(rot[..., 1, 0], rot[..., 1, 1])
    return torch.stack([yaw, pitch, roll], -1) * (180.0 / math.pi)


def camera_angles(cam2world: torch.Tensor) -> torch.Tensor:
    """Yaw, pitch, roll (degrees) of cameras relative to the frontal camera.

    Args:
        cam2world: ``(..., 4, 4)``.
    Returns:
        ``(..., 3)``.
    """
    rel = cam2world[..., :3, :3] @ FRONTAL_ROTATION.to(cam2world).T
    return angles_from_rotation(rel)


def frontal_cam2world(distance: float, batch: int | None = None) -> torch.Tensor:
    """Frontal camera at ``(0, 0, distance)`` looking at the origin: ``(4, 4)`` or ``(B, 4, 4)``."""
    c2w = torch.eye(4)
    c2w[:3, :3] = FRONTAL_ROTATION
    c2w[2, 3] = distance
    return c2w if batch is None else c2w.expand(batch, 4, 4).clone()


def orbit(cam2world: torch.Tensor, yaw: torch.Tensor | float = 0.0,
          pitch: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Rotate cameras about the head centre by extra yaw/pitch (degrees).

    Args:
        cam2world: ``(..., 4, 4)``.
        yaw, pitch: broadcastable to ``(...)``.
    Returns:
        ``(..., 4, 4)`` new camera-to-world matrices.
    """
    rot = rotation_from_angles(yaw, pitch, 0.0).to(cam2world)
    out = cam2world.clone()
    out[..., :3, :] = rot @ cam2world[..., :3, :]
    return out


FULL_FRAME_DIAGONAL_MM = 43.27
"""Diagonal of a 36 x 24 mm frame: 35 mm-equivalent focal lengths are defined on it."""


def focal_pixels_from_35mm(focal_35mm: float, width: float, height: float) -> float:
    """Focal length in pixels of a ``width x height`` image from its 35 mm-equivalent focal (mm)."""
    return focal_35mm / FULL_FRAME_DIAGONAL_MM * math.hypot(width, height)


def focal_35mm_from_pixels(focal_px: float, width: float, height: float) -> float:
    """Inverse of :func:`focal_pixels_from_35mm`."""
    return focal_px * FULL_FRAME_DIAGONAL_MM / math.hypot(width, height)


def intrinsics_matrix(focal: float | torch.Tensor, cx: float = 0.5, cy: float = 0.5) -> torch.Tensor:
    """Normalised intrinsics ``(3, 3)`` with ``fx = fy = focal`` (in image widths)."""
    return torch.tensor([[float(focal), 0.0, cx], [0.0, float(focal), cy], [0.0, 0.0, 1.0]])


def generate_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, height: int,
                  width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres.

    Args:
        cam2world: ``(B, 4, 4)``.
        intrinsics: ``(B, 3, 3)`` normalised, or ``(3, 3)``.
        height, width: image size in pixels.
    Returns:
        origins ``(B, H*W, 3)`` and unit directions ``(B, H*W, 3)`` in world space,
        row-major over pixels (index ``y * W + x``).
    """
    b = cam2world.shape[0]
    k = intrinsics.expand(b, 3, 3).to(cam2world)
    dev, dt = cam2world.device, cam2world.dtype
    ys, xs = torch.meshgrid(
        (torch.arange(height, device=dev, dtype=dt) + 0.5) / height,
        (torch.arange(width, device=dev, dtype=dt) + 0.5) / width,
        indexing="ij",
    )
    x = (xs.reshape(1, -1) - k[:, 0, 2:3]) / k[:, 0, 0:1]
    y = (ys.reshape(1, -1) - k[:, 1, 2:3]) / k[:, 1, 1:2]
    dirs_cam = torch.stack([x, y, torch.ones_like(x)], -1)  # (B, HW, 3)
    dirs = dirs_cam @ cam2world[:, :3, :3].transpose(1, 2)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = cam2world[:, None, :3, 3].expand_as(dirs)
    return origins, dirs


def project(points: torch.Tensor, cam2world: torch.Tensor, intrinsics: torch.Tensor,
            width: int, height: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points to pixels.

    Args:
        points: ``(B, N, 3)`` world points.
        cam2world: ``(B, 4, 4)``.
        intrinsics: ``(B, 3, 3)`` or ``(3, 3)`` normalised.
        width, height: image size in pixels (``height`` defaults to ``width``).
    Returns:
        pixels ``(B, N, 2)`` (x, y, pixel-centre convention) and camera depth ``(B, N)``.
    """
    height = width if height is None else height
    b = cam2world.shape[0]
    k = intrinsics.expand(b, 3, 3).to(points)
    w2c = torch.linalg.inv(cam2world)
    pc = points @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
    z = pc[..., 2]
    u = (k[:, None, 0, 0] * pc[..., 0] / z + k[:, None, 0, 2]) * width
    v = (k[:, None, 1, 1] * pc[..., 1] / z + k[:, None, 1, 2]) * height
    return torch.stack([u, v], -1), z
