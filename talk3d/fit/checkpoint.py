"""Run folders and checkpoints: safetensors tensors + JSON sidecars, never pickle.

A run folder holds::

    config.json                          the FitConfig (model + fit settings)
    checkpoints/step_0000250.safetensors model + optimiser tensors + RNG states
    checkpoints/step_0000250.json        sidecar: format version, step, stage, metrics,
                                         optimiser param groups (written last: a checkpoint
                                         without its sidecar is incomplete and ignored)
    avatar.safetensors / avatar.json     final model tensors + model config and metrics
    dataset_manifest.json, poses.npy, blink.npy, audio_feats.npy   copied from the dataset
    torso_offsets.npy                                               (and this one when it has it)
    metrics.jsonl, fit.log, previews/, curves.png

:func:`load_run` turns a run folder into a ready avatar for rendering and evaluation.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from talk3d.console import warn
from talk3d.dataset import MANIFEST, Manifest
from talk3d.errors import CheckpointError
from talk3d.io import atomic_path, read_json, read_npy, write_json

FORMAT_VERSION = 1
CONFIG = "config.json"
AVATAR = "avatar.safetensors"
AVATAR_META = "avatar.json"
CHECKPOINTS = "checkpoints"
RUN_COPIES = ("poses.npy", "blink.npy", "audio_feats.npy")
OPTIONAL_RUN_COPIES = ("torso_offsets.npy",)
DATASET_MANIFEST = "dataset_manifest.json"
_STEP_RE = re.compile(r"^step_(\d{7,})\.json$")


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """``run_dir/checkpoints/step_XXXXXXX.safetensors``."""
    return Path(run_dir) / CHECKPOINTS / f"step_{step:07d}.safetensors"


def _state_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies (no shared storage, as safetensors requires)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Optimiser state as ``optim.{param}.{key}`` tensors + JSON-able param groups."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim.{pid}.{key}"] = t.detach().to("cpu").contiguous().clone()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    fixed = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    return {"state": state, "param_groups": fixed}


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    if torch.cuda.is_available():
        states = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in states])


def save_checkpoint(run_dir: str | os.PathLike, step: int, stage: str, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, config: dict[str, Any],
                    metrics: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Write ``checkpoints/step_XXXXXXX`` atomically (tensors first, sidecar last); prune old ones.

    Returns:
        Path of the safetensors file.
    """
    path = checkpoint_path(run_dir, step)
    tensors = {f"model.{k}": v for k, v in _state_tensors(model).items()}
    optim, groups = _flatten_optimizer(optimizer)
    tensors.update(optim)
    tensors.update(_rng_tensors())
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "talk3d-checkpoint", "format_version": str(FORMAT_VERSION)})
    write_json(path.with_suffix(".json"), {
        "format": "talk3d-checkpoint", "format_version": FORMAT_VERSION, "step": step, "stage": stage,
        "tensors": path.name, "config": config, "metrics": metrics or {}, "param_groups": groups,
    })
    prune_checkpoints(run_dir, keep)
    return path


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints (sidecar and tensors present) as ``(step, sidecar path)``, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.with_suffix(".safetensors").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def prune_checkpoints(run_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` most recent complete checkpoints (and stray partial files)."""
    ckpts = list_checkpoints(run_dir)
    for _, sidecar in ckpts[:max(0, len(ckpts) - max(1, keep))]:
        sidecar.with_suffix(".safetensors").unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)


@dataclass
class Checkpoint:
    """A loaded training checkpoint."""

    step: int
    """Number of finished steps."""
    stage: str
    """Stage of the last finished step."""
    config: dict[str, Any]
    """The FitConfig (as a dict) it was written with."""
    metrics: dict[str, Any]
    """Last validation/training figures."""
    tensors: dict[str, torch.Tensor]
    """All tensors (``model.*``, ``optim.*``, ``rng.*``)."""
    param_groups: list[dict[str, Any]] = field(default_factory=list)
    """Optimiser param groups (JSON form)."""

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[6:]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                rng: bool = True) -> None:
        """Load model (strict), optimiser and RNG states from this checkpoint."""
        model.load_state_dict(self.model_state(), strict=True)
        if optimizer is not None:
            optimizer.load_state_dict(_unflatten_optimizer(self.tensors, self.param_groups))
        if rng:
            _restore_rng(self.tensors)


def _read_meta(path: Path, kind: str) -> dict[str, Any]:
    try:
        meta = read_json(path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read '{path}' ({exc}); re-run 'talk3d fit' (it resumes) or use --force") from None
    if meta.get("format") != kind:
        raise CheckpointError(f"'{path}' is not a talk3d {kind.split('-')[-1]} file; point to a run folder made by 'talk3d fit'")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"'{path}' has format version {meta.get('format_version')}, this talk3d reads version {FORMAT_VERSION}: "
            f"re-run 'talk3d fit' with --force to refit"
        )
    return meta


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"'{path}' is missing; re-run 'talk3d fit' (it resumes) or use --force")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"'{path}' is damaged ({exc}); delete it and re-run 'talk3d fit' to resume") from None


def load_checkpoint(sidecar: str | os.PathLike) -> Checkpoint:
    """Read one checkpoint from its ``.json`` sidecar path."""
    sidecar = Path(sidecar)
    meta = _read_meta(sidecar, "talk3d-checkpoint")
    tensors = _read_tensors(sidecar.with_name(meta.get("tensors", sidecar.with_suffix(".safetensors").name)))
    return Checkpoint(step=int(meta["step"]), stage=str(meta["stage"]), config=meta.get("config", {}),
                      metrics=meta.get("metrics", {}), tensors=tensors, param_groups=meta.get("param_groups", []))


def latest_checkpoint(run_dir: str | os.PathLike) -> Checkpoint | None:
    """The most recent complete checkpoint of a run, or ``None``."""
    ckpts = list_checkpoints(run_dir)
    return load_checkpoint(ckpts[-1][1]) if ckpts else None


def save_avatar(run_dir: str | os.PathLike, model: torch.nn.Module, model_config: Any,
                fit_config: dict[str, Any], step: int, metrics: dict[str, Any], dataset_dir: str) -> Path:
    """Write the final ``avatar.safetensors`` + ``avatar.json`` atomically."""
    run_dir = Path(run_dir)
    path = run_dir / AVATAR
    with atomic_path(path) as tmp:
        save_file(_state_tensors(model), str(tmp), metadata={"format": "talk3d-avatar",
                                                             "format_version": str(FORMAT_VERSION)})
    write_json(run_dir / AVATAR_META, {
        "format": "talk3d-avatar", "format_version": FORMAT_VERSION, "step": step,
        "model_config": dataclasses.asdict(model_config), "fit_config": fit_config,
        "metrics": metrics, "dataset_dir": str(dataset_dir),
    })
    return path


def copy_dataset_files(dataset_dir: str | os.PathLike, run_dir: str | os.PathLike) -> None:
    """Copy what rendering needs from the dataset into the run folder (atomically)."""
    dataset_dir, run_dir = Path(dataset_dir), Path(run_dir)
    pairs = [(MANIFEST, DATASET_MANIFEST)] + [(n, n) for n in RUN_COPIES]
    pairs += [(n, n) for n in OPTIONAL_RUN_COPIES if (dataset_dir / n).is_file()]
    for src, dst in pairs:
        with atomic_path(run_dir / dst) as tmp:
            shutil.copyfile(dataset_dir / src, tmp)


@dataclass
class Run:
    """A fitted avatar loaded from a run folder, ready to render."""

    avatar: torch.nn.Module
    """The :class:`talk3d.model.Avatar` in eval mode on the requested device."""
    model_config: Any
    """Its :class:`talk3d.model.ModelConfig`."""
    fit_config: Any
    """The :class:`talk3d.fit.config.FitConfig` it was fitted with."""
    manifest: Manifest
    """Manifest of the dataset it was fitted on (copied into the run)."""
    poses: np.ndarray
    """``(N, 4, 4)`` float32 tracked camera-to-world of the training video."""
    blink: np.ndarray
    """``(N,)`` float32 eye closure of the training video."""
    audio_feats: np.ndarray | None
    """``(T, D)`` audio features of the training video (self-driven validation), if copied."""
    torso_offsets: np.ndarray
    """``(N, 2)`` float32 tracked torso shift of the training video (zeros when not tracked)."""
    dataset_dir: Path
    """The dataset folder it was fitted on (may no longer exist)."""
    run_dir: Path
    """The run folder."""
    step: int
    """Training steps behind these weights."""
    metrics: dict[str, Any]
    """Validation figures recorded at the end of the fit (or at the checkpoint)."""
    final: bool
    """True for the final avatar, False when loaded from an intermediate checkpoint."""


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Run:
    """Load a run folder for rendering/evaluation.

    Uses ``avatar.safetensors`` when the fit finished, else the latest checkpoint (with a
    warning).

    Raises:
        CheckpointError: the folder is missing, holds no avatar or checkpoint, lacks the
            dataset copies, or was written by another format version.
    """
    from talk3d.fit.config import FitConfig, update_dataclass
    from talk3d.model import Avatar, ModelConfig

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder '{run_dir}' does not exist: run 'talk3d fit DATASET -o {run_dir}' first")
    if (run_dir / AVATAR_META).is_file():
        meta = _read_meta(run_dir / AVATAR_META, "talk3d-avatar")
        state = _read_tensors(run_dir / AVATAR)
        step, metrics, final = int(meta["step"]), meta.get("metrics", {}), True
        fit_dict, model_dict, dataset_dir = meta.get("fit_config", {}), meta["model_config"], meta.get("dataset_dir", "")
    else:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise CheckpointError(
                f"'{run_dir}' holds no avatar or checkpoint (fit never got to one): run 'talk3d fit DATASET -o {run_dir}'")
        warn(f"'{run_dir}' has no final avatar; using the checkpoint of step {ckpt.step} (the fit did not finish)")
        state, step, metrics, final = ckpt.model_state(), ckpt.step, ckpt.metrics, False
        fit_dict = ckpt.config
        model_dict, dataset_dir = fit_dict.get("model", {}), fit_dict.get("dataset_dir", "")
    for name in (DATASET_MANIFEST, "poses.npy", "blink.npy"):
        if not (run_dir / name).is_file():
            raise CheckpointError(f"run folder '{run_dir}' is incomplete: {name} is missing; re-run 'talk3d fit' on it")
    model_config = ModelConfig.from_dict(model_dict)  # fills the defaults of runs saved by older versions
    fit_config = FitConfig(model=model_config)
    update_dataclass(fit_config, {k: v for k, v in fit_dict.items() if k not in ("model", "dataset_dir")})
    avatar = Avatar(model_config)
    try:
        avatar.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in '{run_dir}' do not fit this talk3d's model ({str(exc).splitlines()[0]}); "
                              f"re-run 'talk3d fit' with --force") from None
    avatar.to(device).eval()
    feats_path = run_dir / "audio_feats.npy"
    poses = read_npy(run_dir / "poses.npy").astype(np.float32)
    torso_path = run_dir / "torso_offsets.npy"
    torso = (read_npy(torso_path).astype(np.float32) if torso_path.is_file()
             else np.zeros((poses.shape[0], 2), np.float32))
    return Run(
        avatar=avatar, model_config=model_config, fit_config=fit_config,
        manifest=Manifest.from_dict(read_json(run_dir / DATASET_MANIFEST)),
        poses=poses, blink=read_npy(run_dir / "blink.npy").astype(np.float32),
        audio_feats=read_npy(feats_path) if feats_path.is_file() else None, torso_offsets=torso,
        dataset_dir=Path(dataset_dir), run_dir=run_dir, step=step, metrics=metrics, final=final,
    )
