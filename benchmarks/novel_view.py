"""Novel-view accuracy against synthetic ground truth (issue 3).

Pipeline: a small synthetic clip (:mod:`talk3d.synthetic`) -> ``talk3d_prep.pipeline.run_prep``
-> a short ``talk3d.fit.trainer.fit`` -> for held-out frames (the dataset's validation split,
never trained on), the avatar is rendered at the frame's tracked camera orbited by ``yaw``
degrees about prep's head centre (exactly what ``talk3d render --yaw`` does) and compared
with the synthetic scene rendered from its own camera orbited by ``yaw`` about the true head
centre.

Alignment: the dataset frames are a square crop of the synthetic video (``crop_box`` in the
manifest) resized to the dataset size. The ground truth is rendered straight into that crop
by giving the synthetic scene the crop's intrinsics (``fx' = fx W / side``,
``cx' = (cx W - x0) / side``), so truth and render share pixels. The check
``gt_alignment`` compares the yaw-0 truth rendered this way with the dataset's own frames.
Nothing else is aligned: prep's canonical frame (its rotation, head centre, focal 3.0 and
distance) is used as prep made it, so any error of prep's canonical frame is part of the
measured novel-view error.

Compared images (each against the truth at ``yaw``):

* ``render``: the avatar at the orbited camera (the method under test);
* ``no_view_change``: the avatar's yaw-0 render of the same frame (what an avatar without
  any view control would give);
* ``flat``: the avatar's yaw-0 foreground (premultiplied colour + alpha) treated as a flat
  card through prep's head centre, fronto-parallel to the yaw-0 camera, re-projected into
  the orbited camera and composited over the avatar's background plate (a 2D/billboard
  avatar: right position, right background, no depth).

Reference (``frontal``): the avatar at the frame's own tracked pose against the truth at yaw
0, the same metrics. ``view_loss_db[yaw]`` is its head PSNR minus the render's at ``yaw``: what
the view change itself costs, apart from how sharp the avatar is in the first place.

Metrics: PSNR/SSIM over the full frame, PSNR over the person (truth label > 0 or avatar
alpha > 0.5 in either image) and PSNR/SSIM over the bounding box of the truth's head.

    OMP_NUM_THREADS=1 python benchmarks/novel_view.py --work /tmp/nv --steps 400
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class NovelViewConfig:
    """Settings of one novel-view measurement."""

    work: Path = Path("novel_view_work")
    """Folder for the clip, the dataset and the run (reused when the settings match)."""
    clip_size: int = 128
    """Side of the synthetic video frames in pixels."""
    size: int = 128
    """Dataset and avatar output side (power of 2; the neural image is a quarter of it)."""
    seconds: float = 4.0
    """Clip length in seconds (the last 10 % are the held-out frames)."""
    seed: int = 0
    """Seed of the synthetic clip and of the fit."""
    yaw_amplitude: float = 15.0
    """Largest |yaw| of the clip's head motion in degrees."""
    pitch_amplitude: float = 6.0
    """Largest |pitch| of the head motion in degrees."""
    roll_amplitude: float = 3.0
    """Largest |roll| of the head motion in degrees."""
    focal: float = 1.5
    """Synthetic camera focal length (image widths); 1.5 keeps prep's crop inside the frame."""
    yaws: tuple[float, ...] = (30.0, -30.0)
    """Held-out view yaws in degrees."""
    photometric_poses: bool = True
    """Prep refines its landmark poses photometrically (prep's default)."""
    known_focal: bool = False
    """Prep is told the clip's focal length (``--focal-35mm``) instead of assuming its default."""
    steps: int = 400
    """Fit steps (split over the stages in the quick preset's proportions unless ``identity_only``)."""
    identity_only: bool = False
    """Fit only the identity stage (no audio U-Net): faster, same geometry path."""
    triplane_res: int = 64
    """Identity triplane resolution."""
    samples: int = 16
    """Coarse and importance samples per ray (each)."""
    eval_frames: int = 6
    """Held-out frames evaluated (spread over the validation split)."""
    fit_overrides: tuple[str, ...] = ()
    """Extra ``key=value`` FitConfig overrides (as ``talk3d fit --set``)."""
    strip: Path | None = None
    """Write a PNG strip (truth | render | yaw-0 render | flat) of two frames here."""
    timings: dict[str, float] = field(default_factory=dict)
    """Filled with seconds per stage."""


