"""The training loop: ``fit(dataset_dir, run_dir, config) -> FitResult``.

Stages (see :mod:`talk3d.fit.config`): identity (U-Net off), audio (U-Net on), refine
(mouth-weighted). The loop is resumable: a rerun of the same command continues from the
last complete checkpoint with the same step count and frame order; Ctrl-C writes a
checkpoint first; a NaN/inf loss stops the fit and keeps the last good checkpoint.
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

from talk3d.console import info, make_progress, warn
from talk3d.device import resolve_device
from talk3d.errors import UserError, need_free_space
from talk3d.face.landmarks import mouth_opening
from talk3d.fit import checkpoint as ck
from talk3d.fit.config import FitConfig, finalize
from talk3d.fit.data import TrainingData, to_device
from talk3d.fit.lipsync import AudioAugment, freeze_audio_encoder, pretrain_mouth_head, rest_code
from talk3d.fit.validation import mouth_psnr, plot_curves, psnr, save_preview, ssim
from talk3d.folders import check_separate, claim_output, clean_leftovers, commit_staged, write_marker
from talk3d.io import atomic_path, remove_stale_temporaries, setup_file_log, write_json
from talk3d.model.conditioning import conditioning_for

METRICS = "metrics.jsonl"
PREVIEWS = "previews"
CURVES = "curves.png"
# Files and folders a fit writes; --force removes only these (never unknown user files).
RUN_ENTRIES = (ck.CONFIG, ck.CHECKPOINTS, ck.AVATAR, ck.AVATAR_META, ck.DATASET_MANIFEST, *ck.RUN_COPIES,
               *ck.OPTIONAL_RUN_COPIES, METRICS, PREVIEWS, CURVES, "fit.log")
# A fit that replaces an earlier run (--force) is built here and moved in only once complete.
STAGING = ".fit-new"


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


def _prepare_run_dir(run_dir: Path, force: bool) -> Path:
    """Check the run folder and return the folder this fit writes into.

    A new or empty folder, or a talk3d run (resumed), is written in place. With ``force`` a
    folder holding a run gets the new fit in ``RUN/.fit-new`` (resumed there when interrupted),
    which replaces the old run's entries only once complete. Anything else is refused.
    """
    has_run = claim_output(run_dir, "run", "fit")
    staging = run_dir / STAGING
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        staging.unlink()  # talk3d's staging is a plain folder: never write through a link
    target = staging if has_run and force else run_dir
    try:
        target.mkdir(parents=True, exist_ok=True)
        with atomic_path(target / ".write_test") as tmp:
            tmp.write_text("ok")
        (target / ".write_test").unlink()
    except OSError as exc:
        raise UserError(f"cannot write to run folder '{run_dir}' ({exc.strerror}); choose another -o") from None
    clean_leftovers(run_dir)
    write_marker(run_dir, "run", RUN_ENTRIES)
    remove_stale_temporaries(target)
    remove_stale_temporaries(target / ck.CHECKPOINTS, anonymous=True)
    return target


def _space_needed(model: torch.nn.Module, cfg: FitConfig) -> float:
    """Bytes a fit writes: the kept checkpoints (model + two Adam moments, one more while a new
    one is written), the avatar, previews and logs."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return weights * (3 * (cfg.keep_checkpoints + 1) + 1) + 20e6


def _disk_full(run_dir: Path, needed: float) -> UserError:
    good = ck.list_checkpoints(run_dir)
    kept = f"the checkpoint of step {good[-1][0]} is kept" if good else "no checkpoint was written yet"
    return UserError(f"the disk holding '{run_dir}' is full ({kept}): this fit needs about {needed / 1e6:,.0f} MB; "
                     f"free some space and run the same command again to resume")


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


def teacher_code(tracked: torch.Tensor, noise: float) -> torch.Tensor:
    """The tracked lip code ``(B, K)`` with Gaussian noise of std ``noise`` (teacher forcing)."""
    return tracked + noise * torch.randn_like(tracked) if noise > 0 else tracked


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
        out = model(batch["cam2world"], batch["intrinsics"], cond, motion_scale=1.0)
    return {k: (v.float() if torch.is_floating_point(v) else v) for k, v in out.items()}


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


