"""Prep accuracy on a synthetic clip with known head poses (slow: prep runs for real)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from talk3d.face.pose import angle_errors
from talk3d.synthetic import SyntheticConfig, make_clip


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 3])
def test_prep_recovers_yaw_pitch_roll_within_2_degrees(tmp_path, seed):
    pipeline = pytest.importorskip("talk3d_prep.pipeline")
    if not hasattr(pipeline, "run_prep"):
        pytest.skip("talk3d_prep.pipeline.run_prep is not available yet")
    cfg = SyntheticConfig(seconds=4.0, size=256, seed=seed, yaw_amplitude=20.0, pitch_amplitude=8.0,
                          roll_amplitude=5.0, extra_yaws=(), write_masks=False)
    clip = make_clip(tmp_path / "clip", cfg)
    # the camera's focal is known here, as a user with the phone's EXIF knows it (--focal-35mm)
    prep_cfg = pipeline.PrepConfig(size=256, focal_35mm=cfg.focal_35mm)
    pipeline.run_prep(clip.video, tmp_path / "data", prep_cfg)
    truth = clip.poses()
    assert np.load(tmp_path / "data" / "poses.npy").shape == truth.shape
    err = angle_errors(np.load(tmp_path / "data" / "poses.npy"), truth)
    err = err.astype(np.float64)
    mean, p90, worst = err.mean(0), np.percentile(err, 90, axis=0), err.max(0)
    summary = (f"yaw/pitch/roll |error| mean {mean.round(2).tolist()}, p90 {p90.round(2).tolist()}, "
               f"max {worst.round(2).tolist()} deg")
    # Measured (landmark poses refined photometrically): max 0.48/0.93/0.24 (seed 1) and
    # 0.67/0.80/0.29 (seed 3) degrees. Landmark poses alone reach 3.2 and 4.0 degrees of pitch:
    # FaceMesh under-reports pitch on this head (docs/synthetic.md).
    assert (mean < 1.0).all(), summary
    assert (p90 < 1.5).all(), summary
    assert (worst < 2.0).all(), summary
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["stats"]["photometric_rms_after"] < manifest["stats"]["photometric_rms_before"], manifest["stats"]
    # --focal-35mm reached the dataset camera: the clip's focal in pixels over prep's crop side
    side = manifest["crop_box"][2]
    assert manifest["intrinsics"][0][0] == pytest.approx(cfg.focal * cfg.size / side, rel=1e-4)

    # The estimator itself, fed the clip's exact landmark projections instead of FaceMesh's
    # (same canonical shape and camera as prep, no smoothing), is far more accurate: the
    # errors above come from the detector. Measured (seed 1): mean 0.53/0.12/0.15, max
    # 0.82/0.48/0.25 deg (yaw keeps a small offset from the FaceMesh-built canonical shape).
    from talk3d.face.pose import estimate_pose

    m = json.loads((tmp_path / "data" / "manifest.json").read_text())
    x0, y0, side = m["crop_box"]
    exact = np.load(tmp_path / "data" / "landmarks.npy").copy()
    exact[..., :2] = (clip.landmarks() - np.array([x0, y0], np.float32)) * (m["size"] / side)
    c2w = estimate_pose(exact, np.load(tmp_path / "data" / "canonical_landmarks.npy"), np.array(m["intrinsics"]),
                        m["size"])
    err_exact = angle_errors(c2w, truth)
    exact_summary = f"exact landmarks: mean {err_exact.mean(0).round(2).tolist()}, max {err_exact.max(0).round(2).tolist()}"
    print(summary, "|", exact_summary)
    assert (err_exact[:, 1:].max(0) < 1.0).all(), exact_summary  # pitch and roll
    assert err_exact[:, 0].max() < 1.5, exact_summary
