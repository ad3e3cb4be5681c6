"""The GPU check in one call: build the CUDA kernels, test them, time them against the twin,
fit ``--preset full`` with each path, time 512^2 rendering, record the machine.

On the GPU machine (the exact ``device`` call is in docs/cuda.md):

    python3 benchmarks/gpu/run.py --carry gpu_carry --out "$OUT"

Here, as the test suite does (tiny sizes, CPU, no CUDA parts), so the script cannot rot:

    python3 benchmarks/gpu/run.py --dry-run --data TINY_DATASET --out /tmp/gpu_dry

Every step runs as a subprocess (in its own process group, killed whole at its time limit)
inside an overall deadline; a step that fails or runs out of time is recorded with the end of
its output and the next step runs; when the kernels do not build, the CUDA steps are skipped and
the twin's still run. Scratch files go to ``--work`` (default: a temporary folder); ``--out``
gets three files, as the device tool brings back at most eight: ``summary.json`` (every
figure, bench_cuda's report included), ``summary.md`` and ``logs.tar.gz``. The markdown table
is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import package_shim  # noqa: E402

TARGETS = {"kernel_speedup": 3.0, "render_fps_512": 100.0}
"""Issue 21: kernels >= 3x the twin (forward + backward) with no more memory; 512^2 render >= 100 frames/s."""


@dataclass
class Plan:
    """Sizes and time limits of one check (the GPU one, or the CPU dry run)."""

    device: str
    fit_args: list[str]
    fit_steps: int
    fit_limit_s: float
    render_batches: tuple[int, ...]
    render_frames: int
    bench_cuda_args: list[str]
    deadline_s: float
    paths: tuple[str, ...] = ("cuda", "torch")
    cuda: bool = True


def gpu_plan(deadline_s: float) -> Plan:
    """The check on a lent GPU: about 7 minutes."""
    return Plan(device="cuda", fit_steps=600, fit_limit_s=110.0, render_batches=(1, 4, 16), render_frames=64,
                fit_args=["--preset", "full", "--set", "final_val_frames=16", "--set", "val_frames=8"],
                bench_cuda_args=["--repeats", "10"], deadline_s=deadline_s)


def dry_plan(deadline_s: float) -> Plan:
    """The same steps on a CPU at test sizes (seconds): no kernel build, the twin only."""
    tiny = ["model.triplane_res=16", "model.triplane_channels=8", "model.decoder_hidden=16",
            "model.feature_channels=8", "model.coarse_samples=4", "model.importance_samples=4",
            "model.token_dim=16", "model.attn_heads=2", "model.unet_widths=[8,16]", "model.unet_attn_res=8",
            "model.sr_widths=[16,8,8]", "model.occupancy_res=8", "min_frames=1", "mouth_pretrain_steps=5",
            "final_val_frames=2", "val_frames=2", "threads=1"]
    return Plan(device="cpu", fit_steps=4, fit_limit_s=120.0, render_batches=(1, 2), render_frames=2,
                fit_args=["--preset", "quick", "--size", "32", "--device", "cpu",
                          *[a for t in tiny for a in ("--set", t)]],
                bench_cuda_args=["--res", "8", "--plane-res", "16", "--samples", "8", "--repeats", "1",
                                 "--batch", "1"],
                deadline_s=deadline_s, paths=("torch",), cuda=False)


@dataclass
class Runner:
    """Runs the steps' commands with the carried packages importable, inside the deadline."""

    logs: Path
    env: dict[str, str]
    deadline: float
    steps: dict[str, Any] = field(default_factory=dict)

    def run(self, name: str, cmd: list[str], limit_s: float, extra_env: dict[str, str] | None = None,
            least_s: float = 10.0) -> dict:
        """Run ``cmd`` for at most ``limit_s`` (never past the deadline; skipped when less than
        ``least_s`` would be left for it); its record."""
        limit = min(limit_s, self.deadline - time.monotonic() - 5.0)
        t0 = time.monotonic()
        rec: dict[str, Any] = {"cmd": " ".join(cmd[1:] if cmd[0] == sys.executable else cmd)}
        if limit < least_s:
            rec.update(ok=False, error="skipped: too little of the overall deadline was left")
        else:
            text, rc = _run_group(cmd, limit, {**self.env, **(extra_env or {})})
            rec.update(ok=rc == 0, rc=rc)
            if rc is None:
                rec["error"] = f"stopped after its limit of {limit:.0f} s"
            (self.logs / f"{name}.log").write_text(text)
            if not rec["ok"]:
                last = text.strip().splitlines()[-1][:300] if text.strip() else "no output"
                rec.setdefault("error", last.replace("|", "/"))
        rec["seconds"] = round(time.monotonic() - t0, 2)
        self.steps[name] = rec
        print(f"{name}: {'ok' if rec['ok'] else 'FAILED'} in {rec['seconds']:.0f} s", flush=True)
        return rec


