"""Render speed of the avatar model on this machine, split into U-Net / volume rendering / SR.

Usage::

    python benchmarks/bench_model_speed.py                 # quick size (256^2) on CPU
    python benchmarks/bench_model_speed.py --size full --device cuda --frames 50

Prints a markdown table and writes ``--out`` (JSON) when given. One frame per call
(batch 1), inference mode, after warm-up iterations.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from talk3d.camera import frontal_cam2world, generate_rays, intrinsics_matrix, orbit
from talk3d.model import Avatar, ModelConfig, conditioning_for


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["quick", "full"], default="quick", help="model size preset")
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    ap.add_argument("--frames", type=int, default=20, help="timed frames")
    ap.add_argument("--warmup", type=int, default=3, help="untimed warm-up frames")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--out", default="", help="optional JSON output path")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = ModelConfig.quick() if args.size == "quick" else ModelConfig.full()
    torch.manual_seed(0)
    av = Avatar(cfg).to(device).eval()
    with torch.no_grad():  # a non-zero deltaplane path, like a trained model
        av.unet.out.weight.normal_(std=1e-3)
    n = args.frames + args.warmup
    c2w_all = orbit(frontal_cam2world(4.5, n), torch.linspace(-20, 20, n), 0.0)
    cond_all = conditioning_for(cfg, torch.randn(n * 4 + 100, cfg.audio_dim), 100.0, 25.0, torch.rand(n),
                                c2w_all, torch.arange(n))
    k = intrinsics_matrix(1.8)[None].to(device)
    times = {"unet": 0.0, "volume": 0.0, "superres": 0.0}
    cpu = dict(times)
    with torch.inference_mode():
        for i in range(n):
            cond = {key: v[i:i + 1].to(device) for key, v in cond_all.items()}
            c2w = c2w_all[i:i + 1].to(device)
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            planes, _ = av.planes(cond)
            _sync(device)
            t1, c1 = time.perf_counter(), time.process_time()
            o, d = generate_rays(c2w, k, cfg.neural_res, cfg.neural_res)
            res = av.render_rays(planes, o, d)
            h = cfg.neural_res
            feats = res["features"].transpose(1, 2).reshape(1, -1, h, h)
            alpha = res["alpha"].reshape(1, 1, h, h)
            _sync(device)
            t2, c2 = time.perf_counter(), time.process_time()
            rgb_fg, alpha_hr = av.superres(feats, alpha)
            rgb = rgb_fg + (1 - alpha_hr) * av.background[None]
            _sync(device)
            t3, c3 = time.perf_counter(), time.process_time()
            if i >= args.warmup:
                times["unet"] += t1 - t0
                times["volume"] += t2 - t1
                times["superres"] += t3 - t2
                for key, (a, b) in zip(cpu, ((c0, c1), (c1, c2), (c2, c3)), strict=True):
                    cpu[key] += b - a
        full = av(c2w, k, cond)["rgb"]  # the full forward gives the same frame
        assert torch.allclose(full, rgb.clamp(0, 1), atol=1e-4)
    per = {key: 1000.0 * v / args.frames for key, v in times.items()}
    per_cpu = {key: 1000.0 * v / args.frames for key, v in cpu.items()}
    total = sum(per.values())
    total_cpu = sum(per_cpu.values())
    result = {"size": args.size, "device": str(device), "threads": torch.get_num_threads(),
              "out_res": cfg.out_res, "neural_res": cfg.neural_res,
              "samples": cfg.coarse_samples + cfg.importance_samples, "ms_per_frame": per,
              "cpu_ms_per_frame": per_cpu, "total_ms": total, "total_cpu_ms": total_cpu, "fps": 1000.0 / total,
              "load_avg_1min": os.getloadavg()[0]}
    print("| part | wall ms/frame | process CPU ms/frame |\n| --- | --- | --- |")
    for key, v in per.items():
        print(f"| {key} | {v:.1f} | {per_cpu[key]:.1f} |")
    print(f"| **total** | **{total:.1f}** ({1000.0 / total:.1f} fps) | {total_cpu:.1f} |")
    print(f"{cfg.out_res}^2 output, {device}, {torch.get_num_threads()} threads, "
          f"1-min load average {os.getloadavg()[0]:.1f} (wall times are only meaningful on an idle machine)")
    if args.out:
        from talk3d.io import write_json

        write_json(args.out, result)


if __name__ == "__main__":
    main()
