"""The training loop: ``fit(dataset_dir, run_dir, config) -> FitResult``.

The stages (:mod:`talk3d.fit.stages`: identity, lip pretraining, audio, refine) say what trains,
with which loss weights and learning rates, and what happens on entry; the loop here is generic.
It is resumable: a rerun of the same command continues from the
last complete checkpoint with the same step count and frame order; Ctrl-C writes a
checkpoint first; a NaN/inf loss stops the fit and keeps the last good checkpoint.

Every step's randomness is keyed by (seed, step, frame) (:mod:`talk3d.model.noise`), so a
resumed fit repeats an uninterrupted one exactly, and a data-parallel fit over several
ranks (:mod:`talk3d.fit.distributed`) equals a one-process fit with the same frames per step.
"""

from __future__ import annotations

import copy
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
from talk3d.fit import checkpoint as ck
from talk3d.fit import distributed
from talk3d.fit.config import FitConfig, finalize, match_audio_dim, with_head_volume
from talk3d.fit.data import TrainingData, to_device
from talk3d.fit.head_volume import measure_head_volume
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
from talk3d.fit.stages import AudioConditioning, LipPretraining, Schedule, Stage, apply_frozen, batch_lr_scale
from talk3d.fit.validation import plot_curves, save_preview
from talk3d.folders import check_separate, commit_staged
from talk3d.image import box_psnr, psnr, ssim
from talk3d.io import need_free_space, remove_tree, setup_file_log, write_json, write_npy
from talk3d.memory import keep_freed_memory
from talk3d.model import losses as model_losses
from talk3d.model.config import ModelConfig
from talk3d.model.drive import forward_frames
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


@torch.no_grad()
def init_torso(model: torch.nn.Module, data: TrainingData, count: int = 24) -> None:
    """Initialise the image-mode torso texture from ``count`` evenly spaced training frames.

    Colour: mean over frames where the pixel is torso (mask == 1; the mean frame elsewhere);
    alpha: how often the pixel is torso among the frames where the head does not cover it.
    """
    if getattr(model, "torso", None) is None:
        return
    train = np.asarray(data.train_indices)
    idx = np.unique(train[np.linspace(0, train.size - 1, min(count, train.size)).round().astype(np.int64)])
    b = data.batch(idx.tolist())
    image, mask = b["image"], b["mask"]
    torso = (mask == 1).float()
    visible = (mask != 2).float()
    n = torso.sum(0)
    colour = torch.where(n > 0, (image * torso).sum(0) / n.clamp_min(1.0), image.mean(0))
    alpha = torch.where(visible.sum(0) > 0, n / visible.sum(0).clamp_min(1.0), (mask > 0).float().mean(0))
    model.set_torso_init(colour, alpha)


