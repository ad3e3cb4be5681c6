"""Per-frame conditioning: plain tensors from arrays (shared by fit and render) and tokens.

:func:`frame_conditioning` turns the dataset's (or new audio's) arrays into
``{"audio": (B, A, D), "blink": (B, 1), "pose": (B, P)}``; :class:`TokenEncoder` turns
that dict into the tokens the deltaplane U-Net attends to.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from talk3d.model.audio_encoder import AudioEncoder, as_tensor
from talk3d.model.config import ModelConfig

POSE_DIM = 10
"""Size of :func:`pose_vector`: 6D rotation, unit camera position, log distance."""


def pose_vector(cam2world: torch.Tensor) -> torch.Tensor:
    """Pose features of cameras: 6D rotation, unit camera position, log distance.

    Args:
        cam2world: ``(B, 4, 4)``.
    Returns:
        ``(B, 10)``.
    """
    rot6 = cam2world[:, :3, :2].transpose(1, 2).reshape(-1, 6)
    t = cam2world[:, :3, 3]
    dist = t.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return torch.cat([rot6, t / dist, torch.log(dist)], -1)


def audio_windows(audio_feats: np.ndarray | torch.Tensor, feature_rate: float, fps: float,
                  frame_indices: np.ndarray | torch.Tensor, window: int = 8,
                  rows_per_frame: int = 4) -> torch.Tensor:
    """Audio features around each frame, resampled to ``rows_per_frame`` rows per video frame.

    Video frame ``f`` covers ``[f / fps, (f + 1) / fps)``; its rows are read (linear
    interpolation) at ``(f + (j + 0.5) / rows_per_frame) / fps`` seconds. Times outside
    the audio read zeros.

    Args:
        audio_feats: ``(T, D)`` features at ``feature_rate`` rows per second.
        frame_indices: ``(B,)`` video frame indices.
        window: frames on each side (``A = 2 * window + 1``).
    Returns:
        ``(B, A, rows_per_frame * D)`` float32.
    """
    feats = as_tensor(audio_feats)
    idx = as_tensor(frame_indices, torch.float64)
    t_len, dim = feats.shape
    offs = torch.arange(-window, window + 1, dtype=torch.float64)
    sub = (torch.arange(rows_per_frame, dtype=torch.float64) + 0.5) / rows_per_frame
    times = (idx[:, None, None] + offs[None, :, None] + sub[None, None, :]) / fps  # (B, A, M)
    pos = times * feature_rate - 0.5  # row centres sit at (i + 0.5) / rate
    i0 = torch.floor(pos)
    w1 = (pos - i0).to(torch.float32)[..., None]

    def take(i: torch.Tensor) -> torch.Tensor:
        """Rows ``i`` of the features, zeros outside the audio (indexing only the rows asked
        for: no padded copy of the whole clip per call)."""
        if t_len == 0:
            return torch.zeros(*i.shape, dim)
        rows = feats[i.clamp(0, t_len - 1).long()]
        return torch.where(((i >= 0) & (i < t_len))[..., None], rows, torch.zeros((), dtype=rows.dtype))

    # Edge rows fade to zero over half a row beyond the audio, like zero padding.
    out = take(i0) * (1.0 - w1) + take(i0 + 1) * w1  # (B, A, M, D)
    return out.reshape(idx.shape[0], 2 * window + 1, rows_per_frame * dim)


def frame_conditioning(audio_feats: np.ndarray | torch.Tensor, feature_rate: float, fps: float,
                       blink: np.ndarray | torch.Tensor, cam2world: np.ndarray | torch.Tensor,
                       frame_indices: np.ndarray | torch.Tensor, *, window: int = 8,
                       rows_per_frame: int = 4,
                       torso_offsets: np.ndarray | torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Conditioning tensors for a batch of frames (fit and render both call this).

    Args:
        audio_feats: ``(T, D)`` audio features at ``feature_rate`` Hz (log-mel, ...).
        feature_rate: rows per second of ``audio_feats``.
        fps: video frame rate.
        blink: ``(N,)`` eye closure per frame in [0, 1].
        cam2world: ``(N, 4, 4)`` camera-to-world per frame.
        frame_indices: ``(B,)`` frames to condition (index ``blink``/``cam2world`` and the audio).
        window, rows_per_frame: must match ``ModelConfig.audio_window`` / ``mel_per_frame``.
        torso_offsets: ``(N, 2)`` tracked torso shift per frame in image widths, or None (zeros).
    Returns:
        ``{"audio": (B, 2*window+1, rows_per_frame*D), "blink": (B, 1), "pose": (B, 10),
        "torso": (B, 2)}`` float32 CPU.
    """
    idx = as_tensor(frame_indices, torch.float64).long()
    n = len(blink)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"frame index out of range [0, {n}): {idx.min().item()}..{idx.max().item()}")
    blink_t = as_tensor(blink)[idx].reshape(-1, 1)
    pose = pose_vector(as_tensor(cam2world)[idx])
    audio = audio_windows(audio_feats, feature_rate, fps, idx, window, rows_per_frame)
    torso = (as_tensor(torso_offsets)[idx].reshape(-1, 2) if torso_offsets is not None
             else torch.zeros(idx.numel(), 2))
    return {"audio": audio, "blink": blink_t, "pose": pose, "torso": torso}


