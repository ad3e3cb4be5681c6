"""The identity triplane ``P_id`` and the scene-box mapping used to sample planes."""

from __future__ import annotations

import torch
from torch import nn

from talk3d.model.config import ModelConfig
from talk3d.ops import sample_triplane


class SceneBox(nn.Module):
    """Axis-aligned scene box in canonical space, mapped to the triplane's ``[-1, 1]^3``."""

    def __init__(self, box_min: tuple[float, float, float], box_max: tuple[float, float, float]):
        super().__init__()
        self.register_buffer("box_min", torch.tensor(box_min, dtype=torch.float32), persistent=False)
        self.register_buffer("box_max", torch.tensor(box_max, dtype=torch.float32), persistent=False)

    def normalize(self, points: torch.Tensor) -> torch.Tensor:
        """World points ``(..., 3)`` -> box coordinates ``(..., 3)`` in ``[-1, 1]`` inside the box."""
        lo, hi = self.box_min.to(points), self.box_max.to(points)
        return (points - lo) / (hi - lo) * 2.0 - 1.0

    def denormalize(self, coords: torch.Tensor) -> torch.Tensor:
        """Box coordinates ``(..., 3)`` -> world points ``(..., 3)``."""
        lo, hi = self.box_min.to(coords), self.box_max.to(coords)
        return (coords + 1.0) * 0.5 * (hi - lo) + lo


class IdentityTriplane(nn.Module):
    """Learned identity planes ``(3, C, R, R)``: plane 0 = (x, y), 1 = (x, z), 2 = (y, z).

    Axis order follows :data:`talk3d.ops.PLANE_AXES` (first coordinate along the width).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        r, c = cfg.triplane_res, cfg.triplane_channels
        self.planes = nn.Parameter(torch.randn(3, c, r, r) * cfg.triplane_init_std)

    def forward(self) -> torch.Tensor:
        """The identity planes ``(3, C, R, R)``."""
        return self.planes


def sample_planes(planes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Sample (possibly batched) planes at box coordinates.

    Args:
        planes: ``(3, C, R, R)`` shared by every batch entry, or ``(B, 3, C, R, R)``.
        coords: ``(B, N, 3)`` box coordinates in ``[-1, 1]``.
    Returns:
        ``(B, N, C)`` features (sum over the three planes).
    """
    if planes.dim() == 4:
        b, n, _ = coords.shape
        return sample_triplane(planes[None], coords.reshape(1, b * n, 3), reduce="sum").reshape(b, n, -1)
    return sample_triplane(planes, coords, reduce="sum")
