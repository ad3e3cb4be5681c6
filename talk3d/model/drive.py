"""Driving an avatar over a sequence of frames: a clip's signals in model units (its audio
normalised once) and the one loop that builds each batch's conditioning and runs the model.

Fit validation, ``talk3d render``, ``talk3d eval`` and the benchmarks all render through
:func:`forward_frames`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from talk3d.model.audio_encoder import as_tensor, normalize_clip, normalize_floor
from talk3d.model.conditioning import frame_conditioning
from talk3d.model.config import ModelConfig
from talk3d.model.lip_prior import LipPrior


@dataclass
class DrivingClip:
    """Per-frame driving signals of one clip, ready for :meth:`conditioning`."""

    cfg: ModelConfig
    """The model's config (window sizes)."""
    audio: torch.Tensor
    """``(T, D)`` the clip's audio features, normalised as the model reads them (once per clip)."""
    feature_rate: float
    """Rows per second of ``audio``."""
    fps: float
    """Video frame rate (audio time of frame ``f`` is ``f / fps``)."""
    blink: torch.Tensor
    """``(N,)`` eye closure per frame."""
    poses: torch.Tensor
    """``(N, 4, 4)`` camera-to-world per frame: the conditioning pose (head motion)."""
    torso: torch.Tensor | None = None
    """``(N, 2)`` tracked torso offsets per frame (None: resting torso)."""
    mouth: torch.Tensor | None = None
    """``(N, K)`` lip codes that drive the mouth (the phonetic lip prior's), or None: the model
    predicts them from the audio."""

    @classmethod
    def from_arrays(cls, cfg: ModelConfig, audio_feats: np.ndarray | torch.Tensor, feature_rate: float, fps: float,
                    blink: np.ndarray | torch.Tensor, poses: np.ndarray | torch.Tensor,
                    torso: np.ndarray | torch.Tensor | None = None, lip_prior: LipPrior | None = None,
                    phones: np.ndarray | None = None) -> DrivingClip:
        """A clip from its raw ``(T, D)`` features (the whole clip: they are normalised here) and
        per-frame ``blink (N,)``, ``poses (N, 4, 4)``, ``torso (N, 2)``. With an avatar's
        ``lip_prior`` and the clip's ``phones (T, P)`` (:func:`talk3d.phonemes.phone_rows`), the
        prior drives the mouth."""
        audio = normalize_clip(cfg, audio_feats)
        mouth = None
        if lip_prior is not None and phones is None:
            raise ValueError("a lip prior needs the clip's phone rows (talk3d.phonemes.phone_rows)")
        if lip_prior is not None:
            floor = audio if cfg.audio_norm == "floor" else normalize_floor(audio_feats)  # the same, once
            values = lip_prior.values(phones, floor.numpy(), feature_rate, fps, np.arange(len(blink)))
            mouth = torch.from_numpy(lip_prior.codes(values))
        return cls(cfg, audio, float(feature_rate), float(fps), as_tensor(blink), as_tensor(poses),
                   None if torso is None else as_tensor(torso), mouth)

    def conditioning(self, frames: np.ndarray | torch.Tensor | Sequence[int]) -> dict[str, torch.Tensor]:
        """The model's conditioning (:func:`frame_conditioning`) of ``frames (B,)``, CPU float32."""
        idx = np.asarray(frames, dtype=np.int64)
        cond = frame_conditioning(self.audio, self.feature_rate, self.fps, self.blink, self.poses, idx,
                                  window=self.cfg.audio_window, rows_per_frame=self.cfg.mel_per_frame,
                                  torso_offsets=self.torso)
        if self.mouth is not None:
            cond["mouth_drive"] = self.mouth[torch.from_numpy(idx)]
        return cond


def conditioning_for(cfg: ModelConfig, audio_feats: np.ndarray | torch.Tensor, feature_rate: float, fps: float,
                     blink: np.ndarray | torch.Tensor, cam2world: np.ndarray | torch.Tensor,
                     frame_indices: np.ndarray | torch.Tensor,
                     torso_offsets: np.ndarray | torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The conditioning of ``frame_indices`` of a clip, in one call (normalises the clip's
    ``(T, D)`` features each time: for many batches of one clip build a :class:`DrivingClip`)."""
    clip = DrivingClip.from_arrays(cfg, audio_feats, feature_rate, fps, blink, cam2world, torso_offsets)
    return clip.conditioning(as_tensor(frame_indices, torch.float64).long().numpy())


@dataclass
class FrameBatch:
    """One batch of :func:`forward_frames`."""

    positions: slice
    """Where these frames sit in the requested sequence."""
    cond: dict[str, torch.Tensor]
    """Their conditioning on the model's device."""
    cameras: torch.Tensor
    """``(B, 4, 4)`` their render cameras."""
    out: dict[str, torch.Tensor]
    """The forward pass's outputs."""


Forward = Callable[[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
"""``(cameras (B, 4, 4), intrinsics (B, 3, 3), cond) -> outputs``."""


def forward_frames(avatar: torch.nn.Module, clip: DrivingClip, frames: np.ndarray | Sequence[int],
                   cameras: torch.Tensor | None, intrinsics: torch.Tensor | np.ndarray,
                   batch_size: int = 4, forward: Forward | None = None,
                   before_batch: Callable[[], None] | None = None) -> Iterator[FrameBatch]:
    """Render ``frames`` of ``clip`` batch by batch, without gradients.

    Args:
        avatar: a :class:`talk3d.model.avatar.Avatar` (its device is used).
        frames: ``(F,)`` clip frames to condition on.
        cameras: ``(F, 4, 4)`` render cameras, or None for the clip's poses of ``frames``.
        intrinsics: ``(3, 3)`` normalised intrinsics (shared by every frame).
        batch_size: frames per forward pass.
        forward: the forward pass (default ``avatar(cameras, intrinsics, cond)``).
        before_batch: called before each batch (e.g. :func:`talk3d.threads.rebalance`).
    Yields:
        :class:`FrameBatch` in order.
    """
    idx = np.asarray(frames, dtype=np.int64)
    device = next(avatar.parameters()).device
    cams = clip.poses[torch.from_numpy(idx)] if cameras is None else cameras
    if cams.shape[0] != idx.size:
        raise ValueError(f"{cams.shape[0]} cameras for {idx.size} frames")
    k = as_tensor(intrinsics).to(device)
    run = forward or (lambda c, kk, cond: avatar(c, kk, cond))
    for start in range(0, idx.size, batch_size):
        part = slice(start, min(start + batch_size, idx.size))
        if before_batch is not None:
            before_batch()
        cond = {name: v.to(device) for name, v in clip.conditioning(idx[part]).items()}
        c = cams[part].to(device)
        with torch.no_grad():
            out = run(c, k.expand(c.shape[0], 3, 3), cond)
        yield FrameBatch(part, cond, c, out)
        del out  # the caller holds the batch as long as it needs it: not alive during the next forward