def _run_group(cmd: list[str], limit: float, env: dict[str, str]) -> tuple[str, int | None]:
    """Output and return code of ``cmd`` (None when it ran past ``limit`` seconds: then its whole
    process group is killed, compilers started by a kernel build included)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit)
        return out or "", proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return out or "", None


def carried_environment(carry: Path | None, work: Path) -> dict[str, str]:
    """``PYTHONPATH`` with the carried wheels installed into ``work/site`` (no network, no
    dependencies) and ``talk3d_cli`` / ``talk3d_prep`` linked to this tree's ``cli/`` / ``data_prep/``."""
    paths = [str(package_shim(ROOT, work / "packages")), str(ROOT)]
    wheels = sorted((carry / "wheels").glob("*.whl")) if carry is not None else []
    if wheels:
        site = work / "site"
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                               "--target", str(site), *map(str, wheels)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:  # the steps then say what is missing
            print(f"installing the carried wheels failed: {proc.stderr.strip()[-300:]}", flush=True)
        paths.append(str(site))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1", "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                              os.environ.get("PATH", "")]),
            "TALK3D_CUDA_CACHE": str(work / "cuda_cache"), "TALK3D_CUDA_VERBOSE": "1",
            "MAX_JOBS": str(os.cpu_count() or 4)}


