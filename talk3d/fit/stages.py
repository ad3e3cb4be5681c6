"""The stages of a fit as objects: what each trains, its loss weights and learning rate, and
what happens when it starts. The training loop (:mod:`talk3d.fit.trainer`) only asks them.

1. ``identity``: the identity triplane, decoder, super-resolution (and torso) with the
   deltaplanes off: no conditioning reaches the model, so geometry and appearance go into the
   triplane.
2. ``audio``: the audio-guided deltaplane U-Net is on. On entry, for models with a lip-motion
   code, the **lip pretraining** (:class:`LipPretraining`) teaches the audio encoder to predict
   the tracked lip code (seconds, no rendering), once per fit; the lip encoder then stays frozen.
   Every step the audio windows are augmented (other voices and microphones) and the tracked
   lip code plus noise drives the lip token and basis (teacher forcing); validation, render and
   eval use the code predicted from the audio.
3. ``refine``: as ``audio``, with a larger mouth-region weight and a lower learning rate.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from talk3d.console import info, make_progress
from talk3d.face.landmarks import mouth_opening
from talk3d.fit.config import FitConfig
from talk3d.fit.data import TrainingData
from talk3d.fit.lipsync import AudioAugment, pretrain_mouth_head, rest_code
from talk3d.model.losses import LossWeights
from talk3d.model.noise import FrameNoise


@dataclass(frozen=True)
class Stage:
    """One stage: steps ``[start, start + steps)`` of the fit."""

    name: str
    start: int
    steps: int
    conditioned: bool = True
    """The audio path runs (tokens, U-Net, lip basis); False: the identity alone (deltaplane 0)."""
    lr_factor: float = 1.0
    """Multiplier of every learning rate in this stage."""
    mouth_factor: float = 1.0
    """Multiplier of the mouth-region loss weight."""
    frozen: tuple[str, ...] = ()
    """Parameter sets of the model that do not train in this stage (named in
    :meth:`talk3d.model.avatar.Avatar.parameter_sets`)."""
    pretrain_lips: bool = False
    """Run the lip pretraining on entry when the fit has not yet run it."""

    @property
    def end(self) -> int:
        return self.start + self.steps

    def weights(self, base: LossWeights) -> LossWeights:
        """The :class:`talk3d.model.losses.LossWeights` of this stage from the fit's ``base``."""
        if self.mouth_factor == 1.0:
            return base
        return dataclasses.replace(base, mouth=base.mouth * self.mouth_factor)


def plan(cfg: FitConfig, lip_code: bool) -> list[Stage]:
    """The stages of a fit (empty ones left out). ``lip_code``: the model has a lip-motion code
    and the dataset tracked lips, so the audio stages pretrain and then freeze the lip encoder."""
    lips = {"frozen": ("lip_encoder",), "pretrain_lips": cfg.mouth_pretrain_steps > 0} if lip_code else {}
    a, b = cfg.identity_steps, cfg.identity_steps + cfg.audio_steps
    stages = [Stage("identity", 0, a, conditioned=False),
              Stage("audio", a, cfg.audio_steps, **lips),
              Stage("refine", b, cfg.refine_steps, lr_factor=cfg.refine_lr_factor,
                    mouth_factor=cfg.refine_mouth_factor, **lips)]
    return [s for s in stages if s.steps > 0]


