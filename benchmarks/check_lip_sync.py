"""Does the audio drive the mouth? Two checks on a fitted avatar, with the head pose held fixed
(so a moving head cannot make the mouth look as if it moved):

1. swap: render one frame's pose with the audio windows of the ``--count`` most open and the
   ``--count`` most closed training frames (by the tracked mouth opening); report the rendered
   mouth opening (FaceMesh, ``talk3d.face.landmarks.mouth_opening``) of each group.
2. self-drive: render every frame of the dataset with its own audio at the mean pose and no
   blinks; report the correlation of the rendered and the tracked mouth opening on the
   training and on the held-out frames, and the rendered opening's standard deviation.

    python benchmarks/check_lip_sync.py RUN_DIR [--out lip_sync.json]

Needs the run's dataset folder (for the tracked landmarks).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def _openings(images: torch.Tensor, static: bool) -> np.ndarray:
    """Mouth opening ``(B,)`` of rendered ``images (B, 3, H, W)`` in [0, 1] (NaN where no face)."""
    from talk3d.eval.tracking import detect_sequence
    from talk3d.face.landmarks import mouth_opening  # the measure used for the tracked video

    frames = (images.clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).cpu().numpy()
    landmarks, _ = detect_sequence(frames, static=static)
    return mouth_opening(landmarks)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    ap.add_argument("--count", type=int, default=5, help="frames per group in the swap check")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--swap-only", action="store_true", help="skip the (slower) self-drive check")
    args = ap.parse_args()

    from talk3d.face.landmarks import mouth_opening
    from talk3d.fit.checkpoint import load_run
    from talk3d.model.drive import DrivingClip, forward_frames
    from talk3d.render import paths

    run = load_run(args.run_dir, "cpu")
    m, cfg, av = run.manifest, run.model_config, run.avatar
    tracked = mouth_opening(np.load(Path(run.dataset_dir) / "landmarks.npy"))
    poses = torch.as_tensor(run.poses, dtype=torch.float32)
    fixed = paths.mean_pose(poses)
    k = torch.as_tensor(np.asarray(m.intrinsics, np.float32))
    no_blink = np.zeros(m.num_frames, np.float32)
    feats = np.asarray(run.audio_feats, np.float32)

    # at the mean pose, eyes open, torso at rest: only the audio moves the face
    clip = DrivingClip.from_arrays(cfg, feats, m.audio_feature_rate, m.fps, no_blink,
                                   fixed.expand(m.num_frames, 4, 4))

    def render(frames: np.ndarray) -> torch.Tensor:
        return torch.cat([fb.out["rgb"] for fb in forward_frames(av, clip, frames, None, k,
                                                                 batch_size=args.batch)])

    train = np.asarray(m.train_frames)
    order = train[np.argsort(tracked[train])]
    closed, opened = order[:args.count], order[-args.count:]
    res: dict[str, object] = {"run": str(args.run_dir)}
    o_open, o_closed = _openings(render(opened), static=True), _openings(render(closed), static=True)
    res["swap"] = {"tracked_open": float(tracked[opened].mean()), "tracked_closed": float(tracked[closed].mean()),
                   "rendered_open": float(np.nanmean(o_open)), "rendered_closed": float(np.nanmean(o_closed))}
    if args.swap_only:
        print(json.dumps(res, indent=1))
        return
    rendered = _openings(render(np.arange(m.num_frames)), static=False)
    ok = np.isfinite(rendered)
    val = np.zeros(m.num_frames, bool)
    val[np.asarray(m.val_frames)] = True

    def corr(sel: np.ndarray) -> float:
        sel = sel & ok
        return float(np.corrcoef(rendered[sel], tracked[sel])[0, 1]) if sel.sum() > 2 else float("nan")

    res["self_drive"] = {"corr_train": corr(~val), "corr_val": corr(val), "rendered_std": float(np.nanstd(rendered)),
                         "tracked_std": float(tracked.std()), "detected": float(ok.mean())}
    print(json.dumps(res, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
