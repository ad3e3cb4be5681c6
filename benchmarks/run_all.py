"""Run every benchmark script and collect one JSON + markdown report.

    python3 benchmarks/run_all.py                # full sizes, 3 repeats each
    python3 benchmarks/run_all.py --quick        # small sizes, 1 repeat (a few minutes on 2 CPU cores)
    python3 benchmarks/run_all.py --only fit render --out /tmp/bench
    python3 benchmarks/run_all.py --only render_run render_e2e --run RUN --against REV   # old vs new, one run

Each benchmark is a script in this folder run as a subprocess (argument list, return code
checked, stderr tail kept on failure); a missing script is skipped with a note. Every script
writes its own JSON through its ``--out``/``-o`` flag; repeated runs are reduced to medians
of every numeric figure. The sample video is the shared Obama clip when present, else a
generated synthetic clip. Ratios between figures come from the same run of this command.

``--against REV`` also runs every script of git revision ``REV`` (checked out into a temporary
worktree, imported through ``PYTHONPATH``), alternating old and new runs on the same machine,
and reports each headline figure old vs new with their ratio (a script the old revision lacks
runs from this checkout where it only uses APIs both have). ``--run RUN`` adds ``render_run``
(the model's speed, split U-Net / volume / SR) and ``render_e2e`` (``talk3d render`` end to
end, tracked pose and ``--pose fixed``): the speed a user sees; with
``--against``, give a run the old revision can read (one it fitted: newer settings are refused
by older code).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import flatten, machine, median_figures, package_shim  # noqa: E402

SHARED_SAMPLE = ROOT.parent / "shared" / "data" / "video" / "obama_450_20s.mp4"


@dataclass
class Bench:
    """One benchmark script and how to call it."""

    name: str
    """Key in the report."""
    script: str
    """File in ``benchmarks/``."""
    args: list[str]
    """Arguments for the full run; ``{sample}`` is replaced by the sample video."""
    quick_args: list[str]
    """Arguments for ``--quick``."""
    out_flag: str = "--out"
    """Flag that names the script's JSON output."""
    out_is_stem: bool = False
    """The script appends ``.json`` to the output name itself."""
    out_dir_json: str = ""
    """When set, the script takes an output folder and writes this JSON file inside it."""
    headline: list[str] = field(default_factory=list)
    """Substrings of figure names shown in the markdown table (all figures stay in the JSON)."""
    script_from_new: bool = False
    """Old trees run this checkout's script (it only uses APIs they have) when they lack it."""


BENCHES = [
    Bench("prep", "bench_prep.py", ["--video", "{sample}"], ["--video", "{sample}", "--long-seconds", "0"],
          out_dir_json="bench_prep.json", headline=["fps", "seconds", "peak"]),
    Bench("fit", "bench_fit.py", ["--presets", "quick", "standard"],
          ["--presets", "quick", "--steps", "2", "--warmup", "1"], out_flag="-o", out_is_stem=True,
          headline=["sec_per_step", "peak", "estimated_fit_min"]),
    Bench("render", "bench_render.py", ["--frames", "16"], ["--sizes", "quick", "--frames", "2"],
          out_dir_json="bench_render.json", headline=["fps", "ms_per_frame"]),
    Bench("render_run", "bench_render.py", ["--run", "{run}", "--frames", "32", "--threads", "0"],
          ["--run", "{run}", "--frames", "8"], out_dir_json="bench_render.json",
          headline=["fps_forward", "ms_per_frame"]),
    Bench("render_e2e", "render_e2e.py", ["--run", "{run}"], ["--run", "{run}"],
          headline=["fps_e2e", "fps_model", "peak_rss"], script_from_new=True),
    Bench("model_256", "bench_model_speed.py", ["--size", "quick", "--frames", "20"],
          ["--size", "quick", "--frames", "3", "--warmup", "1"], headline=["fps", "total_ms", "ms_per_frame"]),
    Bench("model_512", "bench_model_speed.py", ["--size", "full", "--frames", "10"],
          ["--size", "full", "--frames", "2", "--warmup", "1"], headline=["fps", "total_ms", "ms_per_frame"]),
    Bench("memory_kernels", "bench_cuda.py", ["--repeats", "10"], ["--repeats", "3"],
          headline=["median_ms", "peak_mib", "speedup", "memory_ratio"]),
]

RATIOS = [
    ("render fps 256 / 512 (model)", "model_256", "fps", "model_512", "fps"),
    ("fit s/step audio / identity (quick preset)", "fit", "results.0.audio_sec_per_step",
     "fit", "results.0.identity_sec_per_step"),
]
"""(label, bench, figure, bench, figure): numerator / denominator, both medians of this run."""


