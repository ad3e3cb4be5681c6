"""MPI round trip on a fitted avatar: export a frame's MPI (as ``talk3d render --mpi`` does, with
the image-mode torso as an extra layer), render it back at the same camera and compare it with
the direct neural-resolution render (``rgb_lr``).

    python benchmarks/check_mpi.py RUN_DIR [--frames 100,470] [--layers 32,64]

Prints one line per frame and layer count and the JSON of all figures (PSNR in dB).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--frames", default="100,470", help="dataset frames to export (comma-separated)")
    ap.add_argument("--layers", default="32,64", help="MPI layer counts (comma-separated)")
    ap.add_argument("--samples", type=int, default=4, help="field samples per layer slab")
    args = ap.parse_args()

    from talk3d.eval.metrics import psnr
    from talk3d.fit.checkpoint import load_run
    from talk3d.model.drive import conditioning_for
    from talk3d.render.field import avatar_field, avatar_torso_layer
    from talk3d.render.mpi import box_near_far, export_mpi, render_mpi

    run = load_run(args.run_dir, "cpu")
    cfg, m = run.model_config, run.manifest
    k = torch.as_tensor(np.asarray(m.intrinsics, np.float32))
    radius = float(np.linalg.norm(np.maximum(np.abs(cfg.box_min), np.abs(cfg.box_max))))
    figures = []
    for fi in (int(f) for f in args.frames.split(",")):
        fi = min(fi, m.num_frames - 1)
        cond = conditioning_for(cfg, np.asarray(run.audio_feats, np.float32), m.audio_feature_rate, m.fps,
                                run.blink, run.poses, np.array([fi]), torso_offsets=run.torso_offsets)
        cam = torch.as_tensor(run.poses[fi:fi + 1], dtype=torch.float32)
        direct = run.avatar(cam, k, cond)["rgb_lr"][0].clamp(0, 1)
        field, size, background = avatar_field(run.avatar, cond)
        torso = avatar_torso_layer(run.avatar, cam[0], cond, size)
        near, far = box_near_far(cam[0], radius)
        for layers in (int(n) for n in args.layers.split(",")):
            mpi = export_mpi(field, cam[0], k, size, near, far, layers=layers, samples=args.samples,
                             background=background, extra_layers=[torso] if torso is not None else [])
            value = float(psnr(render_mpi(mpi)[:3].clamp(0, 1), direct))
            figures.append({"frame": fi, "layers": layers, "psnr_db": value})
            print(f"frame {fi}, {layers} layers: MPI vs direct render PSNR {value:.2f} dB", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
