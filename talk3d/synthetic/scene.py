"""Render the synthetic bust for one frame state from any camera."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from talk3d.camera import FRONTAL_ROTATION, rotation_from_angles
from talk3d.synthetic.mesh import NUM_LANDMARKS, PART_AMBIENT, PART_CLOSED, PART_LABEL, HeadMesh
from talk3d.synthetic.raster import (
    interpolate,
    project_points,
    rasterize,
    sample_texture,
    vertex_normals,
    world_to_camera,
)

LIGHT_CAM = torch.tensor([-0.45, -0.55, -0.7])
"""Light direction (towards the light) in camera space: upper left, in front."""


@dataclass
class FrameState:
    """What moves in one frame.

    Attributes:
        angles: yaw, pitch, roll (degrees) of the main camera relative to the head; the body
            stays fixed relative to this camera (the head turns on the shoulders).
        mouth: jaw opening in [0, 1].
        blink: eye closure in [0, 1].
    """

    angles: tuple[float, float, float]
    mouth: float = 0.0
    blink: float = 0.0


@dataclass
class Rendered:
    """One rendered view.

    Attributes:
        rgb: ``(H, W, 3)`` uint8.
        mask: ``(H, W)`` uint8 labels 0 background, 1 torso/neck, 2 head.
        depth: ``(H, W)`` float32 camera depth (``inf`` on the background).
        landmarks: ``(478, 2)`` float32 pixel positions of the FaceMesh landmarks.
    """

    rgb: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    landmarks: np.ndarray


def main_cam2world(angles: torch.Tensor, distance: float) -> torch.Tensor:
    """Main-camera poses from head angles.

    Args:
        angles: ``(N, 3)`` yaw, pitch, roll in degrees.
        distance: camera distance from the head centre.
    Returns:
        ``(N, 4, 4)`` camera-to-world with ``camera_angles(c2w) == angles``.
    """
    rot = rotation_from_angles(angles[:, 0], angles[:, 1], angles[:, 2])
    c2w = torch.eye(4).repeat(len(angles), 1, 1)
    c2w[:, :3, :3] = rot @ FRONTAL_ROTATION
    c2w[:, :3, 3] = rot @ torch.tensor([0.0, 0.0, distance])
    return c2w


def background_plate(size: int, seed: int) -> torch.Tensor:
    """Static, softly textured studio background ``(3, size, size)`` in [0, 1]."""
    g = torch.Generator().manual_seed(seed + 17)
    y = torch.linspace(0.0, 1.0, size)[:, None].expand(size, size)
    x = torch.linspace(0.0, 1.0, size)[None, :].expand(size, size)
    top = torch.tensor([0.62, 0.68, 0.74])[:, None, None]
    bottom = torch.tensor([0.36, 0.40, 0.47])[:, None, None]
    base = top * (1 - y) + bottom * y
    blobs = F.interpolate(torch.randn(1, 3, 6, 6, generator=g), size=(size, size), mode="bicubic",
                          align_corners=False)[0]
    vignette = 1.0 - 0.25 * ((x - 0.5) ** 2 + (y - 0.45) ** 2)
    return (base * vignette + 0.035 * blobs).clamp(0.0, 1.0)


def render_state(head: HeadMesh, state: FrameState, cam2world: torch.Tensor, intrinsics: torch.Tensor,
                 size: int, background: torch.Tensor, body_rotation: torch.Tensor | None = None,
                 supersample: int = 2) -> Rendered:
    """Rasterise the bust in ``state`` seen by ``cam2world``.

    Args:
        head: the mesh.
        state: frame state (mouth, blink; ``angles`` place the body).
        cam2world: ``(4, 4)`` camera to render from.
        intrinsics: ``(3, 3)`` normalised.
        size: output side in pixels.
        background: ``(3, size, size)`` plate composited behind.
        body_rotation: ``(3, 3)`` world rotation of the body; defaults to the rotation of the
            main camera for ``state.angles`` (body fixed relative to the main camera).
        supersample: render at ``supersample * size`` and average down (anti-aliasing).
    Returns:
        :class:`Rendered`.
    """
    if body_rotation is None:
        body_rotation = rotation_from_angles(*state.angles)
    verts = head.deform(state.mouth, state.blink)
    verts[head.body] = verts[head.body] @ body_rotation.T
    cam2world = cam2world.float()
    cam_pts = world_to_camera(verts, cam2world)
    s = size * supersample
    # cull back faces of the closed proxies (their far sides are always hidden)
    tri = cam_pts[head.faces]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    facing = (normal * tri[:, 0]).sum(-1) < 0
    keep = (facing | ~torch.tensor(PART_CLOSED)[head.part]).nonzero().squeeze(1)
    frags = rasterize(cam_pts, head.faces[keep], intrinsics, s)
    frags.face = torch.where(frags.face >= 0, keep[frags.face.clamp_min(0)], frags.face)
    uv = interpolate(frags, head.faces, head.uv)
    colour = sample_texture(head.texture, uv)

    normals = vertex_normals(verts, head.faces)
    light = cam2world[:3, :3] @ (LIGHT_CAM / LIGHT_CAM.norm())
    lambert = (normals @ -light).clamp_min(0.0)[:, None]
    shade = interpolate(frags, head.faces, lambert)[..., 0]
    ambient = torch.tensor(PART_AMBIENT)[head.part]
    hit = frags.hit
    amb = torch.where(hit, ambient[frags.face.clamp_min(0)], torch.ones_like(shade))
    shade = amb + (1.0 - amb) * shade
    colour = colour * shade[..., None]

    img = colour.permute(2, 0, 1)
    cover = hit.float()[None]
    if supersample > 1:
        img = F.avg_pool2d((img * cover)[None], supersample)[0]
        cover = F.avg_pool2d(cover[None], supersample)[0]
        img = img / cover.clamp_min(1e-6)
    rgb = img * cover + background * (1.0 - cover)
    rgb8 = (rgb.clamp(0, 1) * 255.0 + 0.5).byte().permute(1, 2, 0).numpy()

    labels = torch.tensor(PART_LABEL, dtype=torch.uint8)[head.part]
    mask = torch.where(hit, labels[frags.face.clamp_min(0)], torch.zeros((), dtype=torch.uint8))
    depth = frags.depth
    if supersample > 1:
        mask = mask[supersample // 2::supersample, supersample // 2::supersample]
        depth = -F.max_pool2d(-depth[None, None], supersample)[0, 0]
    lm = project_points(cam_pts[:NUM_LANDMARKS], intrinsics.float(), size, size)
    return Rendered(rgb=rgb8, mask=mask.numpy().copy(), depth=depth.numpy().astype(np.float32),
                    landmarks=lm.numpy().astype(np.float32))
