"""Prep's head-pose accuracy on synthetic clips with known poses (issue 3).

For each seed: a synthetic clip (4 s at 256^2, yaw/pitch/roll amplitudes 20/8/5 degrees) ->
``run_prep`` with landmark-only poses and with the photometric refinement, each with the
clip's focal given (``--focal-35mm``) and with prep's default focal -> per-axis mean, p90
and worst |error| after removing the constant rotation between the canonical frames, plus
prep's pose timings.

    python3 benchmarks/check_pose_accuracy.py --work /tmp/pose_acc --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = {  # name: (photometric_poses, focal given)
    "landmark_focal": (False, True),
    "refined_focal": (True, True),
    "landmark_default": (False, False),
    "refined_default": (True, False),
}


def measure(work: Path, seed: int, variants: list[str], seconds: float = 4.0) -> dict[str, Any]:
    """Errors of each prep variant on one synthetic clip."""
    from talk3d.dataset import prepared_with
    from talk3d.face.pose import angle_errors
    from talk3d.synthetic import SyntheticConfig, make_clip
    from talk3d_prep.pipeline import PrepConfig, run_prep

    cfg = SyntheticConfig(seconds=seconds, size=256, seed=seed, yaw_amplitude=20.0, pitch_amplitude=8.0,
                          roll_amplitude=5.0, extra_yaws=(), write_masks=False)
    clip = make_clip(work / f"seed{seed}" / "clip", cfg, replace_stale=True)
    out: dict[str, Any] = {}
    for name in variants:
        photometric, focal_given = VARIANTS[name]
        prep_cfg = PrepConfig(size=256, photometric_poses=photometric,
                              focal_35mm=cfg.focal_35mm if focal_given else None)
        data = work / f"seed{seed}" / name
        if not prepared_with(data, prep_cfg.settings()):
            run_prep(clip.video, data, prep_cfg, force=data.exists())
        stats = json.loads((data / "manifest.json").read_text())["stats"]
        err = angle_errors(np.load(data / "poses.npy"), clip.poses())
        out[name] = {
            "mean": err.mean(0).round(2).tolist(), "p90": np.percentile(err, 90, axis=0).round(2).tolist(),
            "max": err.max(0).round(2).tolist(),
            "poses_s": round(stats.get("poses_s", 0.0) + stats.get("pose_refine_s", 0.0), 1),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("pose_accuracy_work"), help="clips and datasets go here")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="synthetic clip seeds")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="prep variants")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    results = {str(seed): measure(args.work, seed, args.variants) for seed in args.seeds}
    print(f"{'seed':>4} {'variant':18s} {'mean yaw/pitch/roll':>22s} {'p90':>20s} {'max':>20s} {'pose s':>7s}")
    for seed, per in results.items():
        for name, r in per.items():
            fmt = "/".join
            print(f"{seed:>4} {name:18s} {fmt(f'{v:.2f}' for v in r['mean']):>22s} "
                  f"{fmt(f'{v:.2f}' for v in r['p90']):>20s} {fmt(f'{v:.2f}' for v in r['max']):>20s} "
                  f"{r['poses_s']:7.1f}")
    if args.json is not None:
        from talk3d.io import write_json

        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
