"""`talk3d demo`: the whole chain on the built-in synthetic sample.

sample (``talk3d.synthetic``) -> prep -> fit (quick preset, shortened) -> render an orbit with
the sample's audio. Finished stages are reused when the demo runs again (the sample clip by
its config hash, prep and fit when their outputs are complete and were made from the same
sample); ``force`` redoes everything. Figures go to ``WORKDIR/demo.json``.

The stage modules are imported lazily, so a missing stage stops the demo with a one-line
message naming it.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talk3d.console import info, warn
from talk3d.dataset import prepared_with
from talk3d.errors import UserError
from talk3d.io import read_json, write_json

DEFAULT_WORKDIR = Path("~/.cache/talk3d/sample")
SUMMARY = "demo.json"


@dataclass
class DemoConfig:
    """Settings of ``talk3d demo``."""

    workdir: Path = DEFAULT_WORKDIR
    """Folder for the sample clip, dataset, run and orbit video (a cache; reused)."""
    seconds: float = 16.0
    """Length of the synthetic sample clip in seconds."""
    size: int = 256
    """Frame size of the sample and of the prepared dataset."""
    seed: int = 0
    """Seed of the sample clip."""
    fit_preset: str = "quick"
    """Fit preset."""
    fit_steps: int | None = 400
    """Total fit steps (scaled over the preset's stages): 400 keeps the whole demo near 5 minutes
    on 2 CPU cores (measured 3.9 min with 240 steps); None keeps the preset's length."""
    fit_overrides: dict[str, Any] = field(default_factory=dict)
    """Extra FitConfig fields to set (name -> value)."""
    orbit_range: float = 20.0
    """Yaw range (+- degrees) of the rendered orbit, about the mean head pose (the sample's head
    turns about +-20 degrees, so larger orbits extrapolate)."""
    device: str = "auto"
    """Torch device for fit and render: 'auto', 'cpu', 'cuda', 'cuda:N'."""


@dataclass
class DemoResult:
    """Where the demo's outputs are and its key figures."""

    workdir: Path
    sample_dir: Path
    dataset_dir: Path
    run_dir: Path
    video: Path
    figures: dict[str, float]
    """``tracking_rate``, ``fit_psnr``, ``render_fps`` and stage wall times in seconds."""


def _import(stage: str, module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"the demo cannot run the {stage} stage: {module} is not available ({exc}); "
                        f"update talk3d or run the stages one by one") from None


def _stage_attr(stage: str, module: str, name: str) -> Any:
    mod = _import(stage, module)
    if not hasattr(mod, name):
        raise UserError(f"the demo cannot run the {stage} stage: {module}.{name} is missing; update talk3d")
    return getattr(mod, name)


def _set_fields(obj: Any, values: dict[str, Any], what: str) -> Any:
    """Set the dataclass fields of ``obj`` that exist; warn about the others."""
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key in names:
            setattr(obj, key, value)
        else:
            warn(f"{what} has no setting '{key}'; ignored")
    return obj


def run_prep_stage(video: Path, out_dir: Path, size: int, force: bool,
                   focal_35mm: float | None = None) -> tuple[dict[str, float], bool]:
    """Prep the sample, or reuse a finished dataset made with the same prep settings.

    ``focal_35mm`` is the sample camera's focal length (known, as from a phone's EXIF).

    Returns:
        ``{"tracking_rate", "prep_s"}`` and whether prep ran (a new dataset invalidates the fit).
    """
    t0 = time.perf_counter()
    prep_config_cls = _stage_attr("prep", "talk3d_prep.pipeline", "PrepConfig")
    cfg = _set_fields(prep_config_cls(), {"size": size, "focal_35mm": focal_35mm}, "PrepConfig")
    ran = force or not prepared_with(out_dir, cfg.settings() if hasattr(cfg, "settings") else None)
    if ran:
        run_prep = _stage_attr("prep", "talk3d_prep.pipeline", "run_prep")
        run_prep(video, out_dir, cfg, force=force or out_dir.exists())
    else:
        info(f"prep: reusing the dataset in {out_dir}")
    valid_path = out_dir / "landmark_valid.npy"
    rate = float(np.load(valid_path, allow_pickle=False).mean()) if valid_path.is_file() else math.nan
    return {"tracking_rate": rate, "prep_s": time.perf_counter() - t0}, ran


def run_fit_stage(dataset_dir: Path, run_dir: Path, config: DemoConfig, force: bool) -> dict[str, float]:
    """Fit the avatar (or reuse a finished run); returns ``fit_psnr``, ``fit_s``, ``fit_steps``."""
    t0 = time.perf_counter()
    if not force and (run_dir / "avatar.safetensors").is_file():
        info(f"fit: reusing the run in {run_dir}")
        return {"fit_s": time.perf_counter() - t0}
    preset = _stage_attr("fit", "talk3d.fit.config", "preset")
    fit = _stage_attr("fit", "talk3d.fit.trainer", "fit")
    cfg = preset(config.fit_preset)
    if config.fit_steps is not None and hasattr(cfg, "set_total_steps"):
        cfg.set_total_steps(int(config.fit_steps))
    _set_fields(cfg, {"device": config.device, **config.fit_overrides}, "FitConfig")
    result = fit(dataset_dir, run_dir, cfg, force=force)
    val = getattr(result, "val", {}) or {}
    return {"fit_psnr": float(val.get("psnr", math.nan)), "fit_s": time.perf_counter() - t0,
            "fit_steps": float(getattr(result, "steps", math.nan))}


def run_render_stage(run_dir: Path, audio: Path, out_path: Path, config: DemoConfig) -> dict[str, float]:
    """Render an orbit saying the sample audio; returns ``render_fps``, ``render_s``.

    The orbit video belongs to the demo's work folder and is rewritten on every run.
    """
    t0 = time.perf_counter()
    render_config_cls = _stage_attr("render", "talk3d.render.config", "RenderConfig")
    render = _stage_attr("render", "talk3d.render.driver", "render")
    # the sample's own (synthetic) audio: the audio head learned it; the phonetic prior is for speech
    cfg = _set_fields(render_config_cls(), {"orbit": True, "orbit_range": config.orbit_range,
                                            "pose": "fixed", "device": config.device, "lip_drive": "audio"},
                      "RenderConfig")
    result = render(run_dir, audio, out_path, cfg, force=True)
    return {"render_fps": float(getattr(result, "render_fps", math.nan)), "render_s": time.perf_counter() - t0}


def run_demo(config: DemoConfig | None = None, force: bool = False) -> DemoResult:
    """Generate (or reuse) the sample, then prep -> fit -> render an orbit.

    Raises:
        UserError: a stage is unavailable or fails (the message names it).
    """
    from talk3d.synthetic import SyntheticConfig, make_clip

    config = config or DemoConfig()
    work = Path(os.path.expanduser(config.workdir))
    work.mkdir(parents=True, exist_ok=True)
    sample_dir, data_dir, run_dir = work / "sample", work / "data", work / "run"
    video_out = work / "orbit.mp4"
    summary_path = work / SUMMARY
    previous = read_json(summary_path) if summary_path.is_file() else {}

    t0 = time.perf_counter()
    info("[bold]1/4 sample[/bold]: synthetic talking head with ground truth")
    sample_cfg = SyntheticConfig(seconds=config.seconds, size=config.size, seed=config.seed)
    clip = make_clip(sample_dir, sample_cfg, force=force, replace_stale=True)
    figures: dict[str, float] = {"sample_s": time.perf_counter() - t0}
    # a new sample invalidates the downstream stages
    stale = force or previous.get("sample_hash") != sample_cfg.digest()
    prev_figs = {} if stale else dict(previous.get("figures", {}))

    info("[bold]2/4 prep[/bold]: track the face, estimate poses, masks, audio features")
    prep_figs, prepped = run_prep_stage(clip.video, data_dir, config.size, force=stale,
                                        focal_35mm=sample_cfg.focal_35mm)
    figures.update(prep_figs)
    info(f"prep: {figures['tracking_rate']:.1%} of frames tracked")

    info("[bold]3/4 fit[/bold]: identity triplane, audio deltaplanes, mouth refinement")
    fit_figs = run_fit_stage(data_dir, run_dir, config, force=stale or prepped)
    figures.update({k: prev_figs[k] for k in ("fit_psnr", "fit_steps") if k in prev_figs})
    figures.update(fit_figs)

    info("[bold]4/4 render[/bold]: orbit the avatar while it says the sample audio")
    figures.update(run_render_stage(run_dir, clip.audio, video_out, config))
    figures["total_s"] = time.perf_counter() - t0

    write_json(summary_path, {"sample_hash": sample_cfg.digest(), "figures": figures,
                              "config": {**dataclasses.asdict(config), "workdir": str(work)}})
    return DemoResult(workdir=work, sample_dir=sample_dir, dataset_dir=data_dir, run_dir=run_dir,
                      video=video_out, figures=figures)


def describe(result: DemoResult) -> list[str]:
    """Human-readable lines: where the outputs are and the key figures."""
    f = result.figures

    def fmt(key: str, spec: str) -> str:
        v = f.get(key, math.nan)
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    return [
        f"sample clip (ground truth): {result.sample_dir}",
        f"dataset:                    {result.dataset_dir}",
        f"avatar run:                 {result.run_dir}",
        f"orbit video:                {result.video}",
        f"prep tracking rate {fmt('tracking_rate', '.1%')}, fit PSNR {fmt('fit_psnr', '.2f')} dB, "
        f"render {fmt('render_fps', '.1f')} fps, total {fmt('total_s', '.0f')} s",
    ]
