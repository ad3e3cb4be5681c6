"""The training loop: ``fit(dataset_dir, run_dir, config) -> FitResult``.

Stages (see :mod:`talk3d.fit.config`): identity (U-Net off), audio (U-Net on), refine
(mouth-weighted). The loop is resumable: a rerun of the same command continues from the
last complete checkpoint with the same step count and frame order; Ctrl-C writes a
checkpoint first; a NaN/inf loss stops the fit and keeps the last good checkpoint.

Every step's randomness is keyed by (seed, step, frame) (:mod:`talk3d.model.noise`), so a
resumed fit repeats an uninterrupted one exactly, and a data-parallel fit over several
ranks (:mod:`talk3d.fit.distributed`) equals a one-process fit with the same frames per step.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from talk3d import threads
from talk3d.console import info, make_progress, warn
from talk3d.errors import UserError
from talk3d.face.landmarks import mouth_opening
from talk3d.fit import checkpoint as ck
from talk3d.fit import distributed
from talk3d.fit.config import FitConfig, finalize
from talk3d.fit.data import TrainingData, to_device
from talk3d.fit.lipsync import AudioAugment, freeze_audio_encoder, pretrain_mouth_head, rest_code
from talk3d.fit.run_folder import (
    CURVES,
    METRICS,
    PREVIEWS,
    RUN_ENTRIES,
    disk_full,
    prepare_run_dir,
    read_records,
    space_needed,
    write_records,
)
from talk3d.fit.validation import mouth_psnr, plot_curves, psnr, save_preview, ssim
from talk3d.folders import check_separate, commit_staged
from talk3d.io import need_free_space, remove_tree, setup_file_log, write_json
from talk3d.model import losses as model_losses
from talk3d.model.conditioning import conditioning_for
from talk3d.model.config import ModelConfig
from talk3d.model.noise import FrameNoise


@dataclass
class FitResult:
    """What a fit produced."""

    run_dir: Path
    """The run folder."""
    steps: int
    """Total finished steps."""
    start_step: int
    """Step the fit started (resumed) from; 0 for a fresh fit."""
    wall_time_s: float
    """Wall time of this call in seconds."""
    val: dict[str, float] = field(default_factory=dict)
    """Final held-out figures: ``psnr``, ``ssim``, ``mouth_psnr`` (dB / [0, 1]), ``frames``."""
    sec_per_step: float = math.nan
    """Median seconds per training step in this call."""
    avatar_path: Path | None = None
    """``avatar.safetensors``."""


def _is_texture(name: str) -> bool:
    """Parameters trained at the triplane learning rate: the triplane, the image-mode torso
    texture and the lip-driven deltaplane basis."""
    return name.startswith("triplane.") or name in ("torso.texture", "mouth_basis")


def _param_groups(model: torch.nn.Module, cfg: FitConfig) -> list[dict[str, Any]]:
    planes = [p for n, p in model.named_parameters() if _is_texture(n)]
    others = [p for n, p in model.named_parameters() if not _is_texture(n)]
    return [{"params": planes, "lr": cfg.lr_planes, "name": "planes"},
            {"params": others, "lr": cfg.lr, "name": "networks"}]


@torch.no_grad()
def init_torso(model: torch.nn.Module, data: TrainingData, count: int = 24) -> None:
    """Initialise the image-mode torso texture from ``count`` evenly spaced training frames.

    Colour: mean over frames where the pixel is torso (mask == 1; the mean frame elsewhere);
    alpha: how often the pixel is torso among the frames where the head does not cover it.
    """
    if getattr(model, "torso", None) is None:
        return
    train = data.train_indices
    idx = np.unique(np.linspace(train.start, train.stop - 1, min(count, len(train))).round().astype(np.int64))
    b = data.batch(idx.tolist())
    image, mask = b["image"], b["mask"]
    torso = (mask == 1).float()
    visible = (mask != 2).float()
    n = torso.sum(0)
    colour = torch.where(n > 0, (image * torso).sum(0) / n.clamp_min(1.0), image.mean(0))
    alpha = torch.where(visible.sum(0) > 0, n / visible.sum(0).clamp_min(1.0), (mask > 0).float().mean(0))
    model.set_torso_init(colour, alpha)


def pretrain_lips(model: torch.nn.Module, data: TrainingData, cfg: FitConfig, device: torch.device,
                  augment: AudioAugment | None = None) -> dict[str, float]:
    """Teach the token encoder to predict the lip-motion code from audio before the U-Net needs it.

    ``augment`` (None: none) changes every pretraining batch of audio windows.

    Returns ``{"lip_code_mse", "lip_code_val_corr", "lip_code_val_mse"}``: the final training
    error and, on the held-out frames, the correlation and mean squared error of the predicted
    and tracked first code component (the mouth opening, mostly); NaN without held-out frames.
    """
    enc = model.tokens
    mcfg = cfg.model

    def windows(frames: np.ndarray) -> torch.Tensor:
        cond = conditioning_for(mcfg, data.audio_feats, data.manifest.audio_feature_rate, data.manifest.fps,
                                data.blink, data.poses, frames)
        return cond["audio"].to(device)

    train = np.asarray(data.train_indices)
    codes = torch.from_numpy(data.mouth_codes).to(device)
    rest = None
    if mcfg.audio_norm == "floor" and cfg.lip_silence_fraction > 0:  # room tone is in floor-normalised units
        opening = mouth_opening(np.asarray(data.dataset.landmarks)[train])
        rest = torch.from_numpy(rest_code(data.mouth_codes[train], opening)).to(device)
    with make_progress() as bar:
        task = bar.add_task("lip-sync pretraining", total=cfg.mouth_pretrain_steps, status="")
        losses = pretrain_mouth_head(enc, windows(train), codes[train], cfg.mouth_pretrain_steps,
                                     augment=augment, bins=mcfg.audio_dim, seed=cfg.seed,
                                     progress=lambda k, v: bar.update(task, completed=k, status=f"MSE {v:.3f}"),
                                     rest=rest, silence=cfg.lip_silence_fraction)
    val = np.asarray(data.val_indices)
    corr = err = float("nan")
    if val.size > 2:
        with torch.no_grad():
            pred = enc.mouth_code(windows(val))[:, 0].cpu().numpy()
        target = data.mouth_codes[val, 0]
        if pred.std() > 1e-8 and target.std() > 1e-8:  # undefined for a constant series
            corr = float(np.corrcoef(pred, target)[0, 1])
        err = float(np.mean((pred - target) ** 2))
    res = {"lip_code_mse": float(np.mean(losses[-50:])) if losses else float("nan"), "lip_code_val_corr": corr,
           "lip_code_val_mse": err}
    info(f"lip-sync pretraining: {cfg.mouth_pretrain_steps} steps, code MSE {res['lip_code_mse']:.3f}, held-out "
         f"mouth-code correlation {corr:.2f}, MSE {err:.2f}")
    return res


def batch_lr_scale(cfg: FitConfig, ranks: int) -> float:
    """Learning-rate factor for the frames per step (``batch_size`` per rank x ``ranks``), by
    ``cfg.lr_batch_scaling``: 1 (``none``), their square root (``sqrt``) or their number (``linear``)."""
    frames = cfg.batch_size * ranks
    return {"none": 1.0, "sqrt": math.sqrt(frames), "linear": float(frames)}[cfg.lr_batch_scaling]


def lr_factor(cfg: FitConfig, step: int) -> float:
    """Learning-rate multiplier at 0-based ``step``: warm-up, exponential decay, refine factor."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    decay = cfg.lr_final_factor ** (step / max(1, cfg.total_steps - 1))
    stage = cfg.refine_lr_factor if cfg.stage_at(step) == "refine" else 1.0
    return warm * decay * stage


