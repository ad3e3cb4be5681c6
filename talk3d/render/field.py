"""Adapter from the avatar model to a plain radiance field (for MPI export)."""

from __future__ import annotations

import torch

from talk3d.image import resize
from talk3d.render.mpi import FieldFn


@torch.no_grad()
def avatar_field(avatar, cond: dict[str, torch.Tensor] | None, motion_scale: float = 1.0,
                 size: int | None = None) -> tuple[FieldFn, int, torch.Tensor]:
    """The avatar's radiance field for one frame's conditioning.

    Args:
        avatar: :class:`talk3d.model.avatar.Avatar`.
        cond: conditioning of one frame (batch 1), or ``None`` for the identity alone.
        size: MPI side in pixels (default: the model's neural resolution, where the volume
            rendering happens).
    Returns:
        field ``points (1, N, 3) -> (sigma (1, N), rgb (1, N, 3))``, the layer size, and the
        background plate ``(3, size, size)`` for the far plane.
    """
    planes, _ = avatar.planes(cond, motion_scale)
    if planes.dim() == 5:
        planes = planes[:1]
    size = int(size or avatar.cfg.neural_res)

    def field(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = planes if planes.dim() == 4 else planes.expand(points.shape[0], *planes.shape[1:])
        sigma, feats = avatar.query(p, points.to(avatar.background.device))
        return sigma, feats[..., :3]

    return field, size, resize(avatar.background[None].float(), size)[0]


@torch.no_grad()
def avatar_torso_layer(avatar, cam2world: torch.Tensor, cond: dict[str, torch.Tensor] | None,
                       size: int | None = None) -> tuple[float, torch.Tensor] | None:
    """The image-mode torso as an MPI plane: ``(depth, rgba (4, size, size))``, or ``None`` in volume mode.

    The plane sits at the far end of the head box as seen from ``cam2world`` ``(4, 4)`` (camera
    depth of the canonical origin + ``box_max[2]``), behind the head and in front of the
    background, so the MPI re-rendered at its own camera reproduces the direct render
    (``rgb_lr``: the torso area-downsampled, premultiplied, to the layer size). Colour is
    straight (un-premultiplied) as :class:`talk3d.render.mpi.MPI` stores it.
    """
    torso = getattr(avatar, "torso", None)
    if torso is None:
        return None
    size = int(size or avatar.cfg.neural_res)
    pose = cond.get("pose") if cond is not None else None
    offset = cond.get("torso") if cond is not None else None
    rgb, alpha = torso(None if pose is None else pose[:1], 1, avatar.cfg.out_res,
                       None if offset is None else offset[:1])
    pre = resize(torch.cat([rgb * alpha, alpha], 1).float(), size)
    a = pre[0, 3:]
    col = torch.where(a > 1e-6, pre[0, :3] / a.clamp_min(1e-6), torch.zeros_like(pre[0, :3]))
    c2w = cam2world.float()
    origin_depth = float(-(c2w[:3, 2] @ c2w[:3, 3]))  # camera z of the canonical origin
    depth = origin_depth + float(avatar.cfg.box_max[2])
    return depth, torch.cat([col.clamp(0, 1), a.clamp(0, 1)], 0).cpu()
