"""`talk3d prep` end to end on generated clips (known poses), resuming, and one real clip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from talk3d.camera import camera_angles, project
from talk3d.dataset import TalkingHeadDataset, validate
from talk3d.errors import UserError
from talk3d_prep.pipeline import PrepConfig, run_prep
from tests.test_prep_clips import astronaut_clip, warp_matrix

SIZE = 256


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("prep")
    clip, angles, shifts = astronaut_clip(root / "astro.mp4", n=80)
    manifest = run_prep(clip, root / "data", PrepConfig(size=SIZE))
    return {"root": root, "clip": clip, "angles": angles, "shifts": shifts, "manifest": manifest}


def test_dataset_is_complete_and_valid(synthetic: dict) -> None:
    out = synthetic["root"] / "data"
    m = validate(out)
    assert m.num_frames == 80 and m.size == SIZE and m.train_end == 72
    assert m.stats["tracking_rate"] == 1.0
    ds = TalkingHeadDataset(out)
    assert ds.frame(0).shape == (SIZE, SIZE, 3) and ds.mask(0).shape == (SIZE, SIZE)
    labels = set(np.unique(ds.mask(40)).tolist())
    assert {0, 2} <= labels  # background and head present
    assert ds.audio_feats.shape == (320, 80) and ds.audio_feats.dtype == np.float16
    assert m.has_phonemes and ds.phonemes.shape == (320, 41) and np.all(ds.phonemes.astype(np.float32).sum(1) == 1)
    assert ds.blink.min() >= 0 and ds.blink.max() <= 1
    assert (out / "torso_offsets.npy").is_file() and ds.torso_offsets.shape == (80, 2)
    assert np.isfinite(ds.torso_offsets).all() and np.abs(ds.torso_offsets).max() < 0.25
    for name in ("preview.png", "poses.png", "prep.log"):
        assert (out / name).is_file()
    assert not (out / ".prep").exists()
    # the head mask sits on the tracked face: the nose tip pixel is labelled head
    nose = ds.landmarks[40, 1, :2].astype(int)
    assert ds.mask(40)[nose[1], nose[0]] == 2
    # the written (cropped, padded, scaled) frames line up with the stored landmarks
    from talk3d.face import STABLE_LANDMARKS, FaceTracker

    with FaceTracker(static=True) as tracker:
        for i in (0, 25, 79):
            again = tracker.detect(ds.frame(i))
            assert again is not None
            diff = np.linalg.norm(again[STABLE_LANDMARKS, :2] - ds.landmarks[i][STABLE_LANDMARKS, :2], axis=1)
            assert np.median(diff) < 1.5, (i, np.median(diff))


def test_recovers_known_roll_and_translation(synthetic: dict) -> None:
    m = synthetic["manifest"]
    out = synthetic["root"] / "data"
    poses = torch.from_numpy(np.load(out / "poses.npy")).double()
    k = torch.tensor(m.intrinsics, dtype=torch.float64)
    roll = camera_angles(poses)[:, 2].numpy()
    # an image rotated counter-clockwise by a means the camera rolled by -a about its axis
    err_roll = (roll - roll[0]) + (synthetic["angles"] - synthetic["angles"][0])
    print("roll err max", np.abs(err_roll).max(), "roll range", np.ptp(roll))
    assert np.abs(err_roll).max() < 1.0, np.abs(err_roll).max()
    # projected head centre moves with the known 2D warp of the source frames
    uv, _ = project(torch.zeros(poses.shape[0], 1, 3, dtype=torch.float64), poses, k, SIZE)
    uv = uv[:, 0].numpy()
    x0, y0, side = m.crop_box
    s = SIZE / side
    src0 = uv[0] / s + np.array([x0, y0])
    a0 = np.vstack([warp_matrix(synthetic["angles"][0], synthetic["shifts"][0], 240), [0, 0, 1]])
    base = np.linalg.solve(a0, np.append(src0, 1.0))  # head centre in the unwarped photo
    errs = []
    for i, (a, sh) in enumerate(zip(synthetic["angles"], synthetic["shifts"], strict=True)):
        expected = (warp_matrix(a, sh, 240) @ base - np.array([x0, y0])) * s
        errs.append(np.linalg.norm(expected - uv[i]))
    print("translation err max px", max(errs))
    assert max(errs) < 2.0, max(errs)
    assert m.stats["reprojection_rms_px"] < 2.0


def test_existing_dataset_is_refused(synthetic: dict) -> None:
    out = synthetic["root"] / "data"
    with pytest.raises(UserError, match="already holds a prepared dataset"):
        run_prep(synthetic["clip"], out, PrepConfig(size=SIZE))


def test_interrupted_prep_resumes(synthetic: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import talk3d_prep.pipeline as pipeline

    out = synthetic["root"] / "resume"

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_step_audio", boom)
    with pytest.raises(KeyboardInterrupt):
        run_prep(synthetic["clip"], out, PrepConfig(size=SIZE))
    # the unfinished dataset is built in .prep/dataset, out of the way of the output folder
    assert (out / ".prep" / "state.json").is_file() and (out / ".prep" / "dataset" / "poses.npy").is_file()
    assert not (out / "poses.npy").exists()
    assert not (out / "manifest.json").exists()
    monkeypatch.undo()
    # a different configuration does not silently mix with the unfinished one
    with pytest.raises(UserError, match="other settings"):
        run_prep(synthetic["clip"], out, PrepConfig(size=SIZE, fps=30))
    # resuming does not track again
    calls = []
    orig = pipeline.track_mod.track_frames
    monkeypatch.setattr(pipeline.track_mod, "track_frames", lambda *a, **k: calls.append(1) or orig(*a, **k))
    m = run_prep(synthetic["clip"], out, PrepConfig(size=SIZE))
    assert calls == [] and m.num_frames == 80
    assert "resuming" in (out / "prep.log").read_text()
    np.testing.assert_allclose(np.load(out / "poses.npy"), np.load(synthetic["root"] / "data" / "poses.npy"), atol=1e-5)


def test_audio_override_and_cli(synthetic: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from talk3d_cli.main import app
    from tests.test_prep_clips import write_tone

    wav = write_tone(tmp_path / "speech.wav", 2.0)  # shorter than the video: padded, with a warning
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["prep", str(synthetic["clip"]), "-o", str(tmp_path / "nan"), "--holdout-fraction",
                                   "nan"])
    assert res.exit_code == 2 and "--holdout-fraction" in res.output and "Traceback" not in res.output  # NaN: refused
    res = CliRunner().invoke(app, ["prep", str(synthetic["clip"]), "-o", str(out), "--size", "128",
                                   "--audio", str(wav), "--holdout-fraction", "0.2", "--quiet"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["size"] == 128 and m["prep_settings"]["audio"] == str(wav)
    assert m["prep_settings"]["val_fraction"] == 0.2 and m["train_end"] == m["num_frames"] - round(0.2 * m["num_frames"])
    feats = np.load(out / "audio_feats.npy")
    assert feats.shape[0] == 320  # padded to the video length (3.2 s)
    assert feats[250:].astype(np.float32).max() < -10  # silence after the 2 s of audio
    from talk3d.model.lip_prior import driving_phones
    from talk3d.phonemes import PHONES
    from talk3d.render.audio_drive import load_driving_audio

    # render decodes exactly the phones prep stored for the same audio
    phones = np.load(out / "phonemes.npy").astype(np.float32)
    assert phones.shape == (320, len(PHONES))
    again = driving_phones(object(), load_driving_audio(out / "audio.wav").samples)
    np.testing.assert_array_equal(again, phones)
    res = CliRunner().invoke(app, ["prep", str(synthetic["clip"]), "-o", str(out)])
    assert res.exit_code == 1 and "--force" in res.output
    res = CliRunner().invoke(app, ["prep", str(synthetic["clip"]), "-o", str(out), "--size", "64", "--force", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "manifest.json").read_text())["size"] == 64


@pytest.mark.slow
def test_real_clip(shared_data: Path, tmp_path: Path) -> None:
    m = run_prep(shared_data / "video" / "may_512_5s.mp4", tmp_path / "may", PrepConfig(size=256))
    assert m.num_frames == 125 and m.stats["tracking_rate"] == 1.0
    assert m.stats["reprojection_rms_px"] < 2.0