def _read_records(path: Path, upto: int) -> list[dict[str, Any]]:
    """Lines of ``metrics.jsonl`` with ``step <= upto`` (a resumed fit rewrites what follows)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("step", 0) <= upto:
            out.append(rec)
    return out


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))


def fit(dataset_dir: str | os.PathLike, run_dir: str | os.PathLike, config: FitConfig,
        force: bool = False) -> FitResult:
    """Fit an avatar to a prepared dataset; resumable (see module docstring).

    Raises:
        DatasetError: missing/incomplete dataset or other format version.
        UserError: too few frames, output not writable, a run with other model settings,
            NaN/inf loss (the last good checkpoint is kept).
    """
    from talk3d.model.avatar import Avatar
    from talk3d.model.losses import compute_losses

    t_start = time.perf_counter()
    dataset_dir, run_dir = Path(dataset_dir), Path(run_dir)
    check_separate(run_dir, [("dataset", dataset_dir)])
    cfg = finalize(config)
    device = resolve_device(cfg.device)
    amp = bool(cfg.amp and device.type == "cuda")
    # The model's audio input must match the dataset's features.
    data = TrainingData(dataset_dir, cfg.model, cfg.cache_frames, cfg.mouth_margin)
    manifest = data.manifest
    if cfg.model.audio_dim != manifest.audio_feature_dim:
        cfg.model.audio_dim = manifest.audio_feature_dim
        cfg = finalize(cfg)
        data.model_config = cfg.model
    if len(data.train_indices) < cfg.min_frames:
        raise UserError(f"dataset '{dataset_dir}' has only {len(data.train_indices)} training frames, at least "
                        f"{cfg.min_frames} are needed: prepare a longer video (a few minutes is best)")
    final_dir = run_dir
    run_dir = _prepare_run_dir(final_dir, force)  # the folder written from here on (final_dir or its staging)
    setup_file_log(run_dir, "fit")
    cfg_dict = {**cfg.to_dict(), "dataset_dir": str(dataset_dir.resolve())}

    ckpt = ck.latest_checkpoint(run_dir)
    if ckpt is not None:
        saved_model = ckpt.config.get("model", {})
        if json.loads(json.dumps(saved_model)) != json.loads(json.dumps(cfg.model.to_dict())):
            raise UserError(f"run '{final_dir}' was started with other model settings; use the same preset/--size "
                            f"to resume, or --force to start over")
    start = ckpt.step if ckpt is not None else 0
    if start >= cfg.total_steps and (run_dir / ck.AVATAR_META).is_file():
        if ck.avatar_intact(run_dir):
            meta = json.loads((run_dir / ck.AVATAR_META).read_text())
            info(f"run '{final_dir}' already finished {start} steps; use --steps to train longer or --force to refit")
            return FitResult(final_dir, start, start, time.perf_counter() - t_start,
                             {k[4:]: v for k, v in meta.get("metrics", {}).items() if k.startswith("val_")},
                             avatar_path=final_dir / ck.AVATAR)
        warn(f"the avatar in '{final_dir}' is damaged: writing it again from the checkpoint of step {start}")

    write_json(run_dir / ck.CONFIG, cfg_dict)
    ck.copy_dataset_files(dataset_dir, run_dir)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    model = Avatar(cfg.model)
    model.set_background(data.background())
    model.set_canonical_landmarks(torch.from_numpy(np.asarray(data.dataset.canonical_landmarks)))
    if ckpt is None:
        init_torso(model, data)
    model.to(device).train()
    need_free_space(str(run_dir), _space_needed(model, cfg), "this fit")
    optimizer = torch.optim.Adam(_param_groups(model, cfg), betas=(0.9, 0.99))
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    if ckpt is not None:
        ckpt.restore(model, optimizer)
        info(f"resuming '{run_dir}' from step {start} ({ckpt.stage} stage)")
    logger_msg = (f"fit {dataset_dir} -> {run_dir}: {cfg.total_steps} steps (identity {cfg.identity_steps}, "
                  f"audio {cfg.audio_steps}, refine {cfg.refine_steps}), out {cfg.model.out_res}, "
                  f"neural {cfg.model.neural_res}, batch {cfg.batch_size}, device {device}")
    info(logger_msg)

    records = _read_records(run_dir / METRICS, start)
    val_records = [r for r in records if "val_psnr" in r]
    train_records = [r for r in records if "loss" in r]
    step = start
    last_metrics: dict[str, Any] = dict(ckpt.metrics) if ckpt is not None else {}
    times: list[float] = []
    rng_before = torch.get_rng_state()
    window: dict[str, list[float]] = {}
    index_iter = data.train_index_batches(cfg.batch_size, cfg.seed, start)
    augment = AudioAugment() if cfg.audio_augment else None
    encoder_frozen = False

    def save(stage: str) -> None:
        ck.save_checkpoint(run_dir, step, stage, model, optimizer, cfg_dict, last_metrics, cfg.keep_checkpoints)

    def do_validation(final: bool) -> dict[str, float]:
        frames = data.val_subset(cfg.final_val_frames if final else cfg.val_frames)
        res = validate(model, data, frames, device, amp, run_dir / PREVIEWS / f"step_{step:07d}.png")
        rec = {"step": step, "stage": cfg.stage_at(max(0, step - 1)), **res}
        val_records.append(rec)
        records.append(rec)
        _write_records(run_dir / METRICS, records)
        return res

    try:
        with make_progress() as bar:
            task = bar.add_task("fit", total=cfg.total_steps, completed=start, status="")
            while step < cfg.total_steps:
                t0 = time.perf_counter()
                rng_before = torch.get_rng_state()
                stage = cfg.stage_at(step)
                factor = lr_factor(cfg, step)
                for g, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    g["lr"] = base * factor
                if (step == cfg.identity_steps and stage != "identity" and data.mouth_codes is not None
                        and cfg.mouth_pretrain_steps > 0 and "lip_code_mse" not in last_metrics):
                    last_metrics.update(pretrain_lips(model, data, cfg, device, augment))
                lip_frozen = cfg.freeze_lip_encoder and data.mouth_codes is not None and stage != "identity"
                if lip_frozen and not encoder_frozen:  # after the pretraining, or at a resume past it
                    freeze_audio_encoder(model.tokens)
                    encoder_frozen = True
                batch = to_device(data.batch(next(index_iter).tolist()), device)
                if stage != "identity" and augment is not None:
                    batch["cond"]["audio"] = augment(batch["cond"]["audio"], cfg.model.audio_dim)
                if stage != "identity" and cfg.lip_teacher and "mouth_code" in batch:
                    batch["cond"]["mouth_drive"] = teacher_code(batch["mouth_code"], cfg.lip_teacher_noise)
                out = _forward(model, batch, stage, amp)
                weights = _stage_weights(cfg, stage)
                if lip_frozen:  # the code's MSE is still logged, but trains nothing
                    weights = dataclasses.replace(weights, mouth_code=0.0)
                losses = compute_losses(out, batch, model, weights)
                loss = losses["total"]
                if not torch.isfinite(loss):
                    good = ck.list_checkpoints(run_dir)
                    where = f"the last good checkpoint (step {good[-1][0]}) is kept" if good else "no checkpoint was written yet"
                    raise UserError(f"the loss became {loss.item()} at step {step + 1} ({stage} stage); {where}; "
                                    f"lower the learning rate (e.g. --lr {cfg.lr / 3:.2g}) and run again to resume")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                step += 1
                times.append(time.perf_counter() - t0)
                if "psnr" not in losses:
                    with torch.no_grad():
                        losses["psnr"] = psnr(out["rgb"], batch["image"]).mean()
                for k, v in losses.items():
                    window.setdefault(k, []).append(float(v.detach()))
                if step % cfg.log_every == 0 or step == cfg.total_steps:
                    rec = {"step": step, "stage": stage, "loss": float(np.mean(window.pop("total"))),
                           "psnr": float(np.mean(window.pop("psnr"))),
                           "losses": {k: float(np.mean(v)) for k, v in window.items()},
                           "lr": optimizer.param_groups[1]["lr"], "sec_per_step": float(np.mean(times[-cfg.log_every:]))}
                    window.clear()
                    records.append(rec)
                    train_records.append(rec)
                    _write_records(run_dir / METRICS, records)
                    last_metrics.update({"loss": rec["loss"], "psnr": rec["psnr"]})
                    bar.update(task, status=f"{stage} loss {rec['loss']:.4f} PSNR {rec['psnr']:.2f} dB")
                bar.update(task, completed=step)
                if cfg.val_every > 0 and step % cfg.val_every == 0 and step < cfg.total_steps:
                    res = do_validation(final=False)
                    last_metrics.update(res)
                    info(f"step {step}: held-out PSNR {res['val_psnr']:.2f} dB, SSIM {res['val_ssim']:.3f}, "
                         f"mouth PSNR {res['val_mouth_psnr']:.2f} dB")
                if step % cfg.checkpoint_every == 0 and step < cfg.total_steps:
                    save(stage)
    except KeyboardInterrupt:
        if step > start:
            # The interrupted step consumed random numbers: save the state it started from,
            # so the resumed fit repeats that step exactly.
            torch.set_rng_state(rng_before)
            save(cfg.stage_at(step - 1))
            warn(f"interrupted: checkpoint of step {step} written to '{run_dir}'; run the same command to resume")
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(run_dir, _space_needed(model, cfg)) from None
        raise

    final_stage = cfg.stage_at(step - 1)
    res = do_validation(final=True)
    last_metrics.update(res)
    save(final_stage)
    avatar_path = ck.save_avatar(run_dir, model, cfg.model, cfg_dict, step, last_metrics, str(dataset_dir.resolve()))
    plot_curves(run_dir / CURVES, train_records, val_records)
    if run_dir != final_dir:  # replace the earlier run only now that the new one is complete
        commit_staged(final_dir, run_dir, "run", RUN_ENTRIES)
        avatar_path = final_dir / ck.AVATAR
    wall = time.perf_counter() - t_start
    sec = float(np.median(times)) if times else math.nan
    info(f"fit done: {step} steps in {wall / 60:.1f} min ({sec:.3f} s/step); held-out PSNR {res['val_psnr']:.2f} dB, "
         f"SSIM {res['val_ssim']:.3f}, mouth PSNR {res['val_mouth_psnr']:.2f} dB over {res['val_frames']} frames")
    return FitResult(final_dir, step, start, wall,
                     {"psnr": res["val_psnr"], "ssim": res["val_ssim"], "mouth_psnr": res["val_mouth_psnr"],
                      "frames": res["val_frames"]}, sec, avatar_path)