def sample_video(workdir: Path) -> tuple[Path, str]:
    """The shared Obama clip, or a synthetic clip generated into ``workdir``."""
    if SHARED_SAMPLE.is_file():
        return SHARED_SAMPLE, "shared obama_450_20s.mp4"
    from talk3d.synthetic import SyntheticConfig, make_clip

    clip = make_clip(workdir / "synthetic", SyntheticConfig())
    return clip.video, "synthetic clip (shared data absent)"


@dataclass
class Tree:
    """The source tree a benchmark runs from: this checkout, or an old revision's worktree."""

    label: str
    """``new`` or ``old``."""
    root: Path
    """Repository root (scripts in ``root/benchmarks``, the package imported from ``root``)."""


def run_bench(bench: Bench, quick: bool, values: dict[str, str], raw_dir: Path, rep: int, timeout: float,
              tree: Tree | None = None) -> dict[str, Any]:
    """Run one script once; return ``{"ok", "seconds", "result"|"error"}``.

    ``values`` fills the ``{name}`` placeholders of the arguments (``sample``, ``run``).
    """
    tree = tree or Tree("new", ROOT)
    out = raw_dir / f"{bench.name}_{tree.label}_{rep}"
    json_path = out / bench.out_dir_json if bench.out_dir_json else out.with_suffix(".json")
    args = []
    for a in bench.quick_args if quick else bench.args:
        for key, value in values.items():
            a = a.replace("{" + key + "}", value)
        args.append(a)
    target = out if (bench.out_is_stem or bench.out_dir_json) else json_path
    script = tree.root / "benchmarks" / bench.script
    if not script.is_file() and bench.script_from_new:
        script = HERE / bench.script
    if not script.is_file():
        return {"ok": False, "seconds": 0.0, "error": f"{bench.script} is not in the {tree.label} tree"}
    cmd = [sys.executable, str(script), *args, bench.out_flag, str(target)]
    paths = [str(package_shim(tree.root, raw_dir / f"packages_{tree.label}")), str(tree.root),
             os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tree.root, timeout=timeout, check=False,
                              env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "seconds": time.perf_counter() - t0, "error": f"timed out after {timeout:.0f} s"}
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"ok": False, "seconds": seconds, "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    if not json_path.is_file():
        return {"ok": False, "seconds": seconds, "error": f"the script wrote no {json_path.name}"}
    return {"ok": True, "seconds": seconds, "result": json.loads(json_path.read_text())}


@contextlib.contextmanager
def worktree(rev: str):
    """A temporary detached worktree of ``rev`` (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="talk3d_old_") as tmp:
        path = Path(tmp) / "tree"
        add = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
                             capture_output=True, text=True, check=False)
        if add.returncode != 0:
            raise SystemExit(f"error: cannot check out '{rev}': {add.stderr.strip().splitlines()[-1:]}")
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                           capture_output=True, check=False)


def compare(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline figures of the old and the new tree side by side: ``{bench, figure, old, new, ratio}``."""
    rows = []
    for bench in BENCHES:
        new = report["benchmarks"].get(bench.name, {}).get("figures", {})
        old = report.get("against", {}).get("benchmarks", {}).get(bench.name, {}).get("figures", {})
        for key in new:
            if key in old and any(h in key for h in bench.headline):
                a, b = old[key]["median"], new[key]["median"]
                rows.append({"bench": bench.name, "figure": key, "old": a, "new": b, "ratio": b / a if a else None})
    return rows


