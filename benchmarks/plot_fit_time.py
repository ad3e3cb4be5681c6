"""Held-out PSNR against wall time for one or more fits (e.g. the old and the new quick preset).

Reads each run's ``metrics.jsonl``. Wall time is the ``wall_s`` the fit records (session 7 on);
for runs written before that it is rebuilt from the training lines' ``sec_per_step`` (summed
over each logging interval), which leaves out validation and checkpoint writes (a few % on the
quick preset). The last point of each run is its final validation (all held-out frames, up to
64); the others use 4 frames, so they scatter more.

    python3 benchmarks/plot_fit_time.py old=RUN_A new=RUN_B -o docs/images/fit_psnr_vs_time.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curve(run: Path) -> tuple[list[float], list[float], list[int]]:
    """``(minutes, held-out PSNR, step)`` of the run's validation records."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    elapsed, last_step, minutes, psnr, steps = 0.0, 0, [], [], []
    for rec in records:
        if "sec_per_step" in rec:
            elapsed += rec["sec_per_step"] * (rec["step"] - last_step)
            last_step = rec["step"]
        if "val_psnr" in rec:
            seconds = rec.get("wall_s", elapsed)
            minutes.append(seconds / 60.0)
            psnr.append(rec["val_psnr"])
            steps.append(rec["step"])
    return minutes, psnr, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    ap.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    for item in args.runs:
        label, _, folder = item.partition("=")
        minutes, psnr, steps = curve(Path(folder))
        line = ax.plot(minutes, psnr, "o-", ms=3, label=f"{label} ({steps[-1]} steps, {minutes[-1]:.1f} min)")[0]
        ax.plot(minutes[-1:], psnr[-1:], "s", ms=7, color=line.get_color())
        print(f"{label}: final {psnr[-1]:.2f} dB at {minutes[-1]:.1f} min ({steps[-1]} steps)")
    ax.set_xlabel("wall time (minutes, 2 CPU cores)")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("quick preset on the Obama clip (256^2): squares = final validation", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)


if __name__ == "__main__":
    main()
