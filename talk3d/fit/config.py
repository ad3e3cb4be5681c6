"""Fit configuration: the :class:`FitConfig` dataclass, presets and ``key=value`` overrides.

A fit runs in three stages (:mod:`talk3d.fit.stages`; docs/fit.md):

1. ``identity``: the identity triplane, decoder and super-resolution are fitted with the
   deltaplanes off (``motion_scale = 0``), so geometry and appearance go into the triplane.
2. ``audio``: the audio-guided deltaplane U-Net is switched on and everything trains.
3. ``refine``: a mouth-focused refinement (higher mouth-region weight, lower learning rate).

The final configuration is saved as ``config.json`` in the run folder.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from talk3d.checks import ANY, check_fields, drop_retired
from talk3d.errors import UserError
from talk3d.model.config import ModelConfig

PRESETS = ("quick", "standard", "full")
# Bounds of every numeric setting; finalize() refuses values outside (e.g. --set lr_final_factor=-1).
FIT_BOUNDS = {
    "identity_steps": (0, 10**8), "audio_steps": (0, 10**8), "refine_steps": (0, 10**8), "batch_size": (1, 4096),
    "lr": (1e-12, 10), "lr_planes": (1e-12, 100), "lr_final_factor": (1e-6, 1), "refine_lr_factor": (1e-6, 10),
    "refine_mouth_factor": (0, 1000), "mouth_pretrain_steps": (0, 10**7), "lip_silence_fraction": (0, 0.9),
    "lip_teacher_noise": (0, 10), "occupancy_every": (0, 10**8), "warmup_steps": (0, 10**8), "grad_clip": (0, 1e6), "log_every": (1, 10**8),
    "val_every": (0, 10**8), "val_frames": (1, 10**6), "final_val_frames": (1, 10**6),
    "checkpoint_every": (1, 10**8), "keep_checkpoints": (1, 1000), "cache_frames": (1, 10**7),
    "mouth_margin": (0, 10), "min_frames": (1, 10**7), "seed": (0, 2**63 - 1), "threads": (0, 4096),
}
LOSS_BOUNDS = {"ssim_window": (3, 31), "face_rays": (0, 100000)}

RETIRED_FIT = dict.fromkeys(("freeze_lip_encoder", "lip_teacher", "audio_augment"), ANY)
"""Fit switches removed because every fit had them on (the stages now always freeze the lip
encoder, force the tracked lip code and augment the audio). Runs saved with them load whatever
their value: they shaped the training, not the saved avatar (:func:`talk3d.checks.drop_retired`)."""
RETIRED_LOSS = {"mouth_code": ANY}
"""The lip-code loss weight: the code is trained by the lip pretraining alone (the weight was
always zeroed after it); its error is still logged."""
RENAMED_LOSS = {"l1_lr": "l1_neural", "ssim_lr": "ssim_neural", "landmark_depth": "face_depth",
                "landmark_alpha": "face_alpha", "landmark_rays": "face_rays"}
"""Loss weights renamed: ``lr`` read as learning rate next to the learning rates; the landmark prior
became the face prior (its rays may also go through any point of the triangulated face)."""
LANDMARK_PRIOR = {"face_points": "landmarks", "face_rays": 64, "face_spread": 0.0}
"""The face prior of runs saved before the thin face prior became the default (their loss settings name
no ``face_points``): the landmark prior, so a loaded run's settings say what it was fitted with. (A fit
that resumes one trains with the settings of the command that resumes it.)"""


def _loss_weights() -> Any:
    from talk3d.model.losses import LossWeights

    return LossWeights()


@dataclass
class FitConfig:
    """Everything a fit needs besides the dataset (saved as ``config.json``)."""

    model: ModelConfig = field(default_factory=ModelConfig.quick)
    """The avatar's :class:`talk3d.model.config.ModelConfig` (architecture and output resolution)."""
    loss: Any = field(default_factory=_loss_weights)
    """The :class:`talk3d.model.losses.LossWeights` used in the identity and audio stages."""
    preset: str = "quick"
    """Name of the preset this config started from (for the record)."""
    identity_steps: int = 1500
    """Steps of stage 1 (identity triplane with the deltaplanes off)."""
    audio_steps: int = 1500
    """Steps of stage 2 (audio-guided deltaplane U-Net on, everything trains)."""
    refine_steps: int = 500
    """Steps of stage 3 (mouth-focused refinement)."""
    batch_size: int = 1
    """Frames per training step."""
    lr: float = 2e-3
    """Adam learning rate of the networks (decoder, super-resolution, U-Net)."""
    lr_planes: float = 1e-2
    """Adam learning rate of the identity triplane (parameters named ``*triplane*``/``*plane*``)."""
    lr_final_factor: float = 0.1
    """Learning rates decay exponentially to this fraction of their start over the fit."""
    refine_lr_factor: float = 0.3
    """Learning-rate multiplier during the refine stage."""
    refine_mouth_factor: float = 3.0
    """Multiplier of the mouth-region loss weight during the refine stage."""
    mouth_pretrain_steps: int = 1500
    """Steps that train the audio encoder to predict the tracked lip-motion code, alone and
    without rendering, when the audio stage starts (seconds on a CPU; models with
    ``mouth_code > 0`` only; see :mod:`talk3d.fit.lipsync`)."""
    lip_silence_fraction: float = 0.1
    """Share of every lip-pretraining batch made of silent audio windows whose target is the
    mouth at rest (mean code of the 10 % most closed training frames): without them the
    pauses of other recordings opened the mouth (the Obama clip has almost no pauses)."""
    lip_teacher_noise: float = 0.1
    """Std of the noise added to the tracked lip code that drives the U-Net token and the lip
    basis in the audio and refine stages (teacher forcing, see :mod:`talk3d.fit.stages`; code
    units = 1 std)."""
    lr_batch_scaling: str = "none"
    """How the learning rates follow the frames per step (``batch_size`` x ranks of a data-parallel
    fit): ``none`` (the same rates at any batch), ``sqrt`` (times the square root of the frames
    per step) or ``linear`` (times their number). ``none`` keeps a 2-rank fit with batch 1 equal
    to a 1-process fit with batch 2."""
    occupancy_every: int = 100
    """Refresh the model's occupancy grid (``model.occupancy_res``) from the identity field every
    this many steps, and once before the avatar is saved (0: only then)."""
    warmup_steps: int = 50
    """Linear learning-rate warm-up at the start of the fit."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 disables)."""
    log_every: int = 10
    """Write a line to ``metrics.jsonl`` every this many steps."""
    val_every: int = 250
    """Validate on held-out frames and write a preview every this many steps (0: only at the end)."""
    val_frames: int = 4
    """Held-out frames used for the periodic validation (the final one uses all of them)."""
    final_val_frames: int = 64
    """Most held-out frames used by the final validation (spread over the split)."""
    checkpoint_every: int = 250
    """Write a checkpoint every this many steps (and always at the end or on Ctrl-C)."""
    keep_checkpoints: int = 2
    """How many of the most recent checkpoints to keep."""
    cache_frames: int = 512
    """Most resized training frames kept in memory (bounded, independent of video length)."""
    mouth_margin: float = 0.3
    """Mouth box border as a fraction of the lip width."""
    min_frames: int = 50
    """Refuse datasets with fewer training frames than this (tests lower it)."""
    device: str = "auto"
    """Torch device: 'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:N'."""
    amp: bool = True
    """bfloat16 autocast on CUDA (ignored on CPU)."""
    seed: int = 0
    """Seed of torch and of the frame order."""
    threads: int = 0
    """CPU threads for torch (0: a fair share of the cores, re-counted while other talk3d processes
    start and end; see :mod:`talk3d.threads`). Float sums depend on the thread count, so two fits
    agree to the last bit only with the same fixed ``threads``."""

    @property
    def total_steps(self) -> int:
        return self.identity_steps + self.audio_steps + self.refine_steps

    def set_total_steps(self, steps: int) -> None:
        """Scale the three stage lengths so they add up to ``steps`` (keeping proportions)."""
        if steps < 1:
            raise UserError(f"--steps must be at least 1, got {steps}")
        total = self.total_steps
        if total <= 0:
            self.identity_steps, self.audio_steps, self.refine_steps = steps, 0, 0
            return
        ident = int(round(steps * self.identity_steps / total))
        audio = int(round(steps * self.audio_steps / total))
        ident = min(ident, steps)
        audio = min(audio, steps - ident)
        self.identity_steps, self.audio_steps, self.refine_steps = ident, audio, steps - ident - audio

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitConfig:
        """Build from :meth:`to_dict` output (the model part through :meth:`ModelConfig.from_dict`,
        which fills the defaults of configs saved by older versions)."""
        data = drop_retired({k: v for k, v in data.items() if k != "dataset_dir"}, RETIRED_FIT, "fit")
        model = data.pop("model", None)
        cfg = cls(model=ModelConfig.from_dict(model)) if model is not None else cls()
        if isinstance(data.get("loss"), dict):
            loss = {RENAMED_LOSS.get(k, k): v for k, v in data["loss"].items()}
            if "face_points" not in loss:
                loss = {**LANDMARK_PRIOR, **loss}
            data["loss"] = drop_retired(loss, RETIRED_LOSS, "loss")
        update_dataclass(cfg, data)
        return cfg


