"""Small MLP decoding triplane features into density and a feature vector (RGB first)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from talk3d.model.config import ModelConfig


class Decoder(nn.Module):
    """Triplane feature ``(..., C)`` -> density ``(...,)`` and features ``(..., F)``.

    Density is ``softplus(raw + density_bias)``; features are sigmoids stretched slightly
    beyond [0, 1] (EG3D's trick, so 0 and 1 are reachable); channels 0..2 are RGB.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers: list[nn.Module] = []
        width = cfg.triplane_channels
        for _ in range(cfg.decoder_layers):
            act = nn.ReLU() if cfg.decoder_activation == "relu" else nn.Softplus()
            layers += [nn.Linear(width, cfg.decoder_hidden), act]
            width = cfg.decoder_hidden
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(width, 1 + cfg.feature_channels)
        self.density_bias = cfg.density_bias

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``feats (..., C)`` -> ``sigma (...,)`` >= 0 and ``features (..., F)``."""
        raw = self.out(self.hidden(feats))
        sigma = F.softplus(raw[..., 0] + self.density_bias)
        features = torch.sigmoid(raw[..., 1:]) * 1.002 - 0.001
        return sigma, features
