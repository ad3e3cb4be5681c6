"""The audio front end of the model: a clip's features normalised, and audio windows -> tokens.

Swapping what the avatar hears (other features, a pretrained speech network) touches this
module and the feature extractor (:mod:`talk3d.audio`) only: :func:`normalize_clip` prepares
a whole clip's ``(T, D)`` features once, and :class:`AudioEncoder` turns a frame's window of
them into ``A`` tokens. The token layout around them (position and type embeddings, the lip-code
head, blink and pose tokens) belongs to :class:`talk3d.model.conditioning.TokenEncoder`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from talk3d.model.config import ModelConfig

LOUD_PERCENTILE = 95.0
"""Row-energy percentile taken as a clip's speech level."""
FLOOR_PERCENTILE = 5.0
"""Per-bin percentile taken as a clip's noise floor (pauses, room tone)."""
STAT_ROWS = 6000
"""Clip statistics use at most this many evenly strided rows (60 s at 100 Hz): a 10-minute
clip's percentiles cost 0.09 s instead of 0.9 s, at the same accuracy."""


def as_tensor(x: np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``x`` as a CPU-or-same-device tensor of ``dtype`` (numpy arrays are wrapped, not copied twice)."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.from_numpy(np.asarray(x)).to(dtype)


def _stat_rows(feats: torch.Tensor) -> torch.Tensor:
    """Evenly strided rows of ``feats (T, D)`` (at most :data:`STAT_ROWS`) for clip statistics."""
    stride = max(1, -(-feats.shape[0] // STAT_ROWS))
    return feats[::stride]


def _speech_level(rows: torch.Tensor) -> torch.Tensor:
    """A clip's speech level: the 95th percentile of the per-row mean log-mel of ``rows (T', D)``."""
    return torch.quantile(rows.mean(dim=1), LOUD_PERCENTILE / 100.0)


def normalize_floor(audio_feats: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Subtract a clip's per-bin noise floor and divide by its speech-to-floor distance.

    ``x = (f - floor_bin) / (level - mean(floor_bin))`` with ``floor_bin`` the 5th percentile
    of each mel bin over the clip and ``level`` the 95th percentile of the row mean: pauses
    map to ~0 in every bin whatever the microphone's noise colour or the gain, speech rows sit
    around 1. (``audio_norm="floor"``, the default: with a level-only shift the pauses of a
    noisier recording looked like no pause of the training clip and the mouth stayed open.)
    On a clip without pauses the floor is its quietest speech (the features are then only
    shifted).

    Args:
        audio_feats: ``(T, D)`` natural-log mel power.
    Returns:
        ``(T, D)`` float32.
    """
    feats = as_tensor(audio_feats)
    if feats.shape[0] == 0:
        return feats
    rows = _stat_rows(feats)
    floor = torch.quantile(rows, FLOOR_PERCENTILE / 100.0, dim=0)
    return (feats - floor) / torch.clamp(_speech_level(rows) - floor.mean(), min=1.0)


def normalize_clip(cfg: ModelConfig, audio_feats: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A whole clip's ``(T, D)`` features as the model reads them (``cfg.audio_norm``): floor-
    normalised, or as they are for ``layer`` (the encoder's LayerNorm normalises each token).

    The statistics are the clip's: call it once per clip, never on a chunk of one.
    """
    return normalize_floor(audio_feats) if cfg.audio_norm == "floor" else as_tensor(audio_feats)


class AudioEncoder(nn.Module):
    """Audio windows ``(B, A, audio_token_input)`` -> smoothed audio tokens ``(B, A, token_dim)``.

    Each window entry (``mel_per_frame`` feature rows of one video frame) goes through an MLP
    (``embed``; a LayerNorm first for ``audio_norm == "layer"``), the caller's embeddings are
    added, and one self-attention layer (``smooth``) mixes neighbouring frames.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.token_dim
        self.cfg = cfg
        norm = nn.LayerNorm(cfg.audio_token_input) if cfg.audio_norm == "layer" else nn.Identity()
        self.embed = nn.Sequential(norm, nn.Linear(cfg.audio_token_input, d), nn.GELU(), nn.Linear(d, d))
        self.smooth = nn.TransformerEncoderLayer(d, cfg.attn_heads, dim_feedforward=2 * d, dropout=0.0,
                                                 batch_first=True, norm_first=True)

    def forward(self, audio: torch.Tensor, *embeddings: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, A, token_dim)`` of windows ``audio (B, A, audio_token_input)``; each of
        ``embeddings`` (broadcast to ``(B, A, token_dim)``) is added, in order, before smoothing."""
        a, din = self.cfg.audio_frames, self.cfg.audio_token_input
        if audio.dim() != 3 or audio.shape[1:] != (a, din):
            raise ValueError(f"cond['audio'] must be (B, {a}, {din}) for this model, got {tuple(audio.shape)}; "
                             "build it with conditioning_for(cfg, ...)")
        x = self.embed(audio)
        for e in embeddings:
            x = x + e
        return self.smooth(x)


LEGACY_KEYS = {"audio_in.": "audio.embed.", "smooth.": "audio.smooth."}
"""Token-encoder state keys of avatars saved before the audio encoder had its own module."""
