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
    phonemes.npy, lip_prior.json         the training audio's phone rows and the avatar's
                                         calibration of the phonetic lip prior (lip-code models)
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
from talk3d.errors import CheckpointError, UserError
from talk3d.io import (
    atomic_path,
    confined,
    read_json_object,
    read_npy,
    remove_stale_temporaries,
    sha256_file,
    write_json,
)
from talk3d.phonemes import PHONES

FORMAT_VERSION = 1
CONFIG = "config.json"
AVATAR = "avatar.safetensors"
AVATAR_META = "avatar.json"
CHECKPOINTS = "checkpoints"
RUN_COPIES = ("poses.npy", "blink.npy", "audio_feats.npy")
OPTIONAL_RUN_COPIES = ("torso_offsets.npy",)
PHONEMES = "phonemes.npy"
LIP_PRIOR = "lip_prior.json"
DATASET_MANIFEST = "dataset_manifest.json"
_STEP_RE = re.compile(r"^step_(\d{7,})\.json$")


FIX_FIT = "re-run 'talk3d fit' (it resumes)"


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], kind: str) -> str:
    """Write a safetensors file atomically; return its SHA-256."""
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": kind, "format_version": str(FORMAT_VERSION)})
        digest = sha256_file(tmp)
    return digest


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
                    metrics: dict[str, Any] | None = None, keep: int = 2,
                    progress: dict[str, bool] | None = None) -> Path:
    """Write ``checkpoints/step_XXXXXXX`` atomically (tensors first, sidecar last); prune old ones.

    ``progress``: the trainer's one-off steps done so far (e.g. ``{"lip_pretraining": True}``).

    Returns:
        Path of the safetensors file.
    """
    path = checkpoint_path(run_dir, step)
    tensors = {f"model.{k}": v for k, v in _state_tensors(model).items()}
    optim, groups = _flatten_optimizer(optimizer)
    tensors.update(optim)
    tensors.update(_rng_tensors())
    digest = _save_tensors(path, tensors, "talk3d-checkpoint")
    write_json(path.with_suffix(".json"), {
        "format": "talk3d-checkpoint", "format_version": FORMAT_VERSION, "step": step, "stage": stage,
        "tensors": path.name, "sha256": digest, "config": config, "metrics": metrics or {}, "param_groups": groups,
        "progress": progress or {},
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
    """Delete all but the ``keep`` most recent complete checkpoints, and the temporaries of
    writes that a killed process never finished."""
    remove_stale_temporaries(Path(run_dir) / CHECKPOINTS, anonymous=True)
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
    progress: dict[str, bool] = field(default_factory=dict)
    """The trainer's one-off steps done before this checkpoint (``lip_pretraining``)."""

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[6:]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                rng: bool = True) -> None:
        """Load model (strict, :meth:`Avatar.complete_state`), optimiser and RNG states from this checkpoint."""
        model.load_state_dict(model.complete_state(self.model_state()), strict=True)
        if optimizer is not None:
            optimizer.load_state_dict(_unflatten_optimizer(self.tensors, self.param_groups))
        if rng:
            _restore_rng(self.tensors)


def _read_meta(path: Path, kind: str) -> dict[str, Any]:
    meta = read_json_object(path, f"{FIX_FIT} or use --force")
    if meta.get("format") != kind:
        raise CheckpointError(f"'{path}' is not a talk3d {kind.split('-')[-1]} file; point to a run folder made by 'talk3d fit'")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"'{path}' has format version {meta.get('format_version')}, this talk3d reads version {FORMAT_VERSION}: "
            f"re-run 'talk3d fit' with --force to refit"
        )
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"'{path}' has an invalid step ({step!r}); {FIX_FIT} or use --force")
    return meta


