"""Small MLP decoding triplane features into density and a feature vector (RGB first)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from talk3d.model.config import ModelConfig


class Decoder(nn.Module):
    """Triplane feature ``(..., C)`` -> density ``(...,)`` and features ``(..., F)`` through one
    ReLU hidden layer of ``decoder_hidden`` units.

    Density is ``softplus(raw + density_bias)``; features are sigmoids stretched slightly
    beyond [0, 1] (EG3D's trick, so 0 and 1 are reachable); channels 0..2 are RGB.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(cfg.triplane_channels, cfg.decoder_hidden), nn.ReLU())
        self.out = nn.Linear(cfg.decoder_hidden, 1 + cfg.feature_channels)
        self.density_bias = cfg.density_bias

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``feats (..., C)`` -> ``sigma (...,)`` >= 0 and ``features (..., F)``."""
        raw = self.out(self.hidden(feats))
        sigma = F.softplus(raw[..., 0] + self.density_bias)
        features = torch.sigmoid(raw[..., 1:]) * 1.002 - 0.001
        return sigma, features
