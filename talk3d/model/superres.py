"""Super-resolution CNN: neural-resolution features -> output-resolution RGB and alpha."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from talk3d.model.config import ModelConfig
from talk3d.model.precision import channels_last


class SuperResolution(nn.Module):
    """Lift the volume-rendered feature image by ``cfg.sr_factor`` (x2 stages).

    Starts as (almost) bilinear upsampling: the last conv is initialised small and the
    network predicts residuals on top of the bilinearly upsampled RGB and alpha logit.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        stages = cfg.sr_factor.bit_length() - 1
        w = cfg.sr_widths
        self.head = nn.Sequential(
            nn.Conv2d(cfg.feature_channels + 1, w[0], 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w[0], w[0], 3, padding=1), nn.LeakyReLU(0.2),
        )
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(w[i], w[i + 1], 3, padding=1), nn.LeakyReLU(0.2)) for i in range(stages)
        )
        self.tail = nn.Conv2d(w[stages], 4, 3, padding=1)
        nn.init.normal_(self.tail.weight, std=1e-3)
        nn.init.zeros_(self.tail.bias)
        self.factor = cfg.sr_factor

    def forward(self, features: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Upsample.

        Args:
            features: ``(B, F, h, w)`` premultiplied features (channels 0..2: RGB).
            alpha: ``(B, 1, h, w)`` accumulated opacity.
        Returns:
            ``rgb_fg (B, 3, H, W)`` premultiplied foreground colour and ``alpha (B, 1, H, W)``,
            ``H = h * factor``.
        """
        x = self.head(channels_last(torch.cat([features, alpha], 1)))
        for up in self.ups:
            x = up(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        res = self.tail(x)
        size = (features.shape[-2] * self.factor, features.shape[-1] * self.factor)
        rgb_up = F.interpolate(features[:, :3], size=size, mode="bilinear", align_corners=False)
        a_up = F.interpolate(alpha, size=size, mode="bilinear", align_corners=False)
        a_logit = torch.logit(a_up.clamp(1e-4, 1.0 - 1e-4))
        res = res.float()
        return rgb_up + res[:, :3], torch.sigmoid(a_logit + res[:, 3:])
