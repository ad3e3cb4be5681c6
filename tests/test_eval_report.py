"""Report generation of ``talk3d eval`` on a tiny dataset, and the face-tracking checks.

Until ``tests/tiny_data.make_tiny_run`` can fit a model, the report test uses a stand-in
driver that "renders" the dataset's own frames (so the self-driven figures are known:
PSNR inf, SSIM 1) and shifts them sideways for other yaw angles.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from talk3d.dataset import TalkingHeadDataset
from talk3d.errors import UserError
from talk3d.eval import metrics
from talk3d.eval.driver import DrivingSequence, Rendered
from talk3d.eval.report import EvalConfig, evaluate
from talk3d.eval.tracking import angle_errors, detect_sequence, pnp_angles
from tests.tiny_data import make_tiny_dataset


class EchoDriver:
    """Stand-in for RunDriver: returns ground-truth frames (shifted by yaw/10 px)."""

    def __init__(self, root: Path):
        self.ds = TalkingHeadDataset(root)
        m = self.ds.manifest
        self.manifest, self.size, self.fps = m, m.size, m.fps
        self.poses, self.blink = np.asarray(self.ds.poses), np.asarray(self.ds.blink)
        self.audio_feats = np.asarray(self.ds.audio_feats, dtype=np.float32)
        self.phones = None
        self.feature_rate, self.intrinsics = m.audio_feature_rate, self.ds.intrinsics
        self.dataset_dir, self.step, self.device = root, 0, "cpu"
        self.torso_offsets = np.zeros((m.num_frames, 2), np.float32)
        self.calls: list[tuple[float, float, int]] = []
        self.posed: list[np.ndarray] = []

    def driving_sequence(self, audio_path, max_seconds):
        from talk3d.audio import load_audio_features

        audio, feats = load_audio_features(audio_path)
        n = int(min(len(audio) / 16000, max_seconds) * self.fps)
        src = np.arange(n) % self.manifest.train_end
        return DrivingSequence(audio=audio, features=feats, feature_rate=100.0, blink=self.blink[src],
                               poses=self.poses[src], torso=self.torso_offsets[src])

    def render(self, audio_feats, blink, poses, frame_indices, yaw=0.0, pitch=0.0, batch_size=4, torso=None, phones=None):
        idx = np.asarray(frame_indices)
        self.calls.append((yaw, pitch, len(idx)))
        self.posed.append(np.asarray(poses)[idx])
        for s in range(0, len(idx), batch_size):
            sel = idx[s:s + batch_size] % self.manifest.num_frames
            rgb = np.stack([np.roll(self.ds.frame(int(i)), int(yaw / 10), axis=1) for i in sel])
            depth = np.full((len(sel), 8, 8), 4.0, np.float32)
            yield Rendered(rgb=rgb, depth=depth, person=np.ones(rgb.shape[:3], np.float32))


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    return make_tiny_dataset(tmp_path / "data", num_frames=20, size=48)


def test_report_on_echo_driver(tiny: Path, tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 1.0 / (s + 1), "psnr": 10 + s})
                                                 for s in range(5)) + "\n")
    driver = EchoDriver(tiny)
    cfg = EvalConfig(audio=[str(tiny / "audio.wav")], max_val_frames=4, view_frames=2, max_cross_seconds=0.4,
                     speed_frames=2, batch_size=2, vad="energy")
    report = evaluate(run, cfg, driver=driver)
    out = run / "eval"
    for name in ("report.json", "report.md", "views.png", "mouth.png", "training.png", "side_by_side.mp4",
                 "eval.log"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    sd = report["self_driven"]
    assert sd["frames"] == 2  # the tiny dataset holds 2 held-out frames
    assert math.isinf(sd["psnr"]) and math.isinf(sd["mouth_psnr"])
    assert sd["ssim"] == pytest.approx(1.0, abs=1e-5)
    # the audio-alone lip check rendered the held-out frames at one (the mean) pose
    assert "mouth_open_corr_fixed_pose" in sd and "mouth_open_std_ratio_fixed_pose" in sd
    still = [p for p in driver.posed if len(p) == 2 and np.allclose(p, p[:1])]
    assert still and not np.allclose(still[0][0], driver.poses[sd["first_frame"]])
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["self_driven"]["psnr"] == "inf"
    assert [(r["yaw"], r["pitch"]) for r in on_disk["novel_views"]] == [
        (-30.0, 0.0), (-15.0, 0.0), (15.0, 0.0), (30.0, 0.0), (0.0, -15.0), (0.0, 15.0)]
    assert {(c[0], c[1]) for c in driver.calls} >= {(30.0, 0.0), (0.0, -15.0)}
    cross = report["cross_driven"][0]
    assert cross["frames"] == 10 and cross["vad"] == "energy"
    assert 0.0 <= cross["speech_fraction"] <= 1.0
    assert report["speed"]["fps"] > 0
    assert report["training"]["plotted"] == ["loss", "psnr"]
    md = (out / "report.md").read_text()
    assert "| PSNR (dB) | inf |" in md and "Novel views" in md and "audio.wav" in md
    assert "head held still (audio alone)" in md
    with pytest.raises(UserError, match="--force"):
        evaluate(run, cfg, driver=driver)
    cfg.force = True
    cfg.audio = [str(tmp_path / "missing.wav")]
    with pytest.raises(UserError, match="does not exist"):
        evaluate(run, cfg, driver=driver)


def test_pnp_recovers_dataset_yaw(tiny: Path):
    ds = TalkingHeadDataset(tiny)
    from talk3d.camera import camera_angles

    measured = pnp_angles(ds.landmarks, ds.canonical_landmarks, ds.intrinsics, ds.manifest.size)
    expected = camera_angles(torch.from_numpy(np.asarray(ds.poses))).numpy()
    assert np.abs(expected[:, 0]).max() > 3.0  # the tiny camera really orbits
    assert angle_errors(measured, expected).max() < 0.01
    assert angle_errors(np.array([179.0]), np.array([-179.0]))[0] == pytest.approx(2.0)


def test_lmd_of_shifted_real_face_is_the_shift():
    """mediapipe on a real portrait and a copy shifted by 4 px: LMD = 4 px scaled to 512."""
    from skimage.data import astronaut

    img = astronaut()[20:276, 110:366]  # 256x256 around the face
    shifted = np.zeros_like(img)
    shifted[:, 4:] = img[:, :-4]
    lm, ok = detect_sequence([img, shifted], static=True)
    assert ok.all()
    lmd = metrics.landmark_distance(lm[1:], lm[:1], size=256)
    assert lmd == pytest.approx(8.0, abs=1.0)
    assert metrics.landmark_distance(lm[1:], lm[:1], size=256, indices=metrics.LIP_INDICES) == pytest.approx(
        8.0, abs=1.0)


@pytest.mark.slow
def test_evaluate_real_tiny_run(tmp_path: Path):
    """The real RunDriver on a 2-step tiny avatar: figures are finite and consistent."""
    from tests.tiny_data import make_tiny_run

    run = make_tiny_run(tmp_path)
    cfg = EvalConfig(views=[(30.0, 0.0)], view_frames=1, max_val_frames=2, speed_frames=1, video=False,
                     device="cpu")
    report = evaluate(run, cfg)
    sd = report["self_driven"]
    assert sd["frames"] == 2 and 0.0 < sd["psnr"] < 60.0 and -1.0 <= sd["ssim"] <= 1.0
    assert report["novel_views"][0]["yaw"] == 30.0
    assert report["speed"]["fps"] > 0 and report["step"] == 2
    assert (run / "eval" / "report.md").is_file() and not (run / "eval" / "side_by_side.mp4").exists()


class PoseEchoDriver(EchoDriver):
    """Renders the dataset frame whose tracked pose is nearest the requested one (a perfect
    avatar at seen poses): the nearest-training-pose baseline then shows another frame."""

    def render(self, audio_feats, blink, poses, frame_indices, yaw=0.0, pitch=0.0, batch_size=4, torso=None, phones=None):
        idx = np.asarray(frame_indices)
        wanted = np.asarray(poses)[idx]
        nearest = [int(i) if np.array_equal(self.poses[i], p) else int(np.abs(self.poses - p).sum((1, 2)).argmin())
                   for i, p in zip(idx, wanted, strict=True)]
        for s in range(0, len(idx), batch_size):
            sel = nearest[s:s + batch_size]
            rgb = np.stack([self.ds.frame(i) for i in sel])
            yield Rendered(rgb=rgb, depth=np.full((len(sel), 8, 8), 4.0, np.float32),
                           person=np.ones(rgb.shape[:3], np.float32))


def test_turned_split_report(tmp_path: Path):
    from talk3d.camera import camera_angles
    from talk3d.dataset import read_manifest, write_manifest
    from talk3d_prep.split import turned_split

    data = make_tiny_dataset(tmp_path / "data", num_frames=60, size=48)
    m = read_manifest(data)
    yaw = camera_angles(torch.from_numpy(np.asarray(TalkingHeadDataset(data).poses))).numpy()[:, 0]
    split = turned_split(yaw, m.fps, min_seconds=0.1, margin_seconds=0.05)
    m.train_end, m.holdout, m.val_runs, m.margin_runs = split.train_end, "turned", split.val_runs, split.margin_runs
    write_manifest(data, m)
    run = tmp_path / "run"
    run.mkdir()
    cfg = EvalConfig(max_val_frames=4, view_frames=2, speed_frames=2, batch_size=4, video=False)
    report = evaluate(run, cfg, driver=PoseEchoDriver(data))
    tv = report["turned"]
    assert tv["available"] and tv["frames"] == len(m.val_frames)
    assert math.isinf(tv["render"]["psnr"])                      # its own pose: the frame itself
    assert tv["baseline"]["psnr"] < 60                            # the nearest training pose: another frame
    assert tv["degrees_beyond_max"] > 0.5 and tv["train_yaw"][1] < tv["held_out_yaw"][1] + 1e-6
    held = set(m.val_frames.tolist())
    assert all(p["frame"] in held for p in tv["per_frame"])
    assert {"lmd_face", "identity_distance"} <= set(tv["render"]) and "LMD face" in (run / "eval" / "report.md").read_text()
    for name in ("turned.png", "views_frames.png"):
        assert (run / "eval" / name).stat().st_size > 1000
    assert "Turned held-out frames" in (run / "eval" / "report.md").read_text()


def test_turned_face_figures_measure_against_the_real_frame(monkeypatch: pytest.MonkeyPatch):
    from talk3d.eval import dlib_face, turned

    frames = np.zeros((3, 64, 64, 3), np.uint8)
    truth_lm = np.random.default_rng(0).uniform(10, 50, (3, 478, 3)).astype(np.float32)
    truth = turned._Faces(truth_lm, np.array([True, True, True]), [np.zeros(128)] * 3)
    moved = turned._Faces(truth_lm + np.array([3.0, 4.0, 0.0], np.float32), np.array([True, True, False]),
                          [np.full(128, 0.05), np.full(128, 0.05), None])
    monkeypatch.setattr(turned, "_faces", lambda rgb: moved)
    got = turned._image_figures(frames, frames, np.ones((3, 64, 64), bool), truth)
    assert got["lmd_face"] == pytest.approx(5.0 * 512 / 64) and got["lmd_mouth"] == pytest.approx(5.0 * 512 / 64)
    assert got["identity_distance"] == pytest.approx(0.05 * np.sqrt(128)) and got["face_detected"] == pytest.approx(2 / 3)
    no_dlib = turned._Faces(moved.landmarks, moved.found, None)
    assert turned._identity_distance(no_dlib, truth) == dlib_face.NOT_AVAILABLE
