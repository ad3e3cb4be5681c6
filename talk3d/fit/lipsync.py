"""Lip-sync supervision for the fit: lip-motion codes from tracked landmarks, audio
augmentation, and pretraining of the audio encoder on them.

Why: with only an image loss, a CPU-sized fit (a few thousand steps on 20 s of video) learned
deltaplanes that did not depend on the audio at all. The tracked FaceMesh lips are a direct,
cheap signal: the token encoder learns to predict each frame's lip shape from its audio window
(seconds of training, no rendering, then frozen); the fit drives the lip token and the lip
basis (:class:`talk3d.model.avatar.Avatar`) with the tracked code, render with the prediction.

The code of a frame: the lip landmarks in the canonical face frame (similarity on the stable
landmarks removes head pose and scale), x/y only, minus the training mean, projected on the
training frames' principal components and divided by each component's standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from talk3d.face.landmarks import MOUTH, STABLE_LANDMARKS
from talk3d.face.pose import umeyama


def _uniform(lo: float, hi: float, *shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """CPU float32 samples of ``U(lo, hi)`` with ``shape`` (reproducible with ``generator``)."""
    return lo + (hi - lo) * torch.rand(*shape, generator=generator)


def lip_codes(landmarks: np.ndarray, canonical: np.ndarray, train: np.ndarray, size: int) -> np.ndarray:
    """Per-frame lip-motion codes.

    Args:
        landmarks: ``(N, 478, 3)`` tracked pixel landmarks.
        canonical: ``(478, 3)`` canonical landmark shape (world units).
        train: indices of the training frames (the statistics come from them only).
        size: number of code components ``K``.
    Returns:
        ``(N, K)`` float32 codes, zero mean and unit variance per component on ``train``;
        components beyond the rank of the training lips (very short clips) are 0.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    can = np.asarray(canonical, dtype=np.float64)
    flip = np.array([1.0, -1.0, -1.0])  # pixel frame (y down, z away) -> world (y up, z out)
    lips = np.empty((lm.shape[0], MOUTH.size, 2))
    for i, frame in enumerate(lm):
        pts = frame * flip
        s, rot, t = umeyama(pts[STABLE_LANDMARKS], can[STABLE_LANDMARKS])
        lips[i] = (s * pts[MOUTH] @ rot.T + t)[:, :2]
    x = lips.reshape(lm.shape[0], -1)
    train = np.asarray(train, dtype=np.int64)
    mean = x[train].mean(0)
    _, sv, vt = np.linalg.svd(x[train] - mean, full_matrices=False)
    k = int(min(size, vt.shape[0], max(1, train.size - 1)))
    codes = np.zeros((lm.shape[0], size), np.float32)
    codes[:, :k] = (x - mean) @ vt[:k].T
    codes[:, :k] /= np.maximum(codes[train, :k].std(0), 1e-8)
    return codes


