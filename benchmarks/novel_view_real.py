"""Novel views against ground truth on real video: the head's own turns, held out.

    python3 benchmarks/novel_view_real.py [--shared ../shared/data] [--work /tmp/nv_real]
        [--clips katiehill_512_8s feifeili_256_10s] [--size 256] [--holdout-fraction F] [--steps N]
        [--set KEY=VALUE ...]

For each clip: ``talk3d prep --holdout turned`` (the frames whose head yaw lies furthest from
the median, on each side the clip turns to, held out with unused margins; ``--holdout-fraction``
of the frames, 0.15 by default: more trains on a narrower range of angles and tests further beyond
it), a quick fit
(``talk3d fit``, default preset unless ``--steps``/``--set``), then ``talk3d eval --no-video``,
whose "turned" section renders every held-out turned frame at its own pose against the frame
itself, beside the "no 3D" baseline (the nearest training pose with the frame's audio).
Steps already done in ``--work`` are reused (a finished dataset is kept, the fit resumes; eval is
redone with --force).
Writes ``WORK/novel_view_real.json`` and ``.md`` (one row per clip, and the turned frames' head PSNR
by degrees beyond the training range: flat or rising with the distance says the avatar's held-out
quality as a whole, not the new view, limits the figure) and prints the tables.
Run on an idle machine when the time figures matter.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from talk3d_prep.pipeline import PrepConfig

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ("katiehill_512_8s", "feifeili_256_10s")
TURNED_SHARE = PrepConfig().turned_fraction
"""Prep's default share of turned frames held out."""
BEYOND_BINS = ((0.0, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 12.0), (12.0, 90.0))
"""Degrees beyond the training yaw range by which the turned frames are grouped."""


def talk3d(*args: str) -> float:
    """Run a talk3d command (this tree's), checked; returns its wall time in seconds."""
    t = time.perf_counter()
    cmd = [sys.executable, "-c", "from talk3d_cli.main import app; app()", *args]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t


def one_clip(video: Path, work: Path, size: int, steps: int | None, sets: list[str],
             holdout_fraction: float = TURNED_SHARE) -> dict:
    data, run = work / f"data_{video.stem}", work / f"run_{video.stem}"
    timings = {}
    manifest = data / "manifest.json"
    if manifest.is_file():  # a finished dataset with the same turned split is reused
        settings = json.loads(manifest.read_text()).get("prep_settings") or {}
        found = (settings.get("holdout"), settings.get("turned_fraction"))
        if found != ("turned", holdout_fraction):
            raise SystemExit(f"{data} holds a dataset with another held-out split ({found[0]}, share {found[1]}; "
                             f"asked: turned, {holdout_fraction}): remove it or choose another --work")
    else:
        timings["prep_s"] = talk3d("prep", str(video), "-o", str(data), "--size", str(size), "--holdout", "turned",
                                   "--holdout-fraction", str(holdout_fraction), "-q")
    fit_args = ["fit", str(data), "-o", str(run), "-q"] + (["--steps", str(steps)] if steps else [])
    for s in sets:
        fit_args += ["--set", s]
    timings["fit_s"] = talk3d(*fit_args)
    timings["eval_s"] = talk3d("eval", str(run), "--no-video", "--force", "-q")
    report = json.loads((run / "eval" / "report.json").read_text())
    manifest = json.loads((data / "manifest.json").read_text())
    return {"clip": video.name, "data": str(data), "run": str(run), "timings": timings,
            "val_runs": manifest["val_runs"], "train_angles": manifest["train_angles"],
            "self_driven_psnr": report["self_driven"]["psnr"], "turned": report["turned"],
            "novel_views": report["novel_views"], "eval_dir": str(run / "eval")}