def _stage_weights(cfg: FitConfig, stage: str) -> Any:
    if stage != "refine" or not hasattr(cfg.loss, "mouth"):
        return cfg.loss
    return dataclasses.replace(cfg.loss, mouth=cfg.loss.mouth * cfg.refine_mouth_factor)


def _forward(model: torch.nn.Module, batch: dict, stage: str, amp: bool) -> dict[str, torch.Tensor]:
    cond = None if stage == "identity" else batch["cond"]
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        out = model(batch["cam2world"], batch["intrinsics"], cond, motion_scale=1.0, noise=batch.get("noise"))
    return {k: (v.float() if torch.is_floating_point(v) else v) for k, v in out.items()}


def model_differences(saved: Any, current: Any) -> list[str]:
    """``"KEY: run V1, this fit V2"`` for every model setting in which a run's saved config (a
    dict, completed with the defaults of fields added since, as loading does) differs from ``current``."""
    try:
        old = json.loads(json.dumps(ModelConfig.from_dict(dict(saved or {})).to_dict()))
    except (TypeError, ValueError, UserError) as exc:
        return [f"unreadable ({exc})"]
    new = json.loads(json.dumps(current.to_dict()))
    return [f"{k}: run {old.get(k)}, this fit {new.get(k)}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


@torch.no_grad()
def validate(model: torch.nn.Module, data: TrainingData, frames: list[int], device: torch.device,
             amp: bool, preview: Path | None = None, chunk: int = 4) -> dict[str, float]:
    """Render held-out frames (self-driven, full motion) and measure them.

    Returns:
        ``{"val_psnr", "val_ssim", "val_mouth_psnr", "val_frames"}`` (means over frames).
    """
    was_training = model.training
    model.eval()
    ps, ss, ms = [], [], []
    first: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None
    for k in range(0, len(frames), chunk):
        batch = data.batch(frames[k:k + chunk], device)
        out = _forward(model, batch, "audio", amp)
        ps.append(psnr(out["rgb"], batch["image"]).cpu())
        ss.append(ssim(out["rgb"], batch["image"]).cpu())
        ms.append(mouth_psnr(out["rgb"], batch["image"], batch["mouth_box"]).cpu())
        if first is None:
            first = (batch["image"][:4].cpu(), {n: v[:4].cpu() for n, v in out.items() if n in ("rgb", "depth", "alpha")})
    model.train(was_training)
    if preview is not None and first is not None:
        save_preview(preview, first[0], first[1])
    return {"val_psnr": float(torch.cat(ps).mean()), "val_ssim": float(torch.cat(ss).mean()),
            "val_mouth_psnr": float(torch.cat(ms).mean()), "val_frames": len(frames)}


def fit(dataset_dir: str | os.PathLike, run_dir: str | os.PathLike, config: FitConfig,
        force: bool = False) -> FitResult:
    """Fit an avatar to a prepared dataset; resumable (see module docstring).

    Run under torchrun (``WORLD_SIZE > 1``) it is one rank of a data-parallel fit
    (:mod:`talk3d.fit.distributed`): every rank runs this same call.

    Raises:
        DatasetError: missing/incomplete dataset or other format version.
        UserError: too few frames, output not writable, a run with other model settings,
            NaN/inf loss (the last good checkpoint is kept).
    """
    cfg = finalize(config)
    ranks, device = distributed.setup(cfg.device)
    try:
        result = Fit(Path(dataset_dir), Path(run_dir), cfg, force, ranks, device).run()
    except BaseException:
        distributed.shutdown(ranks, clean=False)
        raise
    distributed.shutdown(ranks)
    return result


class Fit:
    """One fit: the data, the model and its optimiser, the run folder and the training loop."""

    def __init__(self, dataset_dir: Path, run_dir: Path, cfg: FitConfig, force: bool, ranks: distributed.Dist,
                 device: torch.device):
        self.t_start = time.perf_counter()
        check_separate(run_dir, [("dataset", dataset_dir)])
        self.ranks, self.device = ranks, device
        self.amp = bool(cfg.amp and device.type == "cuda")
        self.data = TrainingData(dataset_dir, cfg.model, cfg.cache_frames, cfg.mouth_margin)
        if cfg.model.audio_dim != self.data.manifest.audio_feature_dim:  # the model's audio input follows the data
            cfg.model.audio_dim = self.data.manifest.audio_feature_dim
            cfg = finalize(cfg)
            self.data.model_config = cfg.model
        if len(self.data.train_indices) < cfg.min_frames:
            raise UserError(f"dataset '{dataset_dir}' has only {len(self.data.train_indices)} training frames, at "
                            f"least {cfg.min_frames} are needed: prepare a longer video (a few minutes is best)")
        self.cfg, self.dataset_dir, self.final_dir = cfg, dataset_dir, run_dir
        # the folder written from here on: run_dir, or its staging folder when --force replaces a run
        self.run_dir = ranks.main_only(lambda: self._open_run_dir(force))
        self.cfg_dict = {**cfg.to_dict(), "dataset_dir": str(dataset_dir.resolve())}
        self.ckpt = ck.latest_checkpoint(self.run_dir)
        self.start = self.ckpt.step if self.ckpt is not None else 0
        start0 = ranks.share(self.start)
        if not ranks.all_true(self.start == start0, device):
            raise UserError(f"the ranks see different checkpoints in '{run_dir}' (rank {ranks.rank}: step {self.start}, "
                            f"rank 0: step {start0}): keep the run folder on a file system every machine shares")

    def _open_run_dir(self, force: bool) -> Path:
        """Rank 0: check or create the run folder; start its log. A staged refit made with other
        model settings than this one is started over (it is talk3d's own scratch)."""
        target = prepare_run_dir(self.final_dir, force)
        if target != self.final_dir:
            try:
                staged = ck.latest_checkpoint(target)
            except UserError:
                staged = None
            if staged is not None and model_differences(staged.config.get("model"), self.cfg.model):
                remove_tree(target)
                target.mkdir()
        setup_file_log(target, "fit")
        return target

    # ------------------------------------------------------------------ setup
    def _finished(self) -> FitResult | None:
        """The result of a run that already has every step and an intact avatar, else None."""
        if self.ckpt is not None:
            differ = model_differences(self.ckpt.config.get("model"), self.cfg.model)
            if differ:
                raise UserError(f"run '{self.final_dir}' was started with other model settings ({'; '.join(differ[:3])}"
                                f"{'; ...' if len(differ) > 3 else ''}): resume with the same preset/--size (a run of "
                                f"an older talk3d: --set model.KEY=VALUE with the run's values), or --force to refit")
        if self.start < self.cfg.total_steps or not (self.run_dir / ck.AVATAR_META).is_file():
            return None
        if not ck.avatar_intact(self.run_dir):
            warn(f"the avatar in '{self.final_dir}' is damaged: writing it again from the checkpoint of step "
                 f"{self.start}")
            return None
        meta = json.loads((self.run_dir / ck.AVATAR_META).read_text())
        if self.run_dir != self.final_dir:  # a refit that finished but was not swapped in yet
            self.ranks.main_only(lambda: commit_staged(self.final_dir, self.run_dir, "run", RUN_ENTRIES))
            self.run_dir = self.final_dir
        info(f"run '{self.final_dir}' already finished {self.start} steps; use --steps to train longer or --force "
             f"to refit")
        return FitResult(self.final_dir, self.start, self.start, time.perf_counter() - self.t_start,
                         {k[4:]: v for k, v in meta.get("metrics", {}).items() if k.startswith("val_")},
                         avatar_path=self.final_dir / ck.AVATAR)

    def _build(self) -> None:
        """Model (restored from the checkpoint), optimiser, DDP wrapper, metrics records."""
        from talk3d.model.avatar import Avatar

        cfg, data = self.cfg, self.data
        self.ranks.main_only(self._write_run_files)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        threads.start(cfg.threads, distributed.local_processes(self.ranks))
        self.model = model = Avatar(cfg.model)
        model.set_background(data.background())
        model.set_canonical_landmarks(torch.from_numpy(np.asarray(data.dataset.canonical_landmarks)))
        if self.ckpt is None:
            init_torso(model, data)
        model.to(self.device).train()
        self.ranks.main_only(lambda: need_free_space(str(self.run_dir), space_needed(model, cfg), "this fit"))
        self.optimizer = torch.optim.Adam(_param_groups(model, cfg), betas=(0.9, 0.99))
        self.base_lrs = [g["lr"] * batch_lr_scale(cfg, self.ranks.world) for g in self.optimizer.param_groups]
        if self.ckpt is not None:
            self.ckpt.restore(model, self.optimizer)
            model.ensure_occupancy()  # a checkpoint saved before the grid existed
            info(f"resuming '{self.run_dir}' from step {self.start} ({self.ckpt.stage} stage)")
        self.net = self.ranks.wrap(model, self.device)  # what the training forward goes through
        self.records = read_records(self.run_dir / METRICS, self.start)
        self.last_metrics: dict[str, Any] = dict(self.ckpt.metrics) if self.ckpt is not None else {}
        self.augment = AudioAugment() if cfg.audio_augment else None
        self.encoder_frozen = False
        self.step = self.start
        self.times: list[float] = []
        info(f"fit {self.dataset_dir} -> {self.run_dir}: {cfg.total_steps} steps (identity {cfg.identity_steps}, "
             f"audio {cfg.audio_steps}, refine {cfg.refine_steps}), out {cfg.model.out_res}, neural "
             f"{cfg.model.neural_res}, batch {cfg.batch_size}{self._ranks_note()}, device {self.device}")

    def _write_run_files(self) -> None:
        write_json(self.run_dir / ck.CONFIG, self.cfg_dict)
        ck.copy_dataset_files(self.dataset_dir, self.run_dir)

    def _ranks_note(self) -> str:
        w = self.ranks.world
        return f" per rank x {w} ranks = {self.cfg.batch_size * w} frames per step" if w > 1 else ""

    # ------------------------------------------------------------------ loop
    def run(self) -> FitResult:
        done = self._finished()
        if done is not None:
            return done
        self._build()
        index_iter = self.data.train_index_batches(self.cfg.batch_size * self.ranks.world, self.cfg.seed, self.start)
        window: dict[str, list[float]] = {}
        try:
            with make_progress() as bar:
                task = bar.add_task("fit", total=self.cfg.total_steps, completed=self.start, status="")
                while self.step < self.cfg.total_steps:
                    losses = self._train_step(next(index_iter))
                    for k, v in losses.items():
                        window.setdefault(k, []).append(float(v.detach()))
                    self._after_step(window, bar, task)
        except KeyboardInterrupt:
            if self.step > self.start and self.ranks.main:
                self._save(self.cfg.stage_at(self.step - 1))
                warn(f"interrupted: checkpoint of step {self.step} written to '{self.run_dir}'; run the same "
                     f"command to resume")
            raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full(self.run_dir, space_needed(self.model, self.cfg)) from None
            raise
        except torch.distributed.DistBackendError:  # another rank stopped (Ctrl-C, a failure): keep the work
            if self.step > self.start and self.ranks.main:
                self._save(self.cfg.stage_at(self.step - 1))
            raise UserError(f"another rank of the fit stopped at step {self.step}; the last checkpoint in "
                            f"'{self.run_dir}' is kept: run the same command to resume") from None
        return self._finish()

    def _train_step(self, global_batch: np.ndarray) -> dict[str, torch.Tensor]:
        """One optimisation step on this rank's slice of the step's frames."""
        cfg, step = self.cfg, self.step
        t0 = time.perf_counter()
        stage = cfg.stage_at(step)
        factor = lr_factor(cfg, step)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            g["lr"] = base * factor
        self._enter_stage(stage)
        if cfg.occupancy_every > 0 and step % cfg.occupancy_every == 0:
            self.model.refresh_occupancy()
        frames = np.array_split(global_batch, self.ranks.world)[self.ranks.rank].tolist()
        noise = FrameNoise(cfg.seed, step, frames, self.device)
        batch = to_device(self.data.batch(frames), self.device)
        batch["noise"] = noise
        if stage != "identity":
            self._condition(batch, noise)
        out = _forward(self.net, batch, stage, self.amp)
        weights = _stage_weights(cfg, stage)
        if self._lip_frozen(stage):  # the code's MSE is still logged, but trains nothing
            weights = dataclasses.replace(weights, mouth_code=0.0)
        losses = model_losses.compute_losses(out, batch, self.model, weights)
        loss = losses["total"]
        if not self.ranks.all_true(bool(torch.isfinite(loss)), self.device):
            raise self._nan_error(loss, stage)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.times.append(time.perf_counter() - t0)
        if "psnr" not in losses:
            with torch.no_grad():
                losses["psnr"] = psnr(out["rgb"], batch["image"]).mean()
        return losses

    def _enter_stage(self, stage: str) -> None:
        """Lip pretraining when the audio stage starts; the audio encoder frozen after it."""
        cfg, data = self.cfg, self.data
        if (self.step == cfg.identity_steps and stage != "identity" and data.mouth_codes is not None
                and cfg.mouth_pretrain_steps > 0 and "lip_code_mse" not in self.last_metrics):
            self.last_metrics.update(pretrain_lips(self.model, data, cfg, self.device, self.augment))
            self.ranks.broadcast_module(self.model.tokens)  # every rank starts the audio stage alike
        if self._lip_frozen(stage) and not self.encoder_frozen:  # after the pretraining, or at a resume past it
            freeze_audio_encoder(self.model.tokens)
            self.encoder_frozen = True
            self.net = self.ranks.wrap(self.model, self.device)  # DDP syncs only the parameters that still train

    def _lip_frozen(self, stage: str) -> bool:
        return self.cfg.freeze_lip_encoder and self.data.mouth_codes is not None and stage != "identity"

    def _condition(self, batch: dict, noise: FrameNoise) -> None:
        """Audio augmentation and teacher forcing of the lip code, each frame with its own noise."""
        cond = batch["cond"]
        if self.augment is not None:
            cond["audio"] = torch.cat([self.augment(cond["audio"][i:i + 1], self.cfg.model.audio_dim, generator=g)
                                       for i, g in enumerate(noise.generators)])
        if self.cfg.lip_teacher and "mouth_code" in batch:
            code = batch["mouth_code"]
            cond["mouth_drive"] = code + self.cfg.lip_teacher_noise * noise.randn(code.shape[-1]).to(code)

    def _nan_error(self, loss: torch.Tensor, stage: str) -> UserError:
        good = ck.list_checkpoints(self.run_dir)
        where = f"the last good checkpoint (step {good[-1][0]}) is kept" if good else "no checkpoint was written yet"
        value = f"{loss.item()}" if not self.ranks.active else "NaN or infinite on a rank"
        return UserError(f"the loss became {value} at step {self.step + 1} ({stage} stage); {where}; lower the "
                         f"learning rate (e.g. --lr {self.cfg.lr / 3:.2g}) and run again to resume")

    def _after_step(self, window: dict[str, list[float]], bar: Any, task: Any) -> None:
        """Metrics line, progress, periodic validation and checkpoint."""
        cfg, step = self.cfg, self.step
        stage = cfg.stage_at(step - 1)
        threads.rebalance()
        if step % cfg.log_every == 0 or step == cfg.total_steps:
            names = sorted(window)
            means = self.ranks.mean(torch.tensor([float(np.mean(window[k])) for k in names]), self.device)
            avg = dict(zip(names, means.tolist(), strict=True))
            rec = {"step": step, "stage": stage, "loss": avg.pop("total"), "psnr": avg.pop("psnr"), "losses": avg,
                   "lr": self.optimizer.param_groups[1]["lr"], "sec_per_step": float(np.mean(self.times[-cfg.log_every:])),
                   "wall_s": round(time.perf_counter() - self.t_start, 2)}
            window.clear()
            self.records.append(rec)
            if self.ranks.main:
                write_records(self.run_dir / METRICS, self.records)
            self.last_metrics.update({"loss": rec["loss"], "psnr": rec["psnr"]})
            bar.update(task, status=f"{stage} loss {rec['loss']:.4f} PSNR {rec['psnr']:.2f} dB")
        bar.update(task, completed=step)
        if cfg.val_every > 0 and step % cfg.val_every == 0 and step < cfg.total_steps:
            res = self._validate(final=False)
            info(f"step {step}: held-out PSNR {res['val_psnr']:.2f} dB, SSIM {res['val_ssim']:.3f}, "
                 f"mouth PSNR {res['val_mouth_psnr']:.2f} dB")
        if step % cfg.checkpoint_every == 0 and step < cfg.total_steps and self.ranks.main:
            self._save(stage)

    def _validate(self, final: bool) -> dict[str, float]:
        """Held-out figures (rank 0 renders, the others wait)."""

        def on_main() -> dict[str, float]:
            frames = self.data.val_subset(self.cfg.final_val_frames if final else self.cfg.val_frames)
            res = validate(self.model, self.data, frames, self.device, self.amp,
                           self.run_dir / PREVIEWS / f"step_{self.step:07d}.png")
            self.records.append({"step": self.step, "stage": self.cfg.stage_at(max(0, self.step - 1)), **res,
                                 "wall_s": round(time.perf_counter() - self.t_start, 2)})
            write_records(self.run_dir / METRICS, self.records)
            return res

        res = self.ranks.main_only(on_main)
        self.last_metrics.update(res)
        return res

    def _save(self, stage: str) -> None:
        ck.save_checkpoint(self.run_dir, self.step, stage, self.model, self.optimizer, self.cfg_dict,
                           self.last_metrics, self.cfg.keep_checkpoints)

    def _write_result(self) -> None:
        """Rank 0: the last checkpoint, the avatar, a staged refit swapped in, the curves."""
        self._save(self.cfg.stage_at(self.step - 1))
        ck.save_avatar(self.run_dir, self.model, self.cfg.model, self.cfg_dict, self.step, self.last_metrics,
                       str(self.dataset_dir.resolve()))
        if self.run_dir != self.final_dir:  # replace the earlier run only now that the new one is complete
            commit_staged(self.final_dir, self.run_dir, "run", RUN_ENTRIES)
            self.run_dir = self.final_dir
        train = [r for r in self.records if "loss" in r]
        plot_curves(self.run_dir / CURVES, train, [r for r in self.records if "val_psnr" in r])

    def _finish(self) -> FitResult:
        """Final validation, checkpoint and avatar; swap a staged refit in; the result."""
        step = self.step
        self.model.refresh_occupancy()  # the avatar is saved with the grid of its final weights
        res = self._validate(final=True)
        avatar_path = self.final_dir / ck.AVATAR
        self.ranks.main_only(self._write_result)
        self.ranks.barrier()
        wall = time.perf_counter() - self.t_start
        sec = float(np.median(self.times)) if self.times else math.nan
        info(f"fit done: {step} steps in {wall / 60:.1f} min ({sec:.3f} s/step); held-out PSNR {res['val_psnr']:.2f} "
             f"dB, SSIM {res['val_ssim']:.3f}, mouth PSNR {res['val_mouth_psnr']:.2f} dB over {res['val_frames']} "
             f"frames")
        return FitResult(self.final_dir, step, self.start, wall,
                         {"psnr": res["val_psnr"], "ssim": res["val_ssim"], "mouth_psnr": res["val_mouth_psnr"],
                          "frames": res["val_frames"]}, sec, avatar_path)
