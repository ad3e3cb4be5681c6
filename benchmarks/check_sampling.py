"""Held-out frames of a fitted avatar rendered by the reference sampling path and the fast one.

The reference is what talk3d rendered before session 7: every ray sampled over its whole
segment through the scene box, triplane sampling by the ``grid_sample`` twin. The variants use
the occupancy grid (:mod:`talk3d.model.occupancy`) and the embedding-bag sampler, at the sample
counts given. For each: held-out PSNR and mouth PSNR against the video, milliseconds per frame
(batch 1, whole forward), and PSNR / largest pixel difference against the reference render.

    python3 benchmarks/check_sampling.py RUN [--samples 24/24,16/16,12/12] [--frames 50] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import held_out_scores


def render_variant(avatar, batches: list[dict], grid, samples: tuple[int, int] | None, reference: bool) -> dict:
    """Render the batches with one sampling setup; ``{"images", "psnr", "mouth_psnr", "ms_per_frame"}``."""
    from talk3d.fit.trainer import _forward
    from talk3d.ops import render_impl, set_render_impl

    saved_impl = render_impl()
    set_render_impl("torch" if reference else "auto")  # TALK3D_RENDER_IMPL is read once, at import
    avatar.occupancy = None if reference else grid
    saved = avatar.cfg.coarse_samples, avatar.cfg.importance_samples
    if samples is not None:
        avatar.cfg.coarse_samples, avatar.cfg.importance_samples = samples
    try:
        with torch.no_grad():
            _forward(avatar, batches[0]["cam2world"], batches[0]["intrinsics"], batches[0]["cond"], False)  # warm-up
            t0 = time.perf_counter()
            images = [_forward(avatar, b["cam2world"], b["intrinsics"], b["cond"], False)["rgb"] for b in batches]
            ms = (time.perf_counter() - t0) / len(batches) * 1000
    finally:
        avatar.cfg.coarse_samples, avatar.cfg.importance_samples = saved
        set_render_impl(saved_impl)
    return {"images": torch.cat(images), **held_out_scores(images, batches), "ms_per_frame": ms}


def main() -> None:
    from talk3d.fit.checkpoint import load_run
    from talk3d.fit.data import TrainingData
    from talk3d.image import psnr

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="fitted run folder")
    ap.add_argument("--samples", default="24/24,16/16,12/12", help="coarse/importance counts for the fast path")
    ap.add_argument("--frames", type=int, default=50, help="held-out frames (spread over the split)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    args = ap.parse_args()
    run = load_run(args.run)
    avatar = run.avatar.eval()
    grid = avatar.occupancy
    if grid is None:
        raise SystemExit("this run's model has no occupancy grid (occupancy_res 0)")
    data = TrainingData(run.dataset_dir, run.model_config, 64, 0.3)
    frames = data.val_subset(args.frames)
    batches = [data.batch([f]) for f in frames]
    own = (run.model_config.coarse_samples, run.model_config.importance_samples)
    ref = render_variant(avatar, batches, grid, own, reference=True)
    rows = [{"path": f"reference (whole box, twin) {own[0]}/{own[1]}", **{k: v for k, v in ref.items() if k != "images"}}]
    for text in args.samples.split(","):
        samples = tuple(int(x) for x in text.split("/"))
        res = render_variant(avatar, batches, grid, samples, reference=False)  # type: ignore[arg-type]
        res_images = res.pop("images")
        diff = res_images - ref["images"]
        rows.append({"path": f"grid + bag {text}", **res,
                     "psnr_vs_reference": float(psnr(res_images.flatten(0, 1)[None], ref["images"].flatten(0, 1)[None])[0]),
                     "max_abs_vs_reference": float(diff.abs().max())})
    report = {"run": str(args.run), "frames": len(frames), "occupied_fraction": float(grid.occupied.float().mean()),
              "threads": torch.get_num_threads(), "rows": rows}
    print(f"{len(frames)} held-out frames, occupied fraction {report['occupied_fraction']:.3f}")
    print("| path | PSNR dB | mouth PSNR dB | ms/frame | PSNR vs reference | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['path']} | {r['psnr']:.3f} | {r['mouth_psnr']:.3f} | {r['ms_per_frame']:.1f} | "
              f"{r.get('psnr_vs_reference', float('inf')):.1f} | {r.get('max_abs_vs_reference', 0.0):.3f} |")
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
