"""Benchmark: CUDA render kernels vs the torch twin (forward + backward, peak memory).

The rendering step timed is the renderer's hot path: sample a triplane at every ray sample,
turn features into density + colour features, alpha-composite along the rays, then
backward from all outputs. Both paths run in one process on the same inputs; the report
gives the ratios. Without CUDA it says so and times the twin only (CPU, smaller default).

    python benchmarks/bench_cuda.py                     # fitting sizes on a GPU
    python benchmarks/bench_cuda.py --out bench.json    # also write JSON (+ .md beside it)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from talk3d.ops import composite_rays, sample_triplane


def render_step(planes: torch.Tensor, t_vals: torch.Tensor, dirs: torch.Tensor, impl: str) -> torch.Tensor:
    """One forward + backward of the rendering step; returns the composited features.

    planes (B, 3, C, R, R); t_vals (B, Nr, S); dirs (B, Nr, 3) unit ray directions from
    the camera at (0, 0, 2.5) looking at the box."""
    b, nr, s = t_vals.shape
    origin = torch.tensor([0.0, 0.0, 2.5], device=planes.device)
    pts = origin + dirs[:, :, None, :] * t_vals[..., None]  # (B, Nr, S, 3)
    feats = sample_triplane(planes, pts.reshape(b, nr * s, 3), "sum", impl=impl)  # (B, Nr*S, C)
    feats = feats.reshape(b * nr, s, -1)
    sigmas = F.softplus(feats[..., 0] - 1.0)
    deltas = torch.diff(t_vals, dim=-1, append=t_vals[..., -1:] + 1e-2).reshape(b * nr, s)
    out = composite_rays(sigmas, feats[..., 1:].contiguous(), t_vals.reshape(b * nr, s), deltas, impl=impl)
    loss = out["features"].square().mean() + out["depth"].mean() + out["alpha"].mean()
    loss.backward()
    return out["features"].detach()


def make_inputs(batch: int, res: int, samples: int, channels: int, plane_res: int, device: str):
    g = torch.Generator().manual_seed(0)
    planes = (torch.randn(batch, 3, channels, plane_res, plane_res, generator=g) * 0.5).to(device)
    planes.requires_grad_(True)
    ys, xs = torch.meshgrid(torch.linspace(-0.35, 0.35, res), torch.linspace(-0.35, 0.35, res), indexing="ij")
    dirs = F.normalize(torch.stack([xs, ys, -torch.ones_like(xs)], -1).reshape(1, -1, 3), dim=-1)
    dirs = dirs.expand(batch, -1, -1).contiguous().to(device)
    t = torch.linspace(1.5, 3.5, samples)
    t_vals = (t + torch.rand(batch, res * res, samples, generator=g) * (2.0 / samples)).to(device)
    return planes, t_vals, dirs


def time_impl(impl: str, inputs, repeats: int) -> dict[str, float]:
    planes, t_vals, dirs = inputs
    cuda = planes.is_cuda
    render_step(planes, t_vals, dirs, impl)  # warm-up (and the one-time build for cuda)
    planes.grad = None
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        render_step(planes, t_vals, dirs, impl)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        planes.grad = None
    res = {"median_ms": 1e3 * sorted(times)[len(times) // 2], "min_ms": 1e3 * min(times)}
    if cuda:
        res["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4, help="images per step")
    ap.add_argument("--res", type=int, default=None, help="rays per side (default 128 on GPU, 32 on CPU)")
    ap.add_argument("--samples", type=int, default=96, help="samples per ray")
    ap.add_argument("--channels", type=int, default=32, help="triplane channels")
    ap.add_argument("--plane-res", type=int, default=256, help="triplane resolution")
    ap.add_argument("--repeats", type=int, default=10, help="timed repetitions")
    ap.add_argument("--out", type=Path, default=None, help="write JSON here (and markdown beside it)")
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    res = args.res or (128 if cuda else 32)
    batch = args.batch if cuda or args.res else 1
    if not cuda:
        print("bench_cuda: the CUDA kernels need a CUDA GPU; timing the torch twin on CPU only "
              f"(batch {batch}, {res}^2 rays; pass --res/--batch for other sizes)")
    inputs = make_inputs(batch, res, args.samples, args.channels, args.plane_res, device)
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "sizes": {"batch": batch, "rays": batch * res * res, "samples": args.samples,
                  "channels": args.channels, "plane_res": args.plane_res},
        "torch_twin": time_impl("torch", inputs, args.repeats if cuda else max(1, args.repeats // 5)),
    }
    if cuda:
        report["cuda_kernels"] = time_impl("cuda", inputs, args.repeats)
        planes, t_vals, dirs = inputs
        a = render_step(planes, t_vals, dirs, "cuda")
        b = render_step(planes, t_vals, dirs, "torch")
        report["max_abs_diff_features"] = float((a - b).abs().max())
        tw, kc = report["torch_twin"], report["cuda_kernels"]
        report["speedup"] = tw["median_ms"] / kc["median_ms"]  # type: ignore[index]
        report["memory_ratio"] = kc["peak_mib"] / max(tw["peak_mib"], 1e-9)  # type: ignore[index]

    lines = ["| path | median ms (fwd+bwd) | min ms | peak MiB |", "| --- | --- | --- | --- |"]
    for key in ("torch_twin", "cuda_kernels"):
        if key in report:
            r = report[key]
            lines.append(f"| {key} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | "  # type: ignore[index]
                         f"{r.get('peak_mib', float('nan')):.0f} |")  # type: ignore[union-attr]
    if cuda:
        lines.append(f"\nspeedup {report['speedup']:.2f}x, memory ratio {report['memory_ratio']:.2f} "
                     f"(kernels / twin), max |diff| {report['max_abs_diff_features']:.2e}")
    md = f"device: {report['device']}, sizes: {report['sizes']}\n\n" + "\n".join(lines)
    print(md)
    if args.out is not None:
        from talk3d.io import atomic_path, write_json

        write_json(args.out, report)
        with atomic_path(args.out.with_suffix(".md")) as tmp:
            tmp.write_text(md + "\n")


if __name__ == "__main__":
    main()
