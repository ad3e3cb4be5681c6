"""Held-out frames of a fitted avatar rendered with the U-Net and SR in float32 and in bfloat16.

For each precision: held-out PSNR and mouth PSNR against the video, milliseconds per frame (batches
of ``--batch`` frames, whole forward pass) and PSNR / largest pixel difference against the first
precision's render. Run it with ``PYTHONPATH`` on an older tree to get that version's figures on
the same frames (older versions ignore the precision and render float32).

    python3 benchmarks/check_precision.py RUN [--precisions float32,bfloat16] [--batch 4] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import held_out_scores


def render_all(avatar, batches: list[dict], precision: str) -> dict:
    """Render the batches at one precision: ``{"images", "psnr", "mouth_psnr", "ms_per_frame"}``."""
    avatar.precision = precision
    frames = sum(b["image"].shape[0] for b in batches)
    with torch.no_grad():
        avatar(batches[0]["cam2world"], batches[0]["intrinsics"], batches[0]["cond"])  # warm-up
        t0 = time.perf_counter()
        images = [avatar(b["cam2world"], b["intrinsics"], b["cond"])["rgb"] for b in batches]
        ms = (time.perf_counter() - t0) / frames * 1000
    return {"images": torch.cat(images), **held_out_scores(images, batches), "ms_per_frame": ms}


def main() -> None:
    from talk3d.fit.checkpoint import load_run
    from talk3d.fit.data import TrainingData
    from talk3d.image import psnr

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="fitted run folder")
    ap.add_argument("--precisions", default="float32,bfloat16", help="comma-separated: float32, bfloat16, auto")
    ap.add_argument("--batch", type=int, default=4, help="frames per forward pass")
    ap.add_argument("--frames", type=int, default=0, help="held-out frames (0: all of them)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    args = ap.parse_args()
    run = load_run(args.run)
    avatar = run.avatar.eval()
    data = TrainingData(run.dataset_dir, run.model_config, 64, 0.3)
    frames = data.val_subset(args.frames or 10**9)
    batches = [data.batch(frames[i:i + args.batch]) for i in range(0, len(frames), args.batch)]
    rows, first = [], None
    for precision in args.precisions.split(","):
        res = render_all(avatar, batches, precision)
        images = res.pop("images")
        first = images if first is None else first
        rows.append({"precision": precision, **res,
                     "psnr_vs_first": float(psnr(images.flatten(0, 1)[None], first.flatten(0, 1)[None])[0]),
                     "max_abs_vs_first": float((images - first).abs().max())})
    report = {"run": str(args.run), "frames": len(frames), "batch": args.batch, "threads": torch.get_num_threads(),
              "rows": rows}
    print(f"{len(frames)} held-out frames, batches of {args.batch}, {torch.get_num_threads()} threads")
    print("| precision | PSNR dB | mouth PSNR dB | ms/frame | PSNR vs first row | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['precision']} | {r['psnr']:.3f} | {r['mouth_psnr']:.3f} | {r['ms_per_frame']:.1f} | "
              f"{r['psnr_vs_first']:.1f} | {r['max_abs_vs_first']:.4f} |")
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