def _forward(model: torch.nn.Module, cam2world: torch.Tensor, intrinsics: torch.Tensor, cond: dict | None,
             amp: bool, noise: FrameNoise | None = None) -> dict[str, torch.Tensor]:
    """The model's outputs in float32 (``cond`` None: the identity alone); bfloat16 autocast with ``amp``."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        out = model(cam2world, intrinsics, cond, motion_scale=1.0, noise=noise)
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
    idx = np.asarray(frames, dtype=np.int64)
    for fb in forward_frames(model, data.clip, idx, None, data.intrinsics, batch_size=chunk,
                             forward=lambda c, k, cond: _forward(model, c, k, cond, amp)):
        target = data.targets(idx[fb.positions], device)
        out, image = fb.out, target["image"]
        ps.append(psnr(out["rgb"], image).cpu())
        ss.append(ssim(out["rgb"], image).cpu())
        ms.append(box_psnr(out["rgb"], image, target["mouth_box"]).cpu())
        if first is None:
            first = (image[:4].cpu(), {n: v[:4].cpu() for n, v in out.items() if n in ("rgb", "depth", "alpha")})
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
        cfg = copy.deepcopy(cfg)  # the data's sizes and head volume are set below, not in the caller's config
        self.data = TrainingData(dataset_dir, cfg.model, cfg.cache_frames, cfg.mouth_margin)
        if cfg.model.audio_dim != self.data.manifest.audio_feature_dim:  # the model's audio input follows the data
            cfg = match_audio_dim(cfg, self.data.manifest.audio_feature_dim)
            self.data.set_model_config(cfg.model)
        measured = cfg.model.head_volume is None and cfg.model.torso_mode == "image"  # ... and so does the head volume
        if measured:
            volume = measure_head_volume(self.data.dataset, self.data.train_indices)
            if volume is None:
                warn(f"the head masks of '{dataset_dir}' hold no head to measure: the head may fill the whole scene box")
            cfg = with_head_volume(cfg, volume)
            self.data.set_model_config(cfg.model)
        if len(self.data.train_indices) < cfg.min_frames:
            raise UserError(f"dataset '{dataset_dir}' has only {len(self.data.train_indices)} training frames, at "
                            f"least {cfg.min_frames} are needed: prepare a longer video (a few minutes is best)")
        self.cfg, self.dataset_dir, self.final_dir = cfg, dataset_dir, run_dir
        # the folder written from here on: run_dir, or its staging folder when --force replaces a run
        self.run_dir = ranks.main_only(lambda: self._open_run_dir(force))
        self.ckpt = ck.latest_checkpoint(self.run_dir)
        if measured and self.ckpt is not None:  # a run goes on with its own volume (none: started before it)
            self.cfg = cfg = with_head_volume(cfg, (self.ckpt.config.get("model") or {}).get("head_volume"))
            self.data.set_model_config(cfg.model)
        self.cfg_dict = {**cfg.to_dict(), "dataset_dir": str(dataset_dir.resolve())}
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
        if self.data.mouth_codes is not None:
            self.ranks.main_only(self._ensure_lip_prior)
        if self.run_dir != self.final_dir:  # a refit that finished but was not swapped in yet
            self.ranks.main_only(lambda: commit_staged(self.final_dir, self.run_dir, "run", RUN_ENTRIES))
            self.run_dir = self.final_dir
        info(f"run '{self.final_dir}' already finished {self.start} steps; use --steps to train longer or --force "
             f"to refit")
        return FitResult(self.final_dir, self.start, self.start, time.perf_counter() - self.t_start,
                         {k[4:]: v for k, v in meta.get("metrics", {}).items() if k.startswith("val_")},
                         avatar_path=self.final_dir / ck.AVATAR)

    def _build(self) -> None:
        """Model (restored from the checkpoint), optimiser, DDP wrapper, stages, metrics records."""
        from talk3d.model.avatar import Avatar

        cfg, data = self.cfg, self.data
        self.ranks.main_only(self._write_run_files)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        threads.start(cfg.threads, distributed.local_processes(self.ranks))
        keep_freed_memory()
        self.model = model = Avatar(cfg.model)
        model.set_background(data.background())
        model.set_canonical_landmarks(torch.from_numpy(np.asarray(data.dataset.canonical_landmarks)))
        if self.ckpt is None:
            init_torso(model, data)
        model.to(self.device).train()
        self.ranks.main_only(lambda: need_free_space(str(self.run_dir), space_needed(model, cfg), "this fit"))
        groups = model.parameter_groups()
        rates = {"planes": cfg.lr_planes, "networks": cfg.lr}
        self.optimizer = torch.optim.Adam([{"params": groups[n], "lr": rates[n], "name": n} for n in rates],
                                          betas=(0.9, 0.99))
        self.base_lrs = [g["lr"] * batch_lr_scale(cfg, self.ranks.world) for g in self.optimizer.param_groups]
        self.progress = {"lip_pretraining": False}
        if self.ckpt is not None:
            self.ckpt.restore(model, self.optimizer)
            model.ensure_occupancy()  # a checkpoint saved before the grid existed
            self.progress.update(self.ckpt.progress)
            info(f"resuming '{self.run_dir}' from step {self.start} ({self.ckpt.stage} stage)")
        self.net = self.ranks.wrap(model, self.device)  # what the training forward goes through
        self.schedule = Schedule(cfg, lip_code=data.mouth_codes is not None)
        self.stage: Stage | None = None
        self.audio_conditioning = AudioConditioning(cfg)
        self.records = read_records(self.run_dir / METRICS, self.start)
        self.last_metrics: dict[str, Any] = dict(self.ckpt.metrics) if self.ckpt is not None else {}
        self.step = self.start
        self.times: list[float] = []
        info(f"fit {self.dataset_dir} -> {self.run_dir}: {cfg.total_steps} steps (identity {cfg.identity_steps}, "
             f"audio {cfg.audio_steps}, refine {cfg.refine_steps}), out {cfg.model.out_res}, neural "
             f"{cfg.model.neural_res}, batch {cfg.batch_size}{self._ranks_note()}, device {self.device}")

    def _write_run_files(self) -> None:
        write_json(self.run_dir / ck.CONFIG, self.cfg_dict)
        ck.copy_dataset_files(self.dataset_dir, self.run_dir)
        if self.data.mouth_codes is not None:
            self._ensure_lip_prior()

    def _ensure_lip_prior(self) -> None:
        """Rank 0: write the phonetic lip prior where it is missing or damaged (a new fit; a run
        fitted before the prior), from this dataset, which must be the one the run was fitted on;
        a resumed fit keeps the one it has."""
        if ck.lip_prior_intact(self.run_dir, self.cfg.model.mouth_code):
            return
        fitted_on = ck.load_run_manifest(self.run_dir)
        m = self.data.manifest
        ours = (fitted_on.source_sha256, fitted_on.num_frames, fitted_on.val_frames.tolist())
        if ours != (m.source_sha256, m.num_frames, m.val_frames.tolist()):
            raise UserError(f"run '{self.final_dir}' was fitted on another dataset than '{self.dataset_dir}' (source, "
                            f"frames or held-out split differ): give the dataset it was fitted on")
        if (self.run_dir / ck.AVATAR_META).is_file():  # a finished run
            info("the run has no (intact) phonetic lip prior: writing it; the avatar's weights stay as they are")
        self._write_lip_prior()

    def _write_lip_prior(self) -> None:
        """Calibrate the phonetic lip prior on the training frames (seconds) and save it with the
        training audio's phone rows; log its held-out correlation with the tracked mouth."""
        from talk3d.fit.lipsync import calibrate_lip_prior, training_phones

        data = self.data
        phones = training_phones(data.dataset)
        prior, values, opening = calibrate_lip_prior(data.dataset, data.mouth_codes, np.asarray(data.train_indices),
                                                     phones)
        write_npy(self.run_dir / ck.PHONEMES, phones.astype(np.float16))
        ck.write_lip_prior(self.run_dir, prior)
        val = np.asarray(data.val_indices)
        if val.size > 2:
            info(f"phonetic lip prior: held-out correlation with the tracked mouth opening "
                 f"{np.corrcoef(prior.opening(values[val]), opening[val])[0, 1]:.2f}")

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
                self._save(self.schedule.at(self.step - 1).name)
                warn(f"interrupted: checkpoint of step {self.step} written to '{self.run_dir}'; run the same "
                     f"command to resume")
            raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full(self.run_dir, space_needed(self.model, self.cfg)) from None
            raise
        except torch.distributed.DistBackendError:  # another rank stopped (Ctrl-C, a failure): keep the work
            if self.step > self.start and self.ranks.main:
                self._save(self.schedule.at(self.step - 1).name)
            raise UserError(f"another rank of the fit stopped at step {self.step}; the last checkpoint in "
                            f"'{self.run_dir}' is kept: run the same command to resume") from None
        return self._finish()

    def _train_step(self, global_batch: np.ndarray) -> dict[str, torch.Tensor]:
        """One optimisation step on this rank's slice of the step's frames."""
        cfg, step = self.cfg, self.step
        t0 = time.perf_counter()
        stage = self._stage_of(step)
        factor = self.schedule.lr_factor(step)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            g["lr"] = base * factor
        if cfg.occupancy_every > 0 and step % cfg.occupancy_every == 0:
            self.model.refresh_occupancy()
        frames = np.array_split(global_batch, self.ranks.world)[self.ranks.rank].tolist()
        noise = FrameNoise(cfg.seed, step, frames, self.device)
        batch = to_device(self.data.batch(frames), self.device)
        if stage.conditioned:
            self.audio_conditioning(batch, noise)
        out = _forward(self.net, batch["cam2world"], batch["intrinsics"], batch["cond"] if stage.conditioned else None,
                       self.amp, noise)
        losses = model_losses.compute_losses(out, {**batch, "noise": noise}, self.model, stage.weights(cfg.loss))
        loss = losses["total"]
        if not self.ranks.all_true(bool(torch.isfinite(loss)), self.device):
            raise self._nan_error(loss, stage.name)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.times.append(time.perf_counter() - t0)
        return losses

    def _stage_of(self, step: int) -> Stage:
        """The stage of ``step``, entered first when the fit was not in it yet."""
        stage = self.schedule.at(step)
        if stage is not self.stage:
            self._enter(stage)
        return stage

    def _enter(self, stage: Stage) -> None:
        """A stage's entry: the lip pretraining when it asks for it and the fit never ran it (its
        weights are in the checkpoint), then its frozen parameters (re-applied at every resume)."""
        if stage.pretrain_lips and not self.progress["lip_pretraining"]:
            pretraining = LipPretraining(self.cfg, self.data, self.device)
            self.last_metrics.update(pretraining.run(self.model.tokens, self.audio_conditioning.augment))
            self.progress["lip_pretraining"] = True
            self.ranks.broadcast_module(self.model.tokens)  # every rank starts the audio stage alike
        if apply_frozen(self.model.parameter_sets(), self.model, stage.frozen):
            self.net = self.ranks.wrap(self.model, self.device)  # DDP syncs only the parameters that still train
        self.stage = stage

    def _nan_error(self, loss: torch.Tensor, stage: str) -> UserError:
        good = ck.list_checkpoints(self.run_dir)
        where = f"the last good checkpoint (step {good[-1][0]}) is kept" if good else "no checkpoint was written yet"
        value = f"{loss.item()}" if not self.ranks.active else "NaN or infinite on a rank"
        return UserError(f"the loss became {value} at step {self.step + 1} ({stage} stage); {where}; lower the "
                         f"learning rate (e.g. --lr {self.cfg.lr / 3:.2g}) and run again to resume")

    def _after_step(self, window: dict[str, list[float]], bar: Any, task: Any) -> None:
        """Metrics line, progress, periodic validation and checkpoint."""
        cfg, step = self.cfg, self.step
        stage = self.schedule.at(step - 1).name
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
            self.records.append({"step": self.step, "stage": self.schedule.at(max(0, self.step - 1)).name, **res,
                                 "wall_s": round(time.perf_counter() - self.t_start, 2)})
            write_records(self.run_dir / METRICS, self.records)
            return res

        res = self.ranks.main_only(on_main)
        self.last_metrics.update(res)
        return res

    def _save(self, stage: str) -> None:
        ck.save_checkpoint(self.run_dir, self.step, stage, self.model, self.optimizer, self.cfg_dict,
                           self.last_metrics, self.cfg.keep_checkpoints, self.progress)

    def _write_result(self) -> None:
        """Rank 0: the last checkpoint, the avatar, a staged refit swapped in, the curves."""
        self._save(self.schedule.at(self.step - 1).name)
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
