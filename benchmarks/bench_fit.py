"""Fit step time (median) and peak memory per preset, on CPU (and CUDA when present).

Each preset runs in its own subprocess (clean peak-memory figure) on a synthetic dataset at
the preset's output resolution: a few warm-up steps, then timed identity-stage steps
(U-Net off) and audio-stage steps (U-Net on). Writes JSON + markdown.

    python benchmarks/bench_fit.py --presets quick standard --steps 5 -o benchmarks/results/fit
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(preset_name: str, device: str, steps: int, warmup: int) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from talk3d.device import resolve_device
    from talk3d.fit.config import finalize, preset
    from talk3d.fit.data import TrainingData, to_device
    from talk3d.fit.trainer import _forward
    from talk3d.model import Avatar, compute_losses
    from tests.tiny_data import make_tiny_dataset

    cfg = finalize(preset(preset_name))
    dev = resolve_device(device)
    amp = bool(cfg.amp and dev.type == "cuda")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = make_tiny_dataset(Path(tmp) / "data", num_frames=40, size=cfg.model.out_res)
        data = TrainingData(data_dir, cfg.model)
        model = Avatar(cfg.model).to(dev).train()
        groups = model.parameter_groups()
        opt = torch.optim.Adam([{"params": groups["planes"], "lr": cfg.lr_planes},
                                {"params": groups["networks"], "lr": cfg.lr}])
        frames = data.train_index_batches(cfg.batch_size, 0)
        out: dict = {"preset": preset_name, "device": str(dev), "batch": cfg.batch_size,
                     "out_res": cfg.model.out_res, "neural_res": cfg.model.neural_res,
                     "samples": cfg.model.coarse_samples + cfg.model.importance_samples,
                     "params": sum(p.numel() for p in model.parameters())}
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for stage in ("identity", "audio"):
            times = []
            for i in range(warmup + steps):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                batch = to_device(data.batch(next(frames).tolist()), dev)
                res = _forward(model, batch["cam2world"], batch["intrinsics"],
                               batch["cond"] if stage == "audio" else None, amp)
                loss = compute_losses(res, batch, model, cfg.loss)["total"]
                opt.zero_grad()
                loss.backward()
                opt.step()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
            out[f"{stage}_sec_per_step"] = float(np.median(times))
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if dev.type == "cuda":
            out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        total = cfg.total_steps
        ident = out["identity_sec_per_step"] * cfg.identity_steps
        rest = out["audio_sec_per_step"] * (total - cfg.identity_steps)
        out["preset_steps"] = total
        out["estimated_fit_min"] = (ident + rest) / 60
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["quick", "standard"], help="presets to measure")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per stage")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per stage")
    ap.add_argument("--devices", nargs="+", default=None, help="devices (default: cpu, plus cuda when present)")
    ap.add_argument("-o", "--out", default=str(ROOT / "benchmarks" / "results" / "fit"), help="output path stem")
    ap.add_argument("--one", nargs=2, metavar=("PRESET", "DEVICE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.steps, args.warmup)))
        return
    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = []
    for dev in devices:
        for name in args.presets:
            proc = subprocess.run([sys.executable, __file__, "--one", name, dev, "--steps", str(args.steps),
                                   "--warmup", str(args.warmup)], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"benchmark of {name} on {dev} failed")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row))
    meta = {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    lines = ["| preset | device | batch | out/neural | samples | identity s/step | audio s/step | peak RSS MiB | "
             "peak CUDA MiB | preset steps | est. fit min |", "|" + " --- |" * 11]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['device']} | {r['batch']} | {r['out_res']}/{r['neural_res']} | {r['samples']} | "
                     f"{r['identity_sec_per_step']:.3f} | {r['audio_sec_per_step']:.3f} | {r['peak_rss_mib']:.0f} | "
                     f"{r.get('peak_cuda_mib', float('nan')):.0f} | {r['preset_steps']} | {r['estimated_fit_min']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
