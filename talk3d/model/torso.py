"""Image-space torso layer (``ModelConfig.torso_mode == "image"``).

The camera follows the head, so the (mostly image-static) torso moves through the head's
canonical space from frame to frame and a head-centred triplane blurs it. In image mode the
torso is instead a learned RGBA texture in the dataset's image frame, warped per frame by a
small 2D affine transform predicted from the pose conditioning (ER-NeRF style) on top of
the torso offset tracked by prep (``torso_offsets.npy``: the body sways independently of the
head), and composited between the volume-rendered head and the background plate::

    rgb = head_rgb * head_a + (1 - head_a) * (torso_rgb * torso_a + (1 - torso_a) * bg)

The torso does not move with novel camera views (``--yaw``): the head turns on the shoulders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from talk3d.model.conditioning import POSE_DIM
from talk3d.model.config import ModelConfig

ALPHA_INIT_LOGIT = -2.0
"""Initial torso alpha logit (sigmoid ~ 0.12: mostly transparent until fitted or initialised)."""


class TorsoLayer(nn.Module):
    """Learned RGBA texture ``(4, T, T)`` + pose-driven affine warp.

    Parameters: ``texture (4, T, T)`` logits (RGB and alpha; ``T = cfg.torso_size``) and a
    2-layer MLP ``pose (B, POSE_DIM) -> (B, 6)`` whose last layer is zero-initialised, so the
    warp starts as the identity.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        t = cfg.torso_size
        tex = torch.zeros(4, t, t)
        tex[3] = ALPHA_INIT_LOGIT
        self.texture = nn.Parameter(tex)
        self.warp = nn.Sequential(nn.Linear(POSE_DIM, cfg.torso_warp_hidden), nn.ReLU(),
                                  nn.Linear(cfg.torso_warp_hidden, 6))
        nn.init.zeros_(self.warp[-1].weight)
        nn.init.zeros_(self.warp[-1].bias)
        self.register_buffer("identity", torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))

    @torch.no_grad()
    def set_init(self, image: torch.Tensor, alpha: torch.Tensor) -> None:
        """Initialise the texture from an image ``(3, H, W)`` in [0, 1] and an alpha ``(1, H, W)`` in [0, 1].

        Typically the mean training frame over torso pixels and the torso-mask frequency.
        """
        t = self.texture.shape[-1]
        img = torch.as_tensor(image, dtype=torch.float32)
        a = torch.as_tensor(alpha, dtype=torch.float32)
        if img.dim() != 3 or img.shape[0] != 3 or a.dim() != 3 or a.shape[0] != 1:
            raise ValueError(f"torso init needs image (3, H, W) and alpha (1, H, W), got {tuple(img.shape)} / "
                             f"{tuple(a.shape)}")
        both = F.interpolate(torch.cat([img, a], 0)[None], size=(t, t), mode="area")[0]
        logits = torch.logit(both.clamp(0.02, 0.98))
        self.texture.copy_(logits.to(self.texture))

    def theta(self, pose: torch.Tensor | None, batch: int, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Affine warps ``(B, 2, 3)`` (normalised coordinates).

        Args:
            pose: ``(B, POSE_DIM)`` or None (no pose-driven part).
            offset: ``(B, 2)`` tracked torso shift in image widths (x right, y down) or None.
        """
        ident = self.identity.to(self.texture.dtype)
        theta = ident.expand(batch, 2, 3)
        if pose is not None:
            theta = theta + self.warp(pose.to(self.texture.dtype)).reshape(-1, 2, 3)
        if offset is not None:
            # content moved by +d image widths samples the texture at p - d (2d in [-1, 1] units)
            shift = torch.zeros_like(theta)
            shift[:, :, 2] = -2.0 * offset.to(theta.dtype).reshape(-1, 2)
            theta = theta + shift
        return theta

    def forward(self, pose: torch.Tensor | None, batch: int, size: int,
                offset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Warped torso layer.

        Args:
            pose: ``(B, POSE_DIM)`` pose conditioning or ``None`` (no pose-driven warp).
            batch: ``B`` (used when ``pose`` and ``offset`` are None).
            size: output side in pixels.
            offset: ``(B, 2)`` tracked torso shift in image widths, or None.
        Returns:
            ``rgb (B, 3, size, size)`` straight colour in [0, 1] and ``alpha (B, 1, size, size)``.
        """
        theta = self.theta(pose, batch, offset)
        grid = F.affine_grid(theta, [theta.shape[0], 4, size, size], align_corners=False)
        tex = torch.sigmoid(self.texture)[None].expand(theta.shape[0], -1, -1, -1)
        out = F.grid_sample(tex, grid.to(tex.dtype), mode="bilinear", padding_mode="border", align_corners=False)
        return out[:, :3], out[:, 3:]