def ratios(figures: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for label, b1, k1, b2, k2 in RATIOS:
        a = figures.get(b1, {}).get(k1, {}).get("median")
        b = figures.get(b2, {}).get(k2, {}).get("median")
        if a is not None and b:
            out.append({"ratio": label, "value": a / b, "numerator": a, "denominator": b})
    return out


def to_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# talk3d benchmarks",
        "",
        f"{m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), Python {m['python']}, "
        f"torch {m['torch']}, CUDA: {m['cuda_device'] or 'none'}. Mode: {report['mode']}, "
        f"{report['repeats']} repeat(s), medians. Sample: {report['sample']}.",
        "",
        "| benchmark | status | wall s | figure | median | runs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for bench in BENCHES:
        entry = report["benchmarks"].get(bench.name)
        if entry is None:
            continue
        if entry["status"] != "ok":
            lines.append(f"| {bench.name} | {entry['status']} | {entry.get('seconds', 0):.1f} | "
                         f"{entry.get('note', '')} | | |")
            continue
        figs = entry["figures"]
        shown = [k for k in figs if any(h in k for h in bench.headline)][:12] or list(figs)[:8]
        for i, key in enumerate(shown):
            f = figs[key]
            head = f"| {bench.name} | ok | {entry['seconds']:.1f} " if i == 0 else "| | | "
            vals = ", ".join(f"{v:.4g}" for v in f["values"])
            lines.append(f"{head}| {key} | {f['median']:.4g} | {vals} |")
    if report["ratios"]:
        lines += ["", "| ratio (same run) | value |", "| --- | --- |"]
        lines += [f"| {r['ratio']} | {r['value']:.3g} |" for r in report["ratios"]]
    if report.get("comparison"):
        lines += ["", f"Old ({report['against']['revision']}) vs new, same run, medians:", "",
                  "| benchmark | figure | old | new | new / old |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['bench']} | {r['figure']} | {r['old']:.4g} | {r['new']:.4g} | "
                  f"{r['ratio']:.3g} |" if r["ratio"] is not None else
                  f"| {r['bench']} | {r['figure']} | {r['old']:.4g} | {r['new']:.4g} | |"
                  for r in report["comparison"]]
    return "\n".join(lines) + "\n"


def run_repeats(bench: Bench, args: argparse.Namespace, values: dict[str, str], raw_dir: Path, repeats: int,
                trees: list[Tree]) -> dict[str, dict[str, Any]]:
    """``repeats`` runs of ``bench`` per tree, the trees alternating; one report entry per tree."""
    runs: dict[str, list] = {t.label: [] for t in trees}
    errors: dict[str, list] = {t.label: [] for t in trees}
    secs: dict[str, list] = {t.label: [] for t in trees}
    for rep in range(repeats):
        for tree in trees:
            print(f"[run ] {bench.name} {tree.label} ({rep + 1}/{repeats})", flush=True)
            r = run_bench(bench, args.quick, values, raw_dir, rep, args.timeout, tree)
            secs[tree.label].append(r["seconds"])
            (runs if r["ok"] else errors)[tree.label].append(r.get("result", r.get("error")))
    entries = {}
    for tree in trees:
        label = tree.label
        entry: dict[str, Any] = {"script": bench.script, "seconds": sum(secs[label]), "runs": len(runs[label])}
        if runs[label]:
            entry.update(status="ok", figures=median_figures(runs[label]))
        else:
            entry.update(status="failed", note=errors[label][-1])
            print(f"[fail] {bench.name} {label}: {errors[label][-1]}", flush=True)
        if errors[label] and runs[label]:
            entry["errors"] = errors[label]
        entries[label] = entry
    return entries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and one repeat")
    ap.add_argument("--repeats", type=int, default=None, help="runs per benchmark (default 3, 1 with --quick)")
    ap.add_argument("--only", nargs="+", default=None, help=f"benchmarks to run: {[b.name for b in BENCHES]}")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output folder")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per script run")
    ap.add_argument("--run", type=Path, default=None, help="a fitted run folder: adds the render_run benchmark")
    ap.add_argument("--against", default=None, metavar="REV",
                    help="also run the scripts of this git revision (old vs new, alternating, same run)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    unknown = set(args.only or []) - {b.name for b in BENCHES}
    if unknown:
        ap.error(f"unknown benchmarks {sorted(unknown)}; choose from {[b.name for b in BENCHES]}")
    from talk3d.io import atomic_path, write_json

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="talk3d_bench_") as tmp:
        sample, sample_note = sample_video(Path(tmp))
        raw_dir = args.out / "raw"
        raw_dir.mkdir(exist_ok=True)
        report: dict[str, Any] = {"machine": machine(), "mode": "quick" if args.quick else "full",
                                  "repeats": repeats, "sample": sample_note, "benchmarks": {}}
        values = {"sample": str(sample), "run": str(args.run.resolve()) if args.run else ""}
        with contextlib.ExitStack() as stack:
            trees = [Tree("new", ROOT)]
            if args.against:
                trees.append(Tree("old", stack.enter_context(worktree(args.against))))
                report["against"] = {"revision": args.against, "benchmarks": {}}
            for bench in BENCHES:
                if args.only and bench.name not in args.only:
                    continue
                if "{run}" in " ".join(bench.args) and args.run is None:
                    continue
                if not (HERE / bench.script).is_file():
                    report["benchmarks"][bench.name] = {"status": "skipped", "note": f"{bench.script} not present"}
                    print(f"[skip] {bench.name}: {bench.script} not present", flush=True)
                    continue
                entries = run_repeats(bench, args, values, raw_dir, repeats, trees)
                report["benchmarks"][bench.name] = entries["new"]
                if "old" in entries:
                    report["against"]["benchmarks"][bench.name] = entries["old"]
        report["comparison"] = compare(report)
        figures = {name: e.get("figures", {}) for name, e in report["benchmarks"].items()}
        report["ratios"] = ratios(figures)
    write_json(args.out / "benchmarks.json", report)
    md = to_markdown(report)
    with atomic_path(args.out / "benchmarks.md") as tmp_md:
        tmp_md.write_text(md)
    print(md)
    return 0 if all(e["status"] != "failed" for e in report["benchmarks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["BENCHES", "flatten", "main"]
