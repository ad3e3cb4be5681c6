"""Phone rows (pocketsphinx) and the phonetic lip prior: alignment with the log-mel rows,
the prior's behaviour, its calibration, its file, and fit -> run -> render using it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from talk3d.audio import compute_logmel, num_feature_frames
from talk3d.errors import CheckpointError, UserError
from talk3d.fit.checkpoint import read_lip_prior, write_lip_prior
from talk3d.model.audio_encoder import normalize_floor
from talk3d.model.config import ModelConfig
from talk3d.model.drive import DrivingClip
from talk3d.model.lip_prior import (
    LEAD_SECONDS,
    QUANTILES,
    LipPrior,
    at_frames,
    prior_rows,
)
from talk3d.phonemes import NOISE, PHONES, SIL, phone_rows, segments_to_rows


def _one_hot(names: list[str]) -> np.ndarray:
    rows = np.zeros((len(names), len(PHONES)), np.float32)
    rows[np.arange(len(names)), [PHONES.index(n) for n in names]] = 1.0
    return rows


def test_segments_land_one_row_later_and_fillers_are_noise():
    rows = segments_to_rows([("AA", 2, 4), ("+NSN+", 6, 6), ("M", 8, 20)], 12)
    assert rows.shape == (12, len(PHONES)) and np.all(rows.sum(1) == 1)
    names = [PHONES[i] for i in rows.argmax(1)]
    # pocketsphinx frame i is centred on feature row i + 1; rows no segment covers are silence
    assert names[:3] == ["SIL"] * 3 and names[3:6] == ["AA"] * 3 and names[6] == "SIL"
    assert names[7] == "NOISE" and rows[7, NOISE] == 1 and names[9:] == ["M"] * 3


def test_phone_rows_match_the_logmel_rows_and_find_speech_sounds(shared_data: Path):
    from talk3d.media import read_audio

    audio = read_audio(shared_data / "audio" / "zozo_en_11s.wav", 16000)
    rows = phone_rows(audio)
    assert rows.shape == (compute_logmel(audio).shape[0], len(PHONES)) == (num_feature_frames(audio.size), 41)
    assert np.all(rows.sum(1) == 1)
    used = {PHONES[i] for i in np.unique(rows.argmax(1))}
    assert len(used) > 20 and {"AA", "M", "S"} <= used  # 11 s of English speech
    assert rows[:, SIL].mean() < 0.5


def test_phone_rows_of_silence_and_of_nothing():
    assert phone_rows(np.zeros(0, np.float32)).shape == (0, len(PHONES))
    rows = phone_rows(0.001 * np.random.default_rng(0).standard_normal(16000).astype(np.float32))
    assert rows.shape == (100, len(PHONES)) and rows[:, [SIL, NOISE]].sum() == 100  # room tone


def test_digital_silence_keeps_the_mouth_closed_whatever_phone_is_named():
    zeros = np.zeros(8000, np.float32)
    feats = normalize_floor(np.concatenate([compute_logmel(zeros), np.full((50, 80), 2.0, np.float32)])).numpy()
    # the phone loop names a phone even in digital silence (here: the most open one)
    prior = prior_rows(_one_hot(["AA"] * 100), feats)
    assert prior[:40].max() == pytest.approx(0.0, abs=1e-6) and prior[60:].min() > 0.5


def test_prior_of_clips_shorter_than_its_smoothing_keeps_their_length():
    for rows in (1, 3, 8):
        prior = prior_rows(_one_hot(["AA"] * rows), np.ones((rows, 80), np.float32))
        assert prior.shape == (rows,) and np.allclose(prior, prior[0])


def test_prior_opens_for_open_vowels_closes_for_bilabials_and_silence():
    names = ["SIL"] * 20 + ["AA"] * 20 + ["M"] * 20 + ["IY"] * 20
    speech = np.ones((80, 80), np.float32)
    prior = prior_rows(_one_hot(names), speech)
    assert prior.shape == (80,)
    assert prior[30] > prior[70] > prior[5] > prior[50]  # AA wide, IY less, silence's level, M shut
    assert prior[50] == pytest.approx(0.0, abs=1e-6)
    loud = prior_rows(_one_hot(names), 2 * speech)
    shut = prior == 0
    assert np.all(loud[~shut] > prior[~shut]) and np.all(loud[shut] == 0)  # the level adds opening, not in an m
    with pytest.raises(ValueError):
        prior_rows(_one_hot(names), speech[:10])


def test_frames_read_the_prior_ahead_of_the_sound():
    rows = np.zeros(200, np.float32)
    rows[100:] = 1.0  # the sound starts at 1.0 s
    fps = 25.0
    got = at_frames(rows, 100.0, fps, np.arange(50))
    # frame f reads row ((f + 0.5) / fps + LEAD) * 100: the mouth opens LEAD_SECONDS before the sound
    times = (np.arange(50) + 0.5) / fps + LEAD_SECONDS
    np.testing.assert_allclose(got, np.clip((times - 0.99) * 100, 0, 1), atol=1e-5)
    assert at_frames(np.zeros(0), 100.0, fps, np.arange(3)).shape == (3,)


def _calibration(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray, LipPrior]:
    rng = np.random.default_rng(seed)
    opening = np.clip(rng.gamma(2.0, 0.05, n), 0, None)
    prior = 3.0 * opening ** 2 + 0.01 * rng.standard_normal(n)  # monotone, not linear
    direction = rng.standard_normal(8)
    codes = (opening - opening.mean())[:, None] * direction[None] + 0.2
    return prior, opening, codes, LipPrior.fit(prior, opening, codes)


def test_calibration_maps_the_prior_onto_this_persons_opening_and_code():
    prior, opening, codes, lp = _calibration()
    got = lp.opening(prior)
    # the quantile map turns the prior's distribution into the person's opening distribution
    assert np.percentile(got, 10) == pytest.approx(np.percentile(opening, 10), rel=0.1)
    assert np.percentile(got, 90) == pytest.approx(np.percentile(opening, 90), rel=0.1)
    assert np.corrcoef(got, opening)[0, 1] > 0.95
    assert np.all(np.diff(lp.opening(np.linspace(-1, 5, 50))) >= 0)  # monotone, flat beyond the ends
    out = lp.codes(prior)
    assert out.shape == (len(prior), 8) and out.dtype == np.float32
    assert np.corrcoef(out[:, 0], codes[:, 0])[0, 1] > 0.95
    assert np.abs(out - codes).mean() < 0.25 * codes.std(0).mean()


def test_lip_prior_file_round_trip_and_bad_files(tmp_path: Path):
    *_, lp = _calibration()
    write_lip_prior(tmp_path, lp)
    back = read_lip_prior(tmp_path, 8)
    x = np.linspace(0, 1, 30)
    np.testing.assert_allclose(back.codes(x), lp.codes(x), rtol=1e-6)
    assert read_lip_prior(tmp_path / "nothing", 8) is None
    with pytest.raises(CheckpointError, match="lip code"):
        read_lip_prior(tmp_path, 4)  # another model's code size
    data = json.loads((tmp_path / "lip_prior.json").read_text())
    for bad in ({"prior_quantiles": [1.0] * (QUANTILES - 1)}, {"mean_code": [float("nan")] * 8},
                {"prior_quantiles": list(range(QUANTILES))[::-1]}, {"format": "x"}, {"smooth_rows": 1e400},
                {"lead_seconds": "soon"}):
        (tmp_path / "lip_prior.json").write_text(json.dumps({**data, **bad}))
        with pytest.raises(CheckpointError, match="talk3d fit DATASET"):
            read_lip_prior(tmp_path, 8)


def test_silence_maps_to_the_mean_of_the_closed_frames_not_the_most_closed_one():
    rng = np.random.default_rng(1)
    opening = rng.uniform(0.0, 0.4, 300)
    prior = np.where(opening < 0.12, 0.0, opening)  # 30 % of the frames: silence, prior exactly 0
    lp = LipPrior.fit(prior, opening, opening[:, None] * np.ones((1, 8)))
    assert lp.opening(np.zeros(1))[0] == pytest.approx(opening[opening < 0.12].mean(), abs=0.02)


def test_driving_clip_hands_the_prior_codes_to_the_model():
    cfg = ModelConfig.tiny(audio_dim=80)
    *_, lp = _calibration()
    n, t = 10, 40
    feats = np.random.default_rng(0).standard_normal((t, 80)).astype(np.float32)
    phones = _one_hot((["SIL", "AA", "M", "EH"] * 10)[:t])
    blink, poses = np.zeros(n, np.float32), np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    plain = DrivingClip.from_arrays(cfg, feats, 100.0, 25.0, blink, poses)
    assert "mouth_drive" not in plain.conditioning([0, 3])
    clip = DrivingClip.from_arrays(cfg, feats, 100.0, 25.0, blink, poses, lip_prior=lp, phones=phones)
    cond = clip.conditioning([0, 3])
    expected = lp.codes(lp.values(phones, normalize_floor(feats).numpy(), 100.0, 25.0, np.arange(n)))[[0, 3]]
    torch.testing.assert_close(cond["mouth_drive"], torch.from_numpy(expected))
    torch.testing.assert_close(cond["audio"], plain.conditioning([0, 3])["audio"])
    with pytest.raises(ValueError, match="phone rows"):
        DrivingClip.from_arrays(cfg, feats, 100.0, 25.0, blink, poses, lip_prior=lp)


def test_fit_writes_the_prior_render_uses_it_and_old_runs_get_it(tmp_path: Path):
    from talk3d.fit.checkpoint import load_run
    from talk3d.fit.config import tiny_config
    from talk3d.fit.trainer import fit
    from talk3d.model.lip_prior import driving_phones
    from talk3d.render.audio_drive import load_driving_audio
    from tests.tiny_data import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    fit(data, run_dir, tiny_config(steps=2))
    run = load_run(run_dir)
    assert run.lip_prior is not None and run.phonemes.shape == (np.load(data / "audio_feats.npy").shape[0], 41)
    # render computes exactly the phone rows the fit computed for the same audio
    audio = load_driving_audio(data / "audio.wav")
    np.testing.assert_array_equal(driving_phones(run.lip_prior, audio.samples), run.phonemes)
    assert driving_phones(None, audio.samples) is None
    # a run fitted before the prior gets it from 'talk3d fit' without training again
    weights = (run_dir / "avatar.safetensors").read_bytes()
    (run_dir / "lip_prior.json").unlink()
    (run_dir / "phonemes.npy").unlink()
    assert load_run(run_dir).lip_prior is None
    fit(data, run_dir, tiny_config(steps=2))
    assert load_run(run_dir).lip_prior is not None
    assert (run_dir / "avatar.safetensors").read_bytes() == weights
    # a damaged or missing part is refused in one line, and 'talk3d fit' writes it again
    np.save(run_dir / "phonemes.npy", np.zeros((5, 41), np.float16))
    with pytest.raises(CheckpointError, match="5 rows for"):
        load_run(run_dir)
    (run_dir / "phonemes.npy").unlink()
    with pytest.raises(CheckpointError, match="phonemes.npy is missing"):
        load_run(run_dir)
    fit(data, run_dir, tiny_config(steps=2))
    np.testing.assert_array_equal(load_run(run_dir).phonemes, run.phonemes)
    # ... but only from the dataset the run was fitted on
    (run_dir / "lip_prior.json").unlink()
    other = make_tiny_dataset(tmp_path / "other", num_frames=14)
    with pytest.raises(UserError, match="another dataset"):
        fit(other, run_dir, tiny_config(steps=2))
    assert not (run_dir / "lip_prior.json").exists()


def test_the_training_voice_is_driven_by_the_audio_head_other_audio_by_the_prior():
    from talk3d.model.lip_prior import LIP_DRIVES, driving_phones, own_clip_phones

    *_, lp = _calibration()
    samples = 0.001 * np.random.default_rng(0).standard_normal(1600).astype(np.float32)
    own = _one_hot(["SIL"] * 10)
    assert LIP_DRIVES == ("auto", "prior", "audio")
    assert driving_phones(lp, samples, "auto").shape == (10, len(PHONES))
    assert driving_phones(lp, samples, "prior").shape == (10, len(PHONES))
    assert driving_phones(lp, samples, "audio") is None and driving_phones(None, samples, "prior") is None
    assert own_clip_phones(lp, own, "auto") is None and own_clip_phones(lp, own, "audio") is None
    assert own_clip_phones(lp, own, "prior") is own and own_clip_phones(None, own, "prior") is None


def test_render_drives_new_audio_with_the_prior_and_its_own_clip_with_the_head(tmp_path: Path, monkeypatch):
    from talk3d.fit.config import tiny_config
    from talk3d.fit.trainer import fit
    from talk3d.model import drive
    from talk3d.render.config import RenderConfig
    from talk3d.render.driver import render
    from tests.render_helpers import write_speech_like
    from tests.tiny_data import make_tiny_dataset

    run_dir = tmp_path / "run"
    fit(make_tiny_dataset(tmp_path / "data"), run_dir, tiny_config(steps=2))
    wav = write_speech_like(tmp_path / "speech.wav", 0.6)
    seen = []
    original = drive.DrivingClip.from_arrays.__func__

    def spy(cls, *args, **kwargs):
        clip = original(cls, *args, **kwargs)
        seen.append(clip.mouth is not None)
        return clip

    monkeypatch.setattr(drive.DrivingClip, "from_arrays", classmethod(spy))
    for frames, lip_drive, uses_prior in (("audio", "auto", True), ("audio", "audio", False),
                                          ("val", "auto", False), ("val", "prior", True)):
        seen.clear()
        out = tmp_path / f"{frames}_{lip_drive}.mp4"
        render(run_dir, wav if frames == "audio" else None, out, RenderConfig(frames=frames, lip_drive=lip_drive))
        assert seen == [uses_prior] and out.is_file(), (frames, lip_drive)
    with pytest.raises(UserError, match="--lip-drive must be one of auto, prior, audio"):
        render(run_dir, wav, tmp_path / "bad.mp4", RenderConfig(lip_drive="phones"))


def test_bilabial_closures_shut_the_lips_between_open_vowels():
    names = ["AA"] * 20 + ["M"] * 6 + ["AA"] * 20 + ["N"] * 6 + ["AA"] * 20
    prior = prior_rows(_one_hot(names), np.ones((len(names), 80), np.float32))
    assert prior[23] == pytest.approx(0.0, abs=0.05)  # inside the m
    assert prior[49] > 0.3  # an n (tongue, not lips) leaves them open


def test_lip_drive_prior_on_a_run_without_one_and_unknown_drives_are_refused(tmp_path: Path):
    from typer.testing import CliRunner

    from talk3d.eval.driver import RunDriver
    from talk3d.render.config import RenderConfig
    from talk3d.render.driver import render
    from talk3d_cli.main import app
    from tests.render_helpers import make_run_folder, write_speech_like

    run = make_run_folder(tmp_path)  # written without a lip prior (like runs fitted before it)
    wav = write_speech_like(tmp_path / "speech.wav", 0.4)
    with pytest.raises(UserError, match="no phonetic lip prior.*--lip-drive audio"):
        render(run, wav, tmp_path / "p.mp4", RenderConfig(lip_drive="prior"))
    assert not (tmp_path / "p.mp4").exists()
    render(run, wav, tmp_path / "a.mp4", RenderConfig(lip_drive="auto"))  # falls back to the audio head
    with pytest.raises(UserError, match="--lip-drive must be one of"):
        RunDriver(run, "cpu", "Prior")
    res = CliRunner().invoke(app, ["eval", str(run), "--lip-drive", "phones", "--no-video", "-q"])
    assert res.exit_code != 0 and "--lip-drive must be one of" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["render", str(run), str(wav), "-o", str(tmp_path / "c.mp4"), "--lip-drive",
                                   "prior", "-q"])
    assert res.exit_code != 0 and "no phonetic lip prior" in res.output and "Traceback" not in res.output


def test_decoding_only_the_rendered_start_of_a_long_file_gives_the_same_rows_there(shared_data: Path):
    from talk3d.media import read_audio
    from talk3d.model.lip_prior import driving_phones

    *_, lp = _calibration()
    audio = read_audio(shared_data / "audio" / "zozo_en_11s.wav", 16000)
    whole = driving_phones(lp, audio)
    start = driving_phones(lp, audio, seconds=4.0)
    assert start.shape == whole.shape and np.all(start[500:, SIL] == 1)
    # within the rendered 4 s the rows agree (the phone loop's context reaches only a few phones)
    assert np.mean(start[:400].argmax(1) == whole[:400].argmax(1)) > 0.9