def markdown(rows: list[dict]) -> str:
    head = ("| clip | held-out frames (yaw) | training yaw | beyond (mean / max deg) | PSNR render / baseline | "
            "head PSNR render / baseline | SSIM render / baseline | LMD mouth render / baseline | "
            "LMD face render / baseline | identity distance to the frame, render / baseline |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    lines = []
    for r in rows:
        t = r["turned"]
        if not t.get("available"):
            lines.append(f"| {r['clip']} | {t.get('reason')} |" + " |" * 8)
            continue
        a, b = t["render"], t["baseline"]
        pairs = [(a["psnr"], b["psnr"], 2), (a["head_psnr"], b["head_psnr"], 2), (a["ssim"], b["ssim"], 3),
                 (a["lmd_mouth"], b["lmd_mouth"], 2), (a.get("lmd_face"), b.get("lmd_face"), 2),
                 (a.get("identity_distance"), b.get("identity_distance"), 3)]
        lines.append(
            f"| {r['clip']} | {t['frames']} ({t['held_out_yaw'][0]:+.0f}..{t['held_out_yaw'][1]:+.0f}) | "
            f"{t['train_yaw'][0]:+.0f}..{t['train_yaw'][1]:+.0f} | {t['degrees_beyond_mean']:.1f} / "
            f"{t['degrees_beyond_max']:.1f} | " + " | ".join(f"{_f(x, d)} / {_f(y, d)}" for x, y, d in pairs) + " |")
    return head + "\n".join(lines) + "\n\n" + beyond_markdown(rows)


def beyond_markdown(rows: list[dict]) -> str:
    """The turned frames' head PSNR by degrees beyond the training range (one row per clip)."""
    names = [f"{lo:g}-{hi:g} deg" if hi < 90 else f">= {lo:g} deg" for lo, hi in BEYOND_BINS]
    head = ("| clip | " + " | ".join(f"head PSNR {n} (frames)" for n in names) + " | corr(beyond, head PSNR) |\n"
            "| --- |" + " --- |" * (len(names) + 1) + "\n")
    lines = []
    for r in rows:
        t = r["turned"]
        if not t.get("available"):
            continue
        g = by_degrees_beyond(t["per_frame"])
        cells = [f"{_f(b['head_psnr'])} ({b['frames']})" for b in g["bins"]]
        lines.append(f"| {r['clip']} | " + " | ".join(cells) + f" | {_f(g['corr'])} |")
    return head + "\n".join(lines) + "\n"


def by_degrees_beyond(per_frame: list[dict]) -> dict:
    """Head PSNR of the turned frames grouped by how far they lie beyond the training range, and
    its correlation with that distance: whether the view (falling with distance) or the avatar's
    held-out quality as a whole (flat) limits the figure.

    Args:
        per_frame: the ``per_frame`` rows of eval's ``turned`` section (``beyond``, ``head_psnr``).
    """
    beyond = np.array([r["beyond"] for r in per_frame], dtype=float)
    head = np.array([r["head_psnr"] for r in per_frame], dtype=float)
    ok = np.isfinite(head)
    beyond, head = beyond[ok], head[ok]
    bins = [{"degrees": [lo, hi], "frames": int(m.sum()), "head_psnr": float(head[m].mean()) if m.any() else None}
            for lo, hi in BEYOND_BINS for m in [(beyond >= lo) & (beyond < hi)]]
    corr = float(np.corrcoef(beyond, head)[0, 1]) if beyond.size > 2 and beyond.std() > 0 else None
    return {"bins": bins, "corr": corr}


def _f(v, digits: int = 2) -> str:
    return "n/a" if v is None else v if isinstance(v, str) else f"{v:.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data",
                    help="the shared data folder (its video/ holds the clips)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/nv_real"), help="work folder (datasets, runs, results)")
    ap.add_argument("--clips", nargs="+", default=list(CLIPS),
                    help="clip names in SHARED/video, with or without .mp4")
    ap.add_argument("--size", type=int, default=256, help="dataset side in pixels")
    ap.add_argument("--holdout-fraction", type=float, default=TURNED_SHARE,
                    help="share of the frames held out as turned (prep's --holdout-fraction, 0.02-0.4)")
    ap.add_argument("--steps", type=int, default=None, help="fit steps (default: the quick preset's)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="fit override KEY=VALUE (repeatable)")
    args = ap.parse_args()
    if not 0.02 <= args.holdout_fraction <= 0.4:  # (NaN fails too)
        print(f"error: --holdout-fraction must lie in 0.02-0.4, not {args.holdout_fraction}", file=sys.stderr)
        return 2
    videos = [args.shared / "video" / f"{name.removesuffix('.mp4')}.mp4" for name in args.clips]
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        print(f"error: {', '.join(missing)} not found; pass --shared with the shared data folder", file=sys.stderr)
        return 2
    args.work = args.work.resolve()  # the commands run from the project's root
    args.work.mkdir(parents=True, exist_ok=True)
    rows = [one_clip(video, args.work, args.size, args.steps, args.sets, args.holdout_fraction) for video in videos]
    from benchmarks._common import machine

    out = {"machine": machine(), "steps": args.steps, "sets": args.sets, "holdout_fraction": args.holdout_fraction,
           "clips": rows}
    (args.work / "novel_view_real.json").write_text(json.dumps(out, indent=1))
    (args.work / "novel_view_real.md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
