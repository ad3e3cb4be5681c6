"""Adapter from the avatar model to a plain radiance field (for MPI export)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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

    bg = avatar.background[None].float()
    if bg.shape[-1] != size:
        mode = "area" if bg.shape[-1] > size else "bilinear"
        kw = {} if mode == "area" else {"align_corners": False}
        bg = F.interpolate(bg, size=(size, size), mode=mode, **kw)
    return field, size, bg[0]
