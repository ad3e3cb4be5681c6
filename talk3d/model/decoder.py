"""Small MLP decoding triplane features into density and a feature vector (RGB first)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from talk3d.model.config import ModelConfig

INFERENCE_CHUNK = 8192
"""Points decoded at a time on CPU without gradients (and without autocast)."""


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
        device = feats.device.type
        chunked = device == "cpu" and not torch.is_grad_enabled() and not torch.is_autocast_enabled(device)
        raw = self._raw_in_chunks(feats) if chunked else self.out(self.hidden(feats))
        sigma = F.softplus(raw[..., 0] + self.density_bias)
        features = torch.sigmoid(raw[..., 1:]) * 1.002 - 0.001
        return sigma, features

    def _raw_in_chunks(self, feats: torch.Tensor) -> torch.Tensor:
        """The MLP's raw output ``(..., 1 + F)`` for ``feats (..., C)``, :data:`INFERENCE_CHUNK`
        points at a time, so the hidden activations stay in the CPU's cache (the same numbers as
        the layers applied at once; 8.1 -> 5.1 ms for 123k points on 2 cores)."""
        flat = feats.reshape(-1, feats.shape[-1])
        first, last = self.hidden[0], self.out
        raw = flat.new_empty(flat.shape[0], last.out_features)
        for i in range(0, flat.shape[0], INFERENCE_CHUNK):
            hidden = F.relu_(F.linear(flat[i:i + INFERENCE_CHUNK], first.weight, first.bias))
            torch.addmm(last.bias, hidden, last.weight.t(), out=raw[i:i + INFERENCE_CHUNK])
        return raw.reshape(*feats.shape[:-1], raw.shape[-1])
