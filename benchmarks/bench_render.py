"""Render speed: frames/s at 256^2 and 512^2, with the time split U-Net / volume rendering / SR.

By default uses randomly initialised avatars of the two shipped sizes (``ModelConfig.quick()``:
64^2 neural -> 256^2, 24+24 samples; ``ModelConfig.full()``: 128^2 neural -> 512^2, 48+48
samples). Untrained density never lets the renderer skip empty rays, so ``--run RUN_DIR``
times a fitted avatar instead (its own cameras and audio features): that is the speed a user
sees. ``--samples C,F`` overrides the coarse/importance samples at render time.
Runs on CPU and, when present, CUDA.

    python benchmarks/bench_render.py [--run RUN_DIR] [--frames 8] [--batch 1] [--threads 2] [--out DIR]

Writes ``bench_render.json`` and ``bench_render.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _split_times(avatar, cfg, clip, poses: torch.Tensor, k: torch.Tensor, n_frames: int, batch: int,
                 frame_offset: int, dev: torch.device) -> tuple[dict[str, float], int]:
    """Seconds in the U-Net, the volume rendering and the super-resolution (and their sum) over
    ``n_frames`` frames, after one warm-up batch; and the frames timed."""
    from talk3d.camera import generate_rays
    from talk3d.image import resize

    t = {"unet": 0.0, "volume": 0.0, "sr": 0.0, "total": 0.0}
    done = 0
    for rep in range(2):  # first pass warms up (allocations, kernels); the second is timed
        done = 0
        t = dict.fromkeys(t, 0.0)
        for b0 in range(0, n_frames, batch):
            idx = np.arange(b0, min(b0 + batch, n_frames))
            gidx = idx + frame_offset
            cond = {n: v.to(dev) for n, v in clip.conditioning(gidx).items()}
            cams = poses[gidx].to(dev)
            _sync(dev)
            t0 = time.perf_counter()
            planes, _ = avatar.planes(cond, 1.0)
            _sync(dev)
            t1 = time.perf_counter()
            h = cfg.neural_res
            o, d = generate_rays(cams, k, h, h)
            res = avatar.render_rays(planes, o, d, jitter=False)
            feats_img = res["features"].transpose(1, 2).reshape(len(idx), -1, h, h)
            alpha = res["alpha"].reshape(len(idx), 1, h, h)
            _sync(dev)
            t2 = time.perf_counter()
            with avatar.inference_convs(dev):
                rgb_fg, alpha_hr = avatar.superres(feats_img, alpha)
            rgb = rgb_fg + (1 - alpha_hr) * resize(avatar.background[None], cfg.out_res)
            _sync(dev)
            t3 = time.perf_counter()
            t["unet"] += t1 - t0
            t["volume"] += t2 - t1
            t["sr"] += t3 - t2
            t["total"] += t3 - t0
            done += len(idx)
            assert rgb.shape[-1] == cfg.out_res
            if rep == 0:
                break
    return t, done


@torch.no_grad()
def bench(cfg_name: str, dev: torch.device, frames: int, batch: int, run_dir: Path | None = None,
          samples: tuple[int, int] | None = None) -> dict:
    from talk3d.camera import frontal_cam2world, intrinsics_matrix, orbit
    from talk3d.model.avatar import Avatar
    from talk3d.model.config import ModelConfig
    from talk3d.model.drive import DrivingClip, forward_frames

    n_frames = max(frames, batch)
    if run_dir is not None:
        from talk3d.fit.checkpoint import load_run

        run = load_run(run_dir, dev)
        avatar, cfg = run.avatar, run.model_config
        cfg_name = f"run:{Path(run_dir).name}"
        start = max(0, len(run.poses) - n_frames)  # the held-out end of the clip
        poses = torch.as_tensor(np.asarray(run.poses), dtype=torch.float32)
        feats = np.asarray(run.audio_feats, dtype=np.float32)
        rate, fps = run.manifest.audio_feature_rate, run.manifest.fps
        blink = np.asarray(run.blink, np.float32)
        k = torch.as_tensor(run.manifest.intrinsics, dtype=torch.float32).to(dev)
        frame_offset = start
    else:
        cfg = ModelConfig.quick() if cfg_name == "quick" else ModelConfig.full()
        torch.manual_seed(0)
        avatar = Avatar(cfg).to(dev).eval()
        feats = np.random.default_rng(0).normal(size=(n_frames * 4 + 100, 80)).astype(np.float32)
        poses = orbit(frontal_cam2world(4.0, n_frames), torch.linspace(-10, 10, n_frames), 0.0)
        blink = np.zeros(n_frames, np.float32)
        k = intrinsics_matrix(1.6).to(dev)
        rate, fps, frame_offset = 100.0, 25.0, 0
    if samples is not None:
        cfg.coarse_samples, cfg.importance_samples = samples
    clip = DrivingClip.from_arrays(cfg, feats, rate, fps, blink, poses)
    t, done = _split_times(avatar, cfg, clip, poses, k, n_frames, batch, frame_offset, dev)
    # end-to-end forward (what `talk3d render` calls), same frames
    _sync(dev)
    t0 = time.perf_counter()
    for _ in forward_frames(avatar, clip, np.arange(n_frames) + frame_offset, None, k, batch_size=batch):
        pass
    _sync(dev)
    fwd = time.perf_counter() - t0
    return {
        "model": cfg_name, "device": str(dev), "out_res": cfg.out_res, "neural_res": cfg.neural_res,
        "samples": cfg.coarse_samples + cfg.importance_samples, "batch": batch, "frames": done,
        "fps_split_sum": done / t["total"], "fps_forward": n_frames / fwd,
        "ms_per_frame": {k2: 1000 * v / done for k2, v in t.items()},
        "share": {k2: t[k2] / t["total"] for k2 in ("unet", "volume", "sr")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8, help="frames timed per configuration")
    ap.add_argument("--batch", type=int, default=1, help="frames per forward pass")
    ap.add_argument("--sizes", default="quick,full", help="model sizes: quick (256^2), full (512^2)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for json + md")
    ap.add_argument("--run", type=Path, default=None, help="time this fitted run instead of random models")
    ap.add_argument("--samples", default=None, help="coarse,importance samples at render time, e.g. 16,16")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--devices", default=None, help="comma-separated devices (default: cpu, and cuda when present)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    samples = tuple(int(x) for x in args.samples.split(",")) if args.samples else None
    devs = ([torch.device(d) for d in args.devices.split(",")] if args.devices else
            [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []))
    rows = []
    for dev in devs:
        for name in (["run"] if args.run else args.sizes.split(",")):
            frames = args.frames if dev.type == "cpu" else max(args.frames, 32)
            r = bench(name, dev, frames, args.batch, args.run, samples)
            rows.append(r)
            print(json.dumps(r))
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_render.json").write_text(json.dumps({"env": env, "results": rows}, indent=2) + "\n")
    lines = ["# Render speed", "", f"torch {env['torch']}, {env['threads']} CPU threads, GPU: {env['gpu']}", "",
             "| device | output | neural | samples | batch | frames/s (forward) | U-Net ms | volume ms | SR ms | share U-Net/vol/SR |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ms, sh = r["ms_per_frame"], r["share"]
        lines.append(f"| {r['device']} | {r['out_res']}^2 | {r['neural_res']}^2 | {r['samples']} | {r['batch']} | "
                     f"{r['fps_forward']:.2f} | {ms['unet']:.1f} | {ms['volume']:.1f} | {ms['sr']:.1f} | "
                     f"{sh['unet']:.0%}/{sh['volume']:.0%}/{sh['sr']:.0%} |")
    (args.out / "bench_render.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