def _read_tensors(path: Path, sha256: Any = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file, checking it against the SHA-256 its sidecar recorded."""
    if not path.is_file():
        raise CheckpointError(f"'{path}' is missing; {FIX_FIT} or use --force")
    if sha256 is not None and (not isinstance(sha256, str) or sha256_file(path) != sha256):
        raise CheckpointError(f"'{path}' is damaged (its content does not match the checksum written with it): "
                              f"{FIX_FIT}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(f"'{path}' is damaged ({reason}): {FIX_FIT}") from None


def _sidecar_tensors(sidecar: Path, meta: dict[str, Any]) -> Path:
    """The tensor file a sidecar names (a plain name in the same folder, never a path elsewhere)."""
    name = meta.get("tensors", sidecar.with_suffix(".safetensors").name)
    return confined(sidecar.parent, name, f"'{sidecar}'", f"{FIX_FIT} or use --force", CheckpointError)


def load_checkpoint(sidecar: str | os.PathLike) -> Checkpoint:
    """Read one checkpoint from its ``.json`` sidecar path."""
    sidecar = Path(sidecar)
    meta = _read_meta(sidecar, "talk3d-checkpoint")
    tensors = _read_tensors(_sidecar_tensors(sidecar, meta), meta.get("sha256"))
    parts = {"config": dict, "metrics": dict, "param_groups": list, "progress": dict}
    for key, kind in parts.items():
        if not isinstance(meta.get(key, kind()), kind):
            raise CheckpointError(f"'{sidecar}' has an invalid '{key}'; {FIX_FIT} or use --force")
    metrics = meta.get("metrics", {})
    # checkpoints written before "progress" existed: the lip pretraining left its figures in the metrics
    progress = meta.get("progress", {"lip_pretraining": "lip_code_mse" in metrics})
    return Checkpoint(step=int(meta["step"]), stage=str(meta.get("stage", "")), config=meta.get("config", {}),
                      metrics=metrics, tensors=tensors, param_groups=meta.get("param_groups", []),
                      progress={str(k): bool(v) for k, v in progress.items()})


def latest_checkpoint(run_dir: str | os.PathLike) -> Checkpoint | None:
    """The most recent intact checkpoint of a run, or ``None``.

    A damaged checkpoint (checksum mismatch, unreadable sidecar) is skipped with a warning
    and the one before it is used, so a resumed fit repeats a few steps instead of failing.
    """
    problems = []
    for _, sidecar in reversed(list_checkpoints(run_dir)):
        try:
            ckpt = load_checkpoint(sidecar)
        except UserError as exc:
            problems.append(str(exc))
            continue
        for problem in problems:
            warn(f"skipping a damaged checkpoint: {problem}")
        return ckpt
    if problems:
        raise CheckpointError(f"every checkpoint of '{run_dir}' is damaged ({problems[0]}); "
                              f"start over with 'talk3d fit --force'")
    return None


def avatar_intact(run_dir: str | os.PathLike) -> bool:
    """True when the run's final avatar and its sidecar are readable and match their checksum."""
    run_dir = Path(run_dir)
    try:
        meta = _read_meta(run_dir / AVATAR_META, "talk3d-avatar")
        _read_tensors(run_dir / AVATAR, meta.get("sha256"))
    except UserError:
        return False
    return True


def save_avatar(run_dir: str | os.PathLike, model: torch.nn.Module, model_config: Any,
                fit_config: dict[str, Any], step: int, metrics: dict[str, Any], dataset_dir: str) -> Path:
    """Write the final ``avatar.safetensors`` + ``avatar.json`` atomically."""
    run_dir = Path(run_dir)
    path = run_dir / AVATAR
    digest = _save_tensors(path, _state_tensors(model), "talk3d-avatar")
    write_json(run_dir / AVATAR_META, {
        "format": "talk3d-avatar", "format_version": FORMAT_VERSION, "step": step, "sha256": digest,
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
    phonemes: np.ndarray | None
    """``(T, P)`` phone rows of the training audio (rows of ``audio_feats``), or None."""
    lip_prior: Any
    """The avatar's :class:`talk3d.model.lip_prior.LipPrior`, or None (runs fitted before it:
    the model's own audio-to-lip head drives the mouth)."""
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
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder '{run_dir}' does not exist: run 'talk3d fit DATASET -o {run_dir}' first")
    state, info = _load_weights(run_dir)
    for name in (DATASET_MANIFEST, "poses.npy", "blink.npy"):
        if not (run_dir / name).is_file():
            raise CheckpointError(f"run folder '{run_dir}' is incomplete: {name} is missing; re-run 'talk3d fit' on it")
    model_config, fit_config = _load_configs(run_dir, info["model"], info["fit"])
    avatar = _build_avatar(run_dir, model_config, state)
    avatar.to(device).eval()
    manifest = _run_manifest(run_dir)
    arrays = _run_arrays(run_dir, manifest.num_frames)
    lip_prior = read_lip_prior(run_dir, model_config.mouth_code) if model_config.mouth_code > 0 else None
    if lip_prior is not None:
        _check_phonemes(run_dir, arrays["phonemes"], arrays["audio_feats"])
    return Run(avatar=avatar, model_config=model_config, fit_config=fit_config, manifest=manifest, **arrays,
               lip_prior=lip_prior,
               dataset_dir=Path(str(info["dataset_dir"])), run_dir=run_dir, step=info["step"],
               metrics=info["metrics"], final=info["final"])


def write_lip_prior(run_dir: str | os.PathLike, prior: Any) -> None:
    """Save a :class:`talk3d.model.lip_prior.LipPrior` as ``run_dir/lip_prior.json`` (atomically)."""
    write_json(Path(run_dir) / LIP_PRIOR, prior.to_dict())


def read_lip_prior(run_dir: str | os.PathLike, code_size: int) -> Any:
    """The run's :class:`talk3d.model.lip_prior.LipPrior`, or None when the run has none (fitted
    before the prior existed)."""
    from talk3d.model.lip_prior import LipPrior

    path = Path(run_dir) / LIP_PRIOR
    if not path.is_file():
        return None
    fix = f"delete it and run 'talk3d fit DATASET -o {run_dir}' (it calibrates the prior again, without training)"
    try:
        return LipPrior.from_dict(read_json_object(path, fix), code_size)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"'{path}' is invalid ({exc}); {fix}") from None


def lip_prior_intact(run_dir: str | os.PathLike, code_size: int) -> bool:
    """Whether a run's ``lip_prior.json`` and ``phonemes.npy`` are present and readable, with one
    phone row per audio feature row."""
    run_dir = Path(run_dir)
    try:
        if read_lip_prior(run_dir, code_size) is None or not (run_dir / PHONEMES).is_file():
            return False
        feats = run_dir / "audio_feats.npy"
        _check_phonemes(run_dir, read_npy(run_dir / PHONEMES, mmap=True),
                        read_npy(feats, mmap=True) if feats.is_file() else None)
    except UserError:  # CheckpointError is one
        return False
    return True


def _check_phonemes(run_dir: Path, phonemes: np.ndarray | None, audio_feats: np.ndarray | None) -> None:
    """A run with a lip prior needs its training audio's phone rows, one per audio feature row."""
    fix = f"delete it and run 'talk3d fit DATASET -o {run_dir}' (it writes them again, without training)"
    if phonemes is None:
        raise CheckpointError(f"run folder '{run_dir}' is incomplete: {PHONEMES} is missing; {fix}")
    if audio_feats is not None and phonemes.shape[0] != audio_feats.shape[0]:
        raise CheckpointError(f"'{run_dir / PHONEMES}' has {phonemes.shape[0]} rows for {audio_feats.shape[0]} audio "
                              f"feature rows; {fix.replace('delete it', 'delete it and ' + LIP_PRIOR)}")


def _load_weights(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The avatar's weights (or, before the fit finished, the latest checkpoint's) and their record."""
    if (run_dir / AVATAR_META).is_file():
        meta = _read_meta(run_dir / AVATAR_META, "talk3d-avatar")
        state = _read_tensors(run_dir / AVATAR, meta.get("sha256"))
        if not isinstance(meta.get("metrics", {}), dict):
            raise CheckpointError(f"'{run_dir / AVATAR_META}' has invalid metrics; re-run 'talk3d fit' with --force")
        info = {"step": int(meta["step"]), "metrics": meta.get("metrics", {}), "final": True,
                "fit": meta.get("fit_config", {}), "model": meta.get("model_config"),
                "dataset_dir": meta.get("dataset_dir", "")}
        return state, info
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(
            f"'{run_dir}' holds no avatar or checkpoint (fit never got to one): run 'talk3d fit DATASET -o {run_dir}'")
    warn(f"'{run_dir}' has no final avatar; using the checkpoint of step {ckpt.step} (the fit did not finish)")
    info = {"step": ckpt.step, "metrics": ckpt.metrics, "final": False, "fit": ckpt.config,
            "model": ckpt.config.get("model", {}), "dataset_dir": ckpt.config.get("dataset_dir", "")}
    return ckpt.model_state(), info


def _load_configs(run_dir: Path, model_dict: Any, fit_dict: Any) -> tuple[Any, Any]:
    """Model and fit configs of a run, checked (types, ranges); one clear line when they are off."""
    from talk3d.fit.config import FitConfig, check_values

    try:
        if not isinstance(model_dict, dict) or not isinstance(fit_dict, dict):
            raise ValueError("model_config and fit_config must be JSON objects")
        # fills the defaults of runs saved by older versions, drops their retired settings
        fit_config = FitConfig.from_dict({**fit_dict, "model": model_dict})
        model_config = fit_config.model
        check_values(fit_config)
    except (TypeError, ValueError, UserError) as exc:
        raise CheckpointError(f"the settings saved in '{run_dir}' are invalid ({exc}); re-run 'talk3d fit' "
                              f"with --force") from None
    return model_config, fit_config


def _build_avatar(run_dir: Path, model_config: Any, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """An :class:`Avatar` holding ``state``; the shapes are compared on the meta device first, so
    settings that do not match the weights never allocate a model."""
    from talk3d.model import Avatar

    problem = None
    try:
        with torch.device("meta"):
            shell = Avatar(model_config)
            expected = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
            got = {k: tuple(v.shape) for k, v in shell.complete_state(state).items()}
        if expected != got:
            diff = sorted(set(expected.items()) ^ set(got.items()))
            problem = f"{diff[0][0]}: {len(diff)} tensors differ"
    except (RuntimeError, ValueError, AssertionError, TypeError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if problem is not None:
        raise CheckpointError(f"weights in '{run_dir}' do not fit this talk3d's model ({problem}); "
                              f"re-run 'talk3d fit' with --force")
    avatar = Avatar(model_config)
    avatar.load_state_dict(avatar.complete_state(state), strict=True)
    avatar.ensure_occupancy()
    return avatar


def load_run_manifest(run_dir: str | os.PathLike) -> Manifest:
    """The manifest of the dataset a run was fitted on (its ``dataset_manifest.json`` copy)."""
    return _run_manifest(Path(run_dir))


def _run_manifest(run_dir: Path) -> Manifest:
    path = run_dir / DATASET_MANIFEST
    try:
        return Manifest.from_dict(read_json_object(path, "re-run 'talk3d fit' on it"))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"'{path}' is invalid ({exc}); re-run 'talk3d fit' on it") from None


def _run_arrays(run_dir: Path, num_frames: int) -> dict[str, np.ndarray | None]:
    """The dataset copies in a run: poses, blink, torso offsets, audio features (shape-checked)."""
    fix = "re-run 'talk3d fit' on it (it copies them from the dataset again)"

    def load(name: str, shape: tuple[int | None, ...]) -> np.ndarray:
        arr = read_npy(run_dir / name, fix=fix, finite=True)
        if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape, strict=True)):
            raise CheckpointError(f"'{run_dir / name}' has shape {arr.shape}, expected {shape}; {fix}")
        return arr

    poses = load("poses.npy", (num_frames, 4, 4)).astype(np.float32)
    torso_path = run_dir / "torso_offsets.npy"
    feats_path = run_dir / "audio_feats.npy"
    phones_path = run_dir / PHONEMES
    return {
        "poses": poses, "blink": load("blink.npy", (num_frames,)).astype(np.float32),
        "torso_offsets": (load("torso_offsets.npy", (num_frames, 2)).astype(np.float32) if torso_path.is_file()
                          else np.zeros((num_frames, 2), np.float32)),
        "audio_feats": load("audio_feats.npy", (None, None)) if feats_path.is_file() else None,
        "phonemes": load(PHONEMES, (None, len(PHONES))).astype(np.float32) if phones_path.is_file() else None,
    }
