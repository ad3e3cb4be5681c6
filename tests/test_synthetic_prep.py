"""Prep accuracy on a synthetic clip with known head poses (slow: prep runs for real)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talk3d.camera import camera_angles
from talk3d.synthetic import SyntheticConfig, make_clip


@pytest.mark.slow
def test_prep_recovers_yaw_pitch_roll_within_2_degrees(tmp_path):
    pipeline = pytest.importorskip("data_prep.pipeline")
    if not hasattr(pipeline, "run_prep"):
        pytest.skip("data_prep.pipeline.run_prep is not available yet")
    cfg = SyntheticConfig(seconds=4.0, size=256, seed=1, yaw_amplitude=20.0, pitch_amplitude=8.0,
                          roll_amplitude=5.0, extra_yaws=(), write_masks=False)
    clip = make_clip(tmp_path / "clip", cfg)
    prep_cfg = pipeline.PrepConfig(size=256)
    pipeline.run_prep(clip.video, tmp_path / "data", prep_cfg)
    est = camera_angles(torch.from_numpy(np.load(tmp_path / "data" / "poses.npy"))).numpy()
    truth = clip.angles()
    assert est.shape == truth.shape
    # prep's canonical frame is video-specific (aligned to the mean face): find the constant
    # world rotation W between the two frames (best fit of R_est ~ W R_true) and compare the
    # angles after applying it
    r_est = np.load(tmp_path / "data" / "poses.npy")[:, :3, :3].astype(np.float64)
    r_true = clip.poses()[:, :3, :3].astype(np.float64)
    u, _, vt = np.linalg.svd(np.einsum("nij,nkj->ik", r_est, r_true))
    w = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    aligned = np.eye(4)[None].repeat(len(r_true), 0)
    aligned[:, :3, :3] = w @ r_true
    ref = camera_angles(torch.from_numpy(aligned).float()).numpy()
    err = np.abs(est - ref)
    mean, p90, worst = err.mean(0), np.percentile(err, 90, axis=0), err.max(0)
    summary = (f"yaw/pitch/roll |error| mean {mean.round(2).tolist()}, p90 {p90.round(2).tolist()}, "
               f"max {worst.round(2).tolist()} deg")
    # Measured (seed 1): mean 0.55/0.79/0.54, p90 ~0.9/1.6/1.0, max 1.13/2.97/1.17. The pitch
    # maximum comes from the raw landmarks on wide-open-mouth and end-of-clip frames (mediapipe
    # couples jaw drop into head pitch), not from the smoothing; see docs/synthetic.md.
    assert (mean < 1.0).all(), summary
    assert (p90 < 2.0).all(), summary
    assert (worst < 4.0).all(), summary