def machine(env: dict[str, str]) -> dict[str, Any]:
    """GPU, driver and versions, read by a subprocess with the carried packages."""
    code = ("import json, platform, torch, kornia, numpy; d = torch.cuda.is_available(); print(json.dumps({"
            "'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda, "
            "'kornia': kornia.__version__, 'numpy': numpy.__version__, "
            "'gpu': torch.cuda.get_device_name(0) if d else None, "
            "'capability': list(torch.cuda.get_device_capability(0)) if d else None, "
            "'gpu_memory_gib': round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if d else None}))")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False,
                              timeout=120)
        info: dict[str, Any] = json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-300:]}
    except (subprocess.TimeoutExpired, ValueError) as exc:
        info = {"error": str(exc)[:300]}
    info["cpu"] = platform.processor() or platform.machine()
    info["cores"] = os.cpu_count()
    for key, cmd in (("driver", ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
                     ("nvcc", ["nvcc", "--version"])):
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
            info[key] = res.stdout.strip().splitlines()[-1] if res.returncode == 0 and res.stdout.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            info[key] = None
    return info


def fit_records(run_dir: Path) -> dict[str, Any]:
    """s/step and held-out PSNR by step from a fit's ``metrics.jsonl`` (also of a fit stopped early)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "sec_per_step" in r]
    val = {r["step"]: round(r["val_psnr"], 3) for r in rows if "val_psnr" in r}
    tail = [r["sec_per_step"] for r in train[len(train) // 2:]]
    return {"steps": max((r["step"] for r in rows), default=0), "val_psnr": val,
            "sec_per_step": round(sorted(tail)[len(tail) // 2], 4) if tail else None}


def run_fit(runner: Runner, plan: Plan, data: Path, work: Path, path: str) -> dict[str, Any]:
    """``talk3d fit`` with one rendering path; held-out PSNR every third of the steps (so two
    paths compare at equal steps even when one is stopped early)."""
    every = max(1, plan.fit_steps // 3)
    run_dir = work / f"fit_{path}"
    cmd = [sys.executable, "-m", "talk3d_cli.main", "fit", str(data), "-o", str(run_dir), "--force", "--quiet",
           "--steps", str(plan.fit_steps), *plan.fit_args, "--set", f"val_every={every}",
           "--set", f"checkpoint_every={every}"]
    rec = runner.run(f"fit_{path}", cmd, plan.fit_limit_s, {"TALK3D_RENDER_IMPL": path}, least_s=30.0)
    return {**fit_records(run_dir), "finished": rec["ok"], "run": str(run_dir)}


def run_renders(runner: Runner, plan: Plan, paths: list[str], run_dir: Path | None, work: Path) -> dict[str, Any]:
    """Frames/s of the fitted avatar at its own size, per path and batch (model only, no encoding);
    without a fitted avatar, of a random full-size model."""
    results: dict[str, Any] = {}
    for path in paths:
        for batch in plan.render_batches:
            out = work / f"render_{path}_{batch}"
            model = ["--run", str(run_dir)] if run_dir is not None else ["--sizes", "full"]
            cmd = [sys.executable, "benchmarks/bench_render.py", *model, "--frames",
                   str(plan.render_frames), "--batch", str(batch), "--devices", plan.device, "--out", str(out)]
            rec = runner.run(f"render_{path}_b{batch}", cmd, 60.0, {"TALK3D_RENDER_IMPL": path})
            if rec["ok"]:
                row = json.loads((out / "bench_render.json").read_text())["results"][0]
                results.setdefault(path, {})[str(batch)] = {"fps": round(row["fps_forward"], 2),
                                                            "out_res": row["out_res"], "ms": row["ms_per_frame"]}
    return results


def _targets(report: dict[str, Any]) -> list[str]:
    """Lines with the kernel figures and each target, met or not."""
    bench = report.get("bench_cuda") or {}
    lines = []
    if "speedup" in bench:
        ok = bench["speedup"] >= TARGETS["kernel_speedup"] and bench["memory_ratio"] <= 1.0
        lines.append(f"Kernels vs twin (forward + backward, bench_cuda): {bench['speedup']:.2f}x faster, memory "
                     f"ratio {bench['memory_ratio']:.2f}, max |diff| {bench['max_abs_diff_features']:.1e} -> target "
                     f">= {TARGETS['kernel_speedup']}x with no more memory: {'MET' if ok else 'NOT MET'}")
    cuda = report["render"].get("cuda", {})
    if cuda:
        best = max(v["fps"] for v in cuda.values())
        lines.append(f"Render {next(iter(cuda.values()))['out_res']}^2, CUDA path: best {best:.1f} frames/s -> target "
                     f">= {TARGETS['render_fps_512']}: {'MET' if best >= TARGETS['render_fps_512'] else 'NOT MET'}")
    return lines or ["No CUDA figures (see the steps above)."]


def summarise(report: dict[str, Any]) -> str:
    """The markdown summary: machine, steps, figures against the targets."""
    m = report["machine"]
    lines = ["# GPU check", "", f"{m.get('gpu')} (driver {m.get('driver')}, CUDA {m.get('cuda')}), torch "
             f"{m.get('torch')}, Python {m.get('python')}; {report['seconds']:.0f} s in all"
             + (" (CPU dry run)" if report["dry_run"] else ""), "", "| step | result | seconds |", "| --- | --- | --- |"]
    for name, rec in report["steps"].items():
        lines.append(f"| {name} | {'ok' if rec['ok'] else 'FAILED: ' + rec.get('error', '')} | {rec['seconds']} |")
    lines += ["", "| path | fit s/step | fit steps | held-out PSNR by step | render frames/s by batch |",
              "| --- | --- | --- | --- | --- |"]
    for path in sorted(set(report["fits"]) | set(report["render"])):
        f, r = report["fits"].get(path, {}), report["render"].get(path, {})
        lines.append(f"| {path} | {f.get('sec_per_step')} | {f.get('steps')} | {f.get('val_psnr')} | "
                     f"{ {b: v['fps'] for b, v in r.items()} } |")
    return "\n".join([*lines, "", *_targets(report)]) + "\n"


def run_steps(runner: Runner, plan: Plan, data: Path, work: Path) -> dict[str, Any]:
    """Kernel build, tests and timings, then a fit per path, with the renders right after the first."""
    report: dict[str, Any] = {"fits": {}, "render": {}, "bench_cuda": None}
    paths = list(plan.paths)
    if plan.cuda:
        build = runner.run("build_kernels", [sys.executable, "-c",
                                             "import cuda_ext; cuda_ext.load_extension(strict=True)"], 240.0)
        if not build["ok"]:  # its compilers were killed with it: a stale build lock would stall every later load
            for lock in (work / "cuda_cache").rglob("lock"):
                lock.unlink()
            paths.remove("cuda")
        else:
            runner.run("test_cuda_kernels", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                             "tests/test_cuda_kernels.py"], 120.0)
    if "cuda" in paths or not plan.cuda:
        bench = work / "bench_cuda.json"
        runner.run("bench_cuda", [sys.executable, "benchmarks/bench_cuda.py", *plan.bench_cuda_args, "--out",
                                  str(bench)], 90.0)
        report["bench_cuda"] = json.loads(bench.read_text()) if bench.is_file() else None
    for k, path in enumerate(paths):
        report["fits"][path] = run_fit(runner, plan, data, work, path)
        if k == 0:
            run_dir = work / f"fit_{path}"
            fitted = run_dir if (run_dir / "checkpoints").is_dir() else None
            report["render"] = run_renders(runner, plan, paths, fitted, work)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--carry", type=Path, default=ROOT / "gpu_carry", help="folder from benchmarks/gpu/prepare.py")
    ap.add_argument("--data", type=Path, default=None, help="prepared dataset (default: the one in --carry/data)")
    ap.add_argument("--out", type=Path, required=True, help="folder for summary.json, summary.md and logs.tar.gz")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, test sizes, no CUDA parts (the test suite runs this)")
    ap.add_argument("--deadline", type=float, default=480.0, help="seconds for everything")
    args = ap.parse_args()
    t0 = time.monotonic()
    plan = dry_plan(args.deadline) if args.dry_run else gpu_plan(args.deadline)
    found = sorted((args.carry / "data").iterdir()) if (args.carry / "data").is_dir() else []
    data = args.data or (found[0] if found else None)
    if data is None or not (data / "manifest.json").is_file():
        sys.exit(f"no prepared dataset: give --data or run benchmarks/gpu/prepare.py ({args.carry / 'data'})")
    work = args.work or Path(tempfile.mkdtemp(prefix="talk3d_gpu_"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    env = carried_environment(None if args.dry_run else args.carry, work)
    runner = Runner(logs, env, t0 + plan.deadline_s)
    report = {"dry_run": args.dry_run, "machine": machine(env), "data": str(data),
              **run_steps(runner, plan, data, work)}
    report["steps"], report["seconds"] = runner.steps, round(time.monotonic() - t0, 1)
    (args.out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    with tarfile.open(args.out / "logs.tar.gz", "w:gz") as tar:
        tar.add(logs, arcname="logs")
    text = summarise(report)
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