def update_dataclass(obj: Any, data: dict[str, Any]) -> None:
    """Recursively set the fields of dataclass ``obj`` from a (JSON) dict; unknown keys raise."""
    fields = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        if key not in fields:
            raise UserError(f"unknown setting '{key}' for {type(obj).__name__}; known: {', '.join(sorted(fields))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"setting '{key}' must be a JSON object, got {value!r}")
            update_dataclass(current, value)
        elif isinstance(current, tuple) and isinstance(value, list):
            setattr(obj, key, tuple(value))
        else:
            setattr(obj, key, value)


def _parse_value(text: str, current: Any) -> Any:
    """Parse ``text`` to the type of ``current`` (JSON for lists/tuples, bools as true/false)."""
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    value = json.loads(text)
    if isinstance(current, tuple):
        return tuple(value)
    return value


def apply_override(cfg: FitConfig, assignment: str) -> None:
    """Apply one ``key=value`` override; dotted keys reach nested configs (``model.out_res=128``).

    Raises:
        UserError: unknown key or a value of the wrong type.
    """
    if "=" not in assignment:
        raise UserError(f"--set expects KEY=VALUE, got '{assignment}' (e.g. --set model.out_res=128)")
    key, text = assignment.split("=", 1)
    parts = key.strip().split(".")
    target: Any = cfg
    for part in parts[:-1]:
        if not dataclasses.is_dataclass(target) or not hasattr(target, part):
            raise UserError(f"unknown setting '{key}' (see config.json of a run for the names)")
        target = getattr(target, part)
    name = parts[-1]
    names = {f.name for f in dataclasses.fields(target)} if dataclasses.is_dataclass(target) else set()
    if parts[:-1] == ["loss"] and name in RENAMED_LOSS:
        raise UserError(f"'{key}' was renamed: use --set loss.{RENAMED_LOSS[name]}=...")
    if name not in names:
        raise UserError(f"unknown setting '{key}'; known at that level: {', '.join(sorted(names))}")
    current = getattr(target, name)
    if dataclasses.is_dataclass(current):
        raise UserError(f"'{key}' is a group of settings: set one of its fields, e.g. --set {key}."
                        f"{dataclasses.fields(current)[0].name}=...")
    try:
        value = _parse_value(text, current)
    except (ValueError, json.JSONDecodeError) as exc:
        raise UserError(f"bad value for '{key}': {text!r} ({exc})") from None
    setattr(target, name, value)


def check_values(cfg: FitConfig) -> None:
    """Raise ``ValueError`` naming the first fit or loss setting of the wrong type, NaN or out of range."""
    check_fields(cfg, FIT_BOUNDS)
    check_fields(cfg.loss, {n: LOSS_BOUNDS.get(n, (0, 1e6)) for n in cfg.loss.to_dict()}, "loss.")
    cfg.loss.__post_init__()  # the choices among names (set after construction by --set)


def finalize(cfg: FitConfig) -> FitConfig:
    """Re-validate the model config after overrides (``ModelConfig.__post_init__`` checks).

    Raises:
        UserError: inconsistent model sizes (e.g. an output/neural ratio that is not a power of 2).
    """
    try:
        cfg.model = ModelConfig.from_dict(cfg.model.to_dict())
    except (ValueError, TypeError) as exc:
        raise UserError(f"invalid model settings: {exc}") from None
    try:
        check_values(cfg)
    except ValueError as exc:
        raise UserError(f"invalid setting: {exc}; fix the --set value (see config.json of a run for the names)") from None
    if cfg.total_steps < 1:
        raise UserError("the fit needs at least one step (--steps)")
    if cfg.batch_size < 1:
        raise UserError(f"--batch must be at least 1, got {cfg.batch_size}")
    if cfg.lr <= 0 or cfg.lr_planes <= 0:
        raise UserError("learning rates must be positive")
    if cfg.lr_batch_scaling not in ("none", "sqrt", "linear"):
        raise UserError(f"lr_batch_scaling must be none, sqrt or linear, not '{cfg.lr_batch_scaling}'")
    return cfg


def match_audio_dim(cfg: FitConfig, audio_feature_dim: int) -> FitConfig:
    """``cfg`` with the model's audio input sized to a dataset's features (``audio_feature_dim``
    columns), re-validated when that changes it (the same object otherwise)."""
    if cfg.model.audio_dim == audio_feature_dim:
        return cfg
    cfg.model.audio_dim = audio_feature_dim
    return finalize(cfg)


def with_head_volume(cfg: FitConfig, volume: tuple[float, ...] | None) -> FitConfig:
    """``cfg`` with the model's head volume set to ``volume`` (measured from the dataset,
    :func:`talk3d.fit.head_volume.measure_head_volume`; None: the whole scene box), re-validated."""
    cfg.model.head_volume = None if volume is None else tuple(volume)
    return finalize(cfg)


def set_size(cfg: FitConfig, size: int) -> None:
    """Set the output resolution; the neural (volume-rendered) image is a quarter of it."""
    if size < 16 or size & (size - 1):
        raise UserError(f"--size must be a power of 2 such as 256 or 512, got {size}")
    cfg.model.out_res = size
    cfg.model.neural_res = size // 4


def preset(name: str) -> FitConfig:
    """The named preset.

    * ``quick``: 2 CPU cores, about 13 minutes; small model, 256^2 output, 64^2 neural image.
    * ``standard``: a GPU for about half an hour (or a long CPU run); 256^2 output.
    * ``full``: a GPU, 512^2 output, the full-size model (48+48 samples, 256^2 triplane).
    """
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    if name == "quick":
        # ModelConfig.quick(): 0.13 s/step (identity) and 0.20 s/step (audio) on an idle 2-core
        # CPU, so 4000 steps take ~13 min on the Obama clip; the held-out PSNR stopped rising
        # after ~1000 identity and ~750 audio steps (docs/fit.md, "Quality and speed").
        cfg = FitConfig(model=ModelConfig.quick(), preset=name)
        cfg.identity_steps, cfg.audio_steps, cfg.refine_steps = 1400, 1900, 700
        cfg.batch_size = 1
        cfg.val_every, cfg.checkpoint_every = 250, 250
    elif name == "standard":
        cfg = FitConfig(model=ModelConfig.quick(coarse_samples=48, importance_samples=48), preset=name)
        cfg.identity_steps, cfg.audio_steps, cfg.refine_steps = 6000, 10000, 4000
        cfg.batch_size = 4
        cfg.val_every, cfg.checkpoint_every = 1000, 1000
    else:
        cfg = FitConfig(model=ModelConfig.full(), preset=name)
        cfg.identity_steps, cfg.audio_steps, cfg.refine_steps = 10000, 20000, 10000
        cfg.batch_size = 4
        cfg.val_every, cfg.checkpoint_every = 2000, 2000
    return cfg


def tiny_config(steps: int = 2) -> FitConfig:
    """A seconds-long config for unit tests on tiny synthetic datasets (CPU, 32^2 output)."""
    cfg = FitConfig(model=ModelConfig.tiny(audio_dim=80), preset="tiny")
    cfg.identity_steps = max(1, steps // 2)
    cfg.audio_steps = max(0, steps - cfg.identity_steps)
    cfg.refine_steps = 0
    cfg.log_every = 1
    cfg.val_every = 0
    cfg.val_frames = 2
    cfg.final_val_frames = 2
    cfg.checkpoint_every = 1
    cfg.warmup_steps = 0
    cfg.min_frames = 1
    cfg.cache_frames = 16
    cfg.mouth_pretrain_steps = 5
    cfg.device = "cpu"
    return cfg