def _fit_config(cfg: NovelViewConfig) -> Any:
    from talk3d.fit.config import apply_override, preset, set_size

    fc = preset("quick")
    set_size(fc, cfg.size)
    fc.model.triplane_res = cfg.triplane_res
    fc.model.coarse_samples = fc.model.importance_samples = cfg.samples
    if cfg.identity_only:
        fc.identity_steps, fc.audio_steps, fc.refine_steps = cfg.steps, 0, 0
    else:
        fc.set_total_steps(cfg.steps)
    fc.warmup_steps = min(fc.warmup_steps, max(1, cfg.steps // 10))
    fc.val_every = 0
    fc.checkpoint_every = cfg.steps
    fc.keep_checkpoints = 1
    fc.log_every = max(1, cfg.steps // 10)
    fc.val_frames = 2
    fc.final_val_frames = 4
    fc.device = "cpu"
    fc.threads = torch.get_num_threads()
    fc.seed = cfg.seed
    for item in cfg.fit_overrides:
        apply_override(fc, item)
    return fc


def build(cfg: NovelViewConfig) -> tuple[Any, Path, Path]:
    """Synthetic clip, dataset and fitted run (each reused when already complete).

    Returns:
        ``(clip, dataset_dir, run_dir)``.
    """
    from talk3d.dataset import prepared_with
    from talk3d.fit.trainer import fit
    from talk3d.synthetic import SyntheticConfig, make_clip
    from talk3d_prep.pipeline import PrepConfig, run_prep

    work = Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    scfg = SyntheticConfig(seconds=cfg.seconds, size=cfg.clip_size, seed=cfg.seed, yaw_amplitude=cfg.yaw_amplitude,
                           pitch_amplitude=cfg.pitch_amplitude, roll_amplitude=cfg.roll_amplitude, extra_yaws=(),
                           focal=cfg.focal, write_masks=False)
    clip = make_clip(work / "clip", scfg, replace_stale=True)
    cfg.timings["clip"] = time.perf_counter() - t
    t = time.perf_counter()
    data = work / "data"
    prep_cfg = PrepConfig(size=cfg.size, photometric_poses=cfg.photometric_poses,
                          focal_35mm=scfg.focal_35mm if cfg.known_focal else None)
    if not prepared_with(data, prep_cfg.settings()):
        run_prep(clip.video, data, prep_cfg, force=data.exists())
    cfg.timings["prep"] = time.perf_counter() - t
    t = time.perf_counter()
    run = work / "run"
    fc = _fit_config(cfg)
    stamp = run / "novel_view_settings.json"
    settings = {"fit": fc.to_dict(), "clip": scfg.to_json(), "prep": prep_cfg.settings()}
    if not ((run / "avatar.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings):
        fit(data, run, fc, force=run.exists())
        stamp.write_text(json.dumps(settings, sort_keys=True))
    cfg.timings["fit"] = time.perf_counter() - t
    return clip, data, run


def crop_intrinsics(k: np.ndarray, source_size: list[int], crop_box: list[float]) -> np.ndarray:
    """Normalised intrinsics ``(3, 3)`` of a square crop ``[x0, y0, side]`` of a ``[W, H]`` image."""
    w, h = float(source_size[0]), float(source_size[1])
    x0, y0, side = (float(v) for v in crop_box)
    out = np.array(k, dtype=np.float64).copy()
    out[0, 0], out[1, 1] = k[0, 0] * w / side, k[1, 1] * h / side
    out[0, 2], out[1, 2] = (k[0, 2] * w - x0) / side, (k[1, 2] * h - y0) / side
    return out.astype(np.float32)


def flat_card(fg: torch.Tensor, alpha: torch.Tensor, background: torch.Tensor, src: torch.Tensor,
              dst: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Billboard baseline: the foreground as a plane through the world origin, fronto-parallel to
    ``src``, seen from ``dst``.

    Args:
        fg: ``(3, H, W)`` premultiplied foreground seen from ``src``; alpha ``(1, H, W)``.
        background: ``(3, H, W)`` plate composited behind the card.
        src, dst: ``(4, 4)`` cam2world; k: ``(3, 3)`` normalised intrinsics.
    Returns:
        ``(3, H, W)`` image.
    """
    from talk3d.camera import generate_rays, project

    h, w = fg.shape[-2:]
    o, d = generate_rays(dst[None], k, h, w)
    n = src[:3, 2]  # source optical axis in world space (the card's normal)
    t = -(o @ n) / (d @ n).clamp_min(1e-6)
    pts = o + t[..., None] * d
    uv, _ = project(pts, src[None], k, w, h)
    grid = torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / h * 2 - 1], -1).reshape(1, h, w, 2)
    warped = F.grid_sample(torch.cat([fg, alpha])[None], grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)[0]
    return (warped[:3] + (1 - warped[3:]) * background).clamp(0, 1)


def _box(mask: np.ndarray, pad: int = 4) -> tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (slice(max(0, ys.min() - pad), min(h, ys.max() + 1 + pad)),
            slice(max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)))


def _metrics(pred: torch.Tensor, truth: torch.Tensor, person: torch.Tensor, head: tuple[slice, slice]) -> dict:
    from talk3d.image import masked_psnr, psnr, ssim

    hp, ht = pred[:, head[0], head[1]], truth[:, head[0], head[1]]
    return {"psnr": float(psnr(pred, truth)[0]), "ssim": float(ssim(pred, truth)[0]),
            "person_psnr": float(masked_psnr(pred, truth, person)[0]), "head_psnr": float(psnr(hp, ht)[0]),
            "head_ssim": float(ssim(hp, ht)[0])}


@torch.no_grad()
def evaluate(cfg: NovelViewConfig, clip: Any, data: Path, run_dir: Path) -> dict[str, Any]:
    """Render held-out frames at the novel yaws and compare (see the module docstring).

    Returns:
        JSON-able dict: ``per_yaw[yaw][method]`` mean metrics, ``frontal`` (the same metrics of the
        avatar at each frame's own pose against the yaw-0 truth), ``view_loss_db[yaw]`` (frontal
        minus render head PSNR), ``frames`` and ``gt_alignment_psnr``.
    """
    from talk3d.camera import orbit
    from talk3d.dataset import TalkingHeadDataset
    from talk3d.fit.checkpoint import load_run
    from talk3d.image import psnr
    from talk3d.model.drive import conditioning_for
    from talk3d.synthetic.clip import SyntheticScene

    t0 = time.perf_counter()
    run = load_run(run_dir, "cpu")
    ds = TalkingHeadDataset(data)
    m = run.manifest
    if m.num_frames != clip.num_frames:
        raise RuntimeError(f"prep made {m.num_frames} frames of a {clip.num_frames}-frame clip: indices differ")
    val = np.asarray(m.val_frames)
    idx = val[np.unique(np.linspace(0, val.size - 1, min(cfg.eval_frames, val.size)).round().astype(int))]
    k_crop = crop_intrinsics(clip.intrinsics, m.source_size, [*m.crop_origin(), m.crop_box[2]])
    scene = SyntheticScene(clip.config)
    scene.truth = dataclasses.replace(scene.truth, intrinsics=k_crop)
    poses = torch.as_tensor(run.poses)
    k = torch.as_tensor(np.asarray(m.intrinsics, dtype=np.float32))
    cond = conditioning_for(run.model_config, run.audio_feats, m.audio_feature_rate, m.fps, run.blink, poses, idx)
    av = run.avatar
    size = run.model_config.out_res

    def to_t(img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0

    cam0 = poses[torch.from_numpy(idx)]
    base = av(cam0, k.expand(len(idx), 3, 3), cond, out_size=size)
    align, frontal = [], []
    for j, i in enumerate(idx):
        gt0 = scene.render(int(i), size=size)
        align.append(float(psnr(to_t(gt0.rgb), to_t(ds.frame(int(i))))[0]))
        person0 = torch.from_numpy(gt0.mask > 0) | (base["alpha_hr"][j, 0] > 0.5)
        frontal.append(_metrics(base["rgb"][j], to_t(gt0.rgb), person0, _box(gt0.mask == 2)))
    reference = {key: float(np.mean([r[key] for r in frontal])) for key in frontal[0]}
    per_yaw: dict[str, Any] = {}
    strip_rows = []
    for yaw in cfg.yaws:
        cams = orbit(cam0, yaw)
        out = av(cams, k.expand(len(idx), 3, 3), cond, out_size=size)
        rows: dict[str, list[dict]] = {"render": [], "no_view_change": [], "flat": []}
        for j, i in enumerate(idx):
            gt = scene.render(int(i), yaw=yaw, size=size)
            truth = to_t(gt.rgb)
            flat = flat_card(base["rgb_fg"][j], base["alpha_hr"][j], av.background, cam0[j], cams[j], k)
            person = torch.from_numpy(gt.mask > 0) | (out["alpha_hr"][j, 0] > 0.5) | (base["alpha_hr"][j, 0] > 0.5)
            head = _box(gt.mask == 2)
            for name, img in (("render", out["rgb"][j]), ("no_view_change", base["rgb"][j]), ("flat", flat)):
                rows[name].append(_metrics(img, truth, person, head))
            if j in (0, len(idx) - 1):
                strip_rows.append(torch.cat([truth, out["rgb"][j], base["rgb"][j], flat], -1))
        per_yaw[f"{yaw:g}"] = {name: {key: float(np.mean([r[key] for r in lst])) for key in lst[0]}
                               for name, lst in rows.items()}
        per_yaw[f"{yaw:g}"]["per_frame_render_head_psnr"] = [r["head_psnr"] for r in rows["render"]]
    if cfg.strip is not None and strip_rows:
        import imageio.v3 as iio

        from talk3d.io import atomic_path

        img = (torch.cat(strip_rows, -2).permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        with atomic_path(cfg.strip) as tmp:
            iio.imwrite(tmp, img, extension=".png")
    cfg.timings["eval"] = time.perf_counter() - t0
    view_loss = {yaw: reference["head_psnr"] - r["render"]["head_psnr"] for yaw, r in per_yaw.items()}
    return {"frames": [int(i) for i in idx], "gt_alignment_psnr": align, "frontal": reference,
            "view_loss_db": view_loss, "per_yaw": per_yaw,
            "fit_step": run.step, "fit_metrics": run.metrics}


def measure(cfg: NovelViewConfig) -> dict[str, Any]:
    """Build (or reuse) clip, dataset and run, then evaluate; adds settings and timings."""
    clip, data, run = build(cfg)
    res = evaluate(cfg, clip, data, run)
    settings = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "timings"}
    res["settings"] = json.loads(json.dumps(settings, default=str))
    res["timings"] = dict(cfg.timings)
    return res


def _table(res: dict[str, Any]) -> str:
    lines = [f"{'yaw':>5} {'method':<15} {'PSNR':>6} {'SSIM':>6} {'person':>7} {'headPSNR':>9} {'headSSIM':>9}"]
    for yaw, methods in res["per_yaw"].items():
        for name in ("render", "no_view_change", "flat"):
            r = methods[name]
            lines.append(f"{yaw:>5} {name:<15} {r['psnr']:6.2f} {r['ssim']:6.3f} {r['person_psnr']:7.2f} "
                         f"{r['head_psnr']:9.2f} {r['head_ssim']:9.3f}")
    ref = res["frontal"]
    lines.append(f"{0:>5} {'frontal ref':<15} {ref['psnr']:6.2f} {ref['ssim']:6.3f} {ref['person_psnr']:7.2f} "
                 f"{ref['head_psnr']:9.2f} {ref['head_ssim']:9.3f}")
    lines.append("head PSNR lost to the view change: " + ", ".join(
        f"{yaw} deg {loss:.2f} dB" for yaw, loss in res["view_loss_db"].items()))
    lines.append(f"frames {res['frames']}; yaw-0 truth vs dataset frame PSNR "
                 f"{np.mean(res['gt_alignment_psnr']):.2f} dB (alignment check)")
    lines.append("timings " + ", ".join(f"{k} {v:.1f} s" for k, v in res["timings"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("novel_view_work"), help="work folder (clip, dataset, run)")
    ap.add_argument("--clip-size", type=int, default=160, help="synthetic video side in pixels")
    ap.add_argument("--size", type=int, default=128, help="dataset/avatar side (power of 2)")
    ap.add_argument("--seconds", type=float, default=5.0, help="clip length in seconds")
    ap.add_argument("--steps", type=int, default=400, help="fit steps")
    ap.add_argument("--identity-only", action="store_true", help="fit only the identity stage")
    ap.add_argument("--frames", type=int, default=8, help="held-out frames evaluated")
    ap.add_argument("--seed", type=int, default=0, help="clip and fit seed")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="FitConfig override KEY=VALUE")
    ap.add_argument("--landmark-poses", action="store_true", help="prep without photometric pose refinement")
    ap.add_argument("--known-focal", action="store_true", help="give prep the clip's focal length")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--strip", type=Path, default=None, help="PNG strip: truth | render | yaw-0 | flat")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = NovelViewConfig(work=args.work, clip_size=args.clip_size, size=args.size, seconds=args.seconds,
                          steps=args.steps, identity_only=args.identity_only, eval_frames=args.frames,
                          seed=args.seed, fit_overrides=tuple(args.overrides), strip=args.strip,
                          photometric_poses=not args.landmark_poses, known_focal=args.known_focal)
    res = measure(cfg)
    print(_table(res))
    if args.json is not None:
        from talk3d.io import write_json

        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