@dataclass
class AudioAugment:
    """Random changes of normalised audio windows that keep what drives the lips (timing and
    energy) but vary what a new recording changes (spectral colour, bandwidth, level, noise).

    Applied per sample: a gain, a spectral tilt (a gain that varies log-linearly across the mel
    bins), with probability ``lowpass_p`` the bins above a random cutoff set to 0 (band-limited
    or telephone audio), and Gaussian noise. Pauses stay ~0 except for the noise.
    """

    gain: tuple[float, float] = (0.7, 1.3)
    tilt: float = 0.6
    """Largest log-gain difference between the lowest and the highest bin (each way)."""
    lowpass_p: float = 0.3
    lowpass_min: float = 0.5
    """Lowest cutoff as a fraction of the bins."""
    noise: float = 0.08
    """Largest noise standard deviation (normalised units)."""

    def __call__(self, audio: torch.Tensor, bins: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment ``audio (B, A, rows * bins)`` (normalised windows); returns a new tensor."""
        b = audio.shape[0]
        x = audio.reshape(b, audio.shape[1], -1, bins)
        opts = {"generator": generator, "device": "cpu"}

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return _uniform(lo, hi, *shape, generator=generator).to(audio)

        ramp = torch.linspace(-0.5, 0.5, bins).to(audio)
        gain = uniform(*self.gain, b, 1) * torch.exp(uniform(-self.tilt, self.tilt, b, 1) * ramp)
        cutoff = uniform(self.lowpass_min, 1.0, b, 1) * bins
        keep = torch.arange(bins).to(audio)[None] < cutoff
        keep = keep | (torch.rand(b, 1, **opts).to(audio.device) >= self.lowpass_p)
        x = x * (gain * keep)[:, None, None]
        x = x + uniform(0.0, self.noise, b, 1, 1, 1) * torch.randn(x.shape, **opts).to(audio)
        return x.reshape(audio.shape)


def rest_code(codes: np.ndarray, opening: np.ndarray, quantile: float = 0.1) -> np.ndarray:
    """Lip code of the mouth at rest: the mean code ``(K,)`` of the frames whose mouth opening
    ``(N,)`` is in the lowest ``quantile`` (``codes (N, K)``)."""
    closed = opening <= np.quantile(opening, quantile)
    return codes[closed].mean(0).astype(np.float32)


def silent_span_mask(count: int, frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(count, frames)`` masks that are 0 on a random span around the window's centre frame
    and 1 elsewhere: the span reaches 2 to ``frames // 2`` frames to each side, so speech may
    remain at the window's edges (a pause between words) or the whole window is silent."""
    c = frames // 2
    lo = c - torch.randint(min(2, c), c + 1, (count, 1), generator=generator)
    hi = c + torch.randint(min(2, c), c + 1, (count, 1), generator=generator)
    t = torch.arange(frames)[None]
    return ((t < lo) | (t > hi)).float()


def room_tone(count: int, frames: int, rows: int, bins: int, generator: torch.Generator | None = None,
              level: float = 0.2, noise: float = 0.08) -> torch.Tensor:
    """Floor-normalised features of pauses that are not digital silence: ``(count, frames,
    rows * bins)``. Each sample gets a level in ``[0, level)`` that decays from the low bins
    (a random decay length of 5-40 % of the bins: hum, breath, room noise sit low), plus
    Gaussian noise of std up to ``noise``. (Measured: the two-speaker sample's pauses have a
    mean of 0.04, std 0.075 and low bins near 0.1 in these units, and an encoder trained with
    exact zeros as silence read them as speech.)"""
    b = torch.arange(bins, dtype=torch.float32)
    decay = torch.exp(-b[None] / (_uniform(0.05, 0.4, count, 1, generator=generator) * bins))  # (count, bins)
    base = _uniform(0.0, level, count, 1, generator=generator) * decay
    out = base[:, None, None, :] + _uniform(0.0, noise, count, 1, 1, 1, generator=generator) * torch.randn(
        count, frames, rows, bins, generator=generator)
    return out.reshape(count, frames, rows * bins)


def pretrain_mouth_head(encoder: torch.nn.Module, audio: torch.Tensor, codes: torch.Tensor, steps: int,
                        batch: int = 64, lr: float = 2e-3, augment: AudioAugment | None = None,
                        bins: int = 80, seed: int = 0, progress=None, rest: torch.Tensor | None = None,
                        silence: float = 0.0) -> list[float]:
    """Train the token encoder's audio path and lip-code head to predict ``codes`` from ``audio``.

    Args:
        encoder: a :class:`talk3d.model.conditioning.TokenEncoder` with ``mouth_code > 0``.
        audio: ``(N, A, rows * bins)`` normalised audio windows of the training frames.
        codes: ``(N, K)`` their lip-motion codes.
        steps: optimiser steps (Adam, cosine-decayed learning rate).
        augment: audio augmentation applied to every batch (None: none).
        progress: optional callable ``(step, loss)`` called every 50 steps.
        rest: ``(K,)`` code of the mouth at rest (see :func:`rest_code`); with ``silence > 0``
            that fraction of every batch is windows silenced around their centre frame
            (:func:`silent_span_mask`) and filled with :func:`room_tone` (floor-normalised
            units, so ``audio_norm="floor"`` only), before augmentation, with this target, so
            pauses close the mouth even when the training clip has none.
    Returns:
        the mean-squared error of each step.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(encoder.lip_pretraining_parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    losses = []
    was_training = encoder.training
    encoder.train()
    n = audio.shape[0]
    for step in range(steps):
        idx = torch.randint(0, n, (min(batch, n),), generator=gen).to(audio.device)
        x, target = audio[idx], codes[idx]
        quiet = int(round(silence * len(idx))) if rest is not None else 0
        if quiet > 0:
            x, target = x.clone(), target.clone()
            keep = silent_span_mask(quiet, x.shape[1], gen).to(x)[:, :, None]
            floor = room_tone(quiet, x.shape[1], x.shape[2] // bins, bins, gen).to(x)
            x[:quiet] = x[:quiet] * keep + floor * (1.0 - keep)
            target[:quiet] = rest.to(target)
        if augment is not None:
            x = augment(x, bins, gen)
        loss = (encoder.mouth_code(x) - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress is not None and (step + 1) % 50 == 0:
            progress(step + 1, float(np.mean(losses[-50:])))
    encoder.train(was_training)
    return losses


def training_phones(dataset) -> np.ndarray:
    """``(T, P)`` phone rows of a dataset's audio: its ``phonemes.npy`` (prep), or decoded from its
    ``audio.wav`` for datasets prepared before prep wrote them."""
    from talk3d.media import AUDIO_RATE, read_audio
    from talk3d.phonemes import phone_rows

    if dataset.phonemes is not None:  # shape checked when the dataset was opened
        return np.asarray(dataset.phonemes, np.float32)
    return phone_rows(read_audio(dataset.root / "audio.wav", AUDIO_RATE))


def calibrate_lip_prior(dataset, codes: np.ndarray, train: np.ndarray, phones: np.ndarray) -> tuple:
    """The avatar's calibration of the phonetic lip prior (:mod:`talk3d.model.lip_prior`).

    Args:
        dataset: a :class:`talk3d.dataset.TalkingHeadDataset`.
        codes: ``(N, K)`` tracked lip codes of every frame.
        train: training frame indices.
        phones: ``(T, P)`` phone rows of the dataset's audio.
    Returns:
        the :class:`LipPrior`, the ``(N,)`` prior and the ``(N,)`` tracked mouth opening of every
        frame (for held-out figures).
    """
    from talk3d.face.landmarks import mouth_opening
    from talk3d.model.audio_encoder import normalize_floor
    from talk3d.model.lip_prior import LipPrior, prior_at_frames

    m = dataset.manifest
    feats = normalize_floor(np.asarray(dataset.audio_feats, np.float32)).numpy()
    prior = prior_at_frames(phones, feats, m.audio_feature_rate, m.fps, np.arange(m.num_frames))
    opening = mouth_opening(np.asarray(dataset.landmarks))
    return LipPrior.fit(prior[train], opening[train], codes[train]), prior, opening