class TokenEncoder(nn.Module):
    """Conditioning dict -> tokens ``(B, A + 3 [+ 1], token_dim)``.

    Audio: :class:`talk3d.model.audio_encoder.AudioEncoder` (``audio``) turns each window entry
    into a token (plus a position and a type embedding) and smooths over neighbouring frames.
    With ``cfg.mouth_code = K > 0`` a head reads the whole smoothed window and predicts a
    ``K``-number lip-motion code, which becomes one more token; the audio tokens then reach the
    U-Net detached (the fit's lip pretraining, against tracked lip landmarks, is all that trains
    the encoder). Blink and pose -> one token each; plus a learned null token (lets attention
    attend to "nothing").
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.token_dim
        self.cfg = cfg
        self.audio = AudioEncoder(cfg)
        self.audio_pos = nn.Parameter(torch.randn(cfg.audio_frames, d) * 0.02)
        self.blink_in = nn.Sequential(nn.Linear(1, d), nn.GELU(), nn.Linear(d, d))
        self.pose_in = nn.Sequential(nn.Linear(POSE_DIM, d), nn.GELU(), nn.Linear(d, d))
        self.type_emb = nn.Parameter(torch.randn(3, d) * 0.02)
        self.null = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.norm = nn.LayerNorm(d)
        if cfg.mouth_code > 0:
            self.mouth_head = nn.Sequential(nn.Flatten(), nn.Linear(cfg.audio_frames * d, d), nn.GELU(),
                                            nn.Linear(d, cfg.mouth_code))
            self.mouth_in = nn.Sequential(nn.Linear(cfg.mouth_code, d), nn.GELU(), nn.Linear(d, d))
            self.mouth_emb = nn.Parameter(torch.randn(d) * 0.02)

    def audio_tokens(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, A, audio_token_input)`` audio windows -> smoothed audio tokens ``(B, A, token_dim)``."""
        return self.audio(audio, self.audio_pos, self.type_emb[0])

    def mouth_code(self, audio: torch.Tensor) -> torch.Tensor:
        """Lip-motion code ``(B, K)`` predicted from audio windows ``(B, A, audio_token_input)``."""
        if self.cfg.mouth_code <= 0:
            raise ValueError("this model has no lip-motion code (mouth_code = 0)")
        return self.mouth_head(self.audio_tokens(audio))

    def encode(self, cond: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``cond`` (see :func:`frame_conditioning`) -> tokens ``(B, K_tok, token_dim)`` and the
        predicted lip-motion code ``(B, mouth_code)`` (None when the model has none).

        ``cond["mouth_drive"]`` ``(B, mouth_code)``, when given, replaces the predicted code in
        the tokens (teacher forcing with the tracked code during the fit); the returned code is
        still the prediction (for its loss).
        """
        audio, blink, pose = cond["audio"], cond["blink"], cond["pose"]
        if pose.shape[-1] != POSE_DIM:
            raise ValueError(f"cond['pose'] must be (B, {POSE_DIM}), got {tuple(pose.shape)}")
        b = audio.shape[0]
        ta = self.audio_tokens(audio)
        tb = (self.blink_in(blink) + self.type_emb[1])[:, None]
        if self.cfg.pose_token:
            tp = (self.pose_in(pose) + self.type_emb[2])[:, None]
        else:  # a constant token: the pose cannot identify training frames (see ModelConfig.pose_token)
            tp = self.type_emb[2].expand(b, 1, -1)
        parts, code = [ta, tb, tp, self.null.expand(b, 1, -1)], None
        if self.cfg.mouth_code > 0:
            # The audio encoder learns from the lip code alone: the image loss reaching
            # it through the U-Net's attention undid the lip prediction within 50 steps.
            parts[0] = ta.detach()
            code = self.mouth_head(ta)
            drive = cond.get("mouth_drive", code)
            parts.insert(1, (self.mouth_in(drive.to(code)) + self.mouth_emb)[:, None])
        return self.norm(torch.cat(parts, 1)), code

    def forward(self, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """``cond`` (see :func:`frame_conditioning`) -> tokens ``(B, K_tok, token_dim)``."""
        return self.encode(cond)[0]

    def lip_encoder(self) -> list[nn.Parameter]:
        """The audio path to the lip code (audio encoder, window positions, lip-code head): the
        lip pretraining trains them, and they stay frozen after it."""
        head = list(self.mouth_head.parameters()) if self.cfg.mouth_code > 0 else []
        return [*self.audio.parameters(), self.audio_pos, *head]

    def lip_pretraining_parameters(self) -> list[nn.Parameter]:
        """What the lip pretraining trains: :meth:`lip_encoder` and the token-type embeddings
        (the audio type's row is added to every audio token)."""
        return [*self.lip_encoder(), self.type_emb]


def token_count(cfg: ModelConfig) -> int:
    """Number of tokens the encoder produces: ``A + 3``, plus 1 with a lip-motion code."""
    return cfg.audio_frames + 3 + (1 if cfg.mouth_code > 0 else 0)