class Schedule:
    """The stages over the fit's steps, and the learning-rate factor of every step."""

    def __init__(self, cfg: FitConfig, lip_code: bool):
        self.stages = plan(cfg, lip_code)
        self.total = cfg.total_steps
        self.warmup, self.final = cfg.warmup_steps, cfg.lr_final_factor

    def at(self, step: int) -> Stage:
        """The stage of 0-based ``step`` (the last stage beyond the end)."""
        return next((s for s in self.stages if step < s.end), self.stages[-1])

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier of 0-based ``step``: warm-up, exponential decay, stage factor."""
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else 1.0
        decay = self.final ** (step / max(1, self.total - 1))
        return warm * decay * self.at(step).lr_factor


def batch_lr_scale(cfg: FitConfig, ranks: int) -> float:
    """Learning-rate factor for the frames per step (``batch_size`` per rank x ``ranks``), by
    ``cfg.lr_batch_scaling``: 1 (``none``), their square root (``sqrt``) or their number (``linear``)."""
    frames = cfg.batch_size * ranks
    return {"none": 1.0, "sqrt": math.sqrt(frames), "linear": float(frames)}[cfg.lr_batch_scaling]


class LipPretraining:
    """Teach the token encoder to predict the tracked lip-motion code from audio windows before
    the U-Net needs it (:func:`talk3d.fit.lipsync.pretrain_mouth_head`), with augmented audio
    and, for floor-normalised audio, silent windows whose target is the mouth at rest."""

    def __init__(self, cfg: FitConfig, data: TrainingData, device: torch.device):
        self.cfg, self.data, self.device = cfg, data, device

    def _windows(self, frames: np.ndarray) -> torch.Tensor:
        return self.data.conditioning(frames)["audio"].to(self.device)

    def _rest(self, train: np.ndarray) -> torch.Tensor | None:
        """The code of the mouth at rest (silence target), or None without silence examples."""
        if self.cfg.model.audio_norm != "floor" or self.cfg.lip_silence_fraction <= 0:
            return None  # room tone is in floor-normalised units
        opening = mouth_opening(np.asarray(self.data.dataset.landmarks)[train])
        return torch.from_numpy(rest_code(self.data.mouth_codes[train], opening)).to(self.device)

    def run(self, encoder: torch.nn.Module, augment: AudioAugment) -> dict[str, float]:
        """Train ``encoder`` (a :class:`talk3d.model.conditioning.TokenEncoder`).

        Returns ``{"lip_code_mse", "lip_code_val_corr", "lip_code_val_mse"}``: the final training
        error and, on the held-out frames, the correlation and mean squared error of the predicted
        and tracked first code component (the mouth opening, mostly); NaN without held-out frames.
        """
        cfg, data = self.cfg, self.data
        train = np.asarray(data.train_indices)
        codes = torch.from_numpy(data.mouth_codes).to(self.device)
        with make_progress() as bar:
            task = bar.add_task("lip-sync pretraining", total=cfg.mouth_pretrain_steps, status="")
            losses = pretrain_mouth_head(
                encoder, self._windows(train), codes[train], cfg.mouth_pretrain_steps, augment=augment,
                bins=cfg.model.audio_dim, seed=cfg.seed, rest=self._rest(train), silence=cfg.lip_silence_fraction,
                progress=lambda k, v: bar.update(task, completed=k, status=f"MSE {v:.3f}"))
        res = {"lip_code_mse": float(np.mean(losses[-50:])) if losses else float("nan"),
               **self._held_out(encoder)}
        info(f"lip-sync pretraining: {cfg.mouth_pretrain_steps} steps, code MSE {res['lip_code_mse']:.3f}, "
             f"held-out mouth-code correlation {res['lip_code_val_corr']:.2f}, MSE {res['lip_code_val_mse']:.2f}")
        return res

    @torch.no_grad()
    def _held_out(self, encoder: torch.nn.Module) -> dict[str, float]:
        val = np.asarray(self.data.val_indices)
        corr = err = float("nan")
        if val.size > 2:
            pred = encoder.mouth_code(self._windows(val))[:, 0].cpu().numpy()
            target = self.data.mouth_codes[val, 0]
            if pred.std() > 1e-8 and target.std() > 1e-8:  # undefined for a constant series
                corr = float(np.corrcoef(pred, target)[0, 1])
            err = float(np.mean((pred - target) ** 2))
        return {"lip_code_val_corr": corr, "lip_code_val_mse": err}


class AudioConditioning:
    """The per-step changes of the conditioning in the conditioned stages: augmented audio
    windows and, with tracked lip codes, teacher forcing; each frame with its own noise."""

    def __init__(self, cfg: FitConfig):
        self.augment = AudioAugment()
        self.bins = cfg.model.audio_dim
        self.teacher_noise = cfg.lip_teacher_noise

    def __call__(self, batch: dict, noise: FrameNoise) -> None:
        cond = batch["cond"]
        cond["audio"] = torch.cat([self.augment(cond["audio"][i:i + 1], self.bins, generator=g)
                                   for i, g in enumerate(noise.generators)])
        if "mouth_code" in batch:
            code = batch["mouth_code"]
            cond["mouth_drive"] = code + self.teacher_noise * noise.randn(code.shape[-1]).to(code)


def apply_frozen(named_sets: dict[str, list[torch.nn.Parameter]], model: torch.nn.Module,
                 frozen: tuple[str, ...]) -> bool:
    """Let every parameter of ``model`` train except those of the ``frozen`` sets (named in
    ``named_sets``); True when that changed which parameters train."""
    stop = {id(p) for name in frozen for p in named_sets[name]}
    changed = False
    for p in model.parameters():
        trains = id(p) not in stop
        changed |= p.requires_grad != trains
        p.requires_grad_(trains)
    return changed

