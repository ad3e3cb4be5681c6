"""Fit: tiny data, batches, a 2-step fit end to end, checkpoints, resume, NaN and input errors (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from talk3d.dataset import validate
from talk3d.errors import CheckpointError, DatasetError, UserError
from talk3d.fit import checkpoint as ck
from talk3d.fit.config import FitConfig, apply_override, finalize, preset, tiny_config
from talk3d.fit.data import LIP_INDICES, TrainingData
from talk3d.fit.trainer import fit
from tests.tiny_data import make_tiny_dataset, make_tiny_run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data", num_frames=12, size=32)


def test_tiny_dataset_is_valid_and_consistent(tiny: Path) -> None:
    m = validate(tiny)
    assert m.num_frames == 12 and m.train_end == 10 and m.size == 32
    # landmarks are projections of the canonical shape with the stored poses
    from talk3d.camera import project

    lm = np.load(tiny / "landmarks.npy")
    canon = torch.from_numpy(np.load(tiny / "canonical_landmarks.npy"))
    poses = torch.from_numpy(np.load(tiny / "poses.npy"))
    pix, _ = project(canon.expand(12, -1, -1), poses, torch.tensor(m.intrinsics), 32)
    assert np.allclose(pix.numpy(), lm[..., :2], atol=1e-3)
    mask = np.asarray(Image.open(tiny / "masks" / "000000.png"))
    assert set(np.unique(mask)) == {0, 1, 2}


def test_batch_contract_and_splits(tiny: Path) -> None:
    cfg = tiny_config()
    data = TrainingData(tiny, cfg.model, cache_frames=3)
    b = data.batch([0, 5, 9])
    assert b["image"].shape == (3, 3, 32, 32) and 0 <= b["image"].min() and b["image"].max() <= 1
    assert b["mask"].shape == (3, 1, 32, 32) and b["mask"].dtype == torch.long
    assert b["cam2world"].shape == (3, 4, 4) and b["intrinsics"].shape == (3, 3, 3)
    assert b["landmarks"].shape == (3, 478, 3) and b["frame_index"].tolist() == [0, 5, 9]
    cond = b["cond"]
    assert cond["audio"].shape == (3, cfg.model.audio_frames, cfg.model.audio_token_input)
    assert cond["blink"].shape == (3, 1) and cond["pose"].shape[0] == 3
    box = b["mouth_box"]
    assert box.dtype == torch.long and (box[:, 2] > box[:, 0]).all() and (box[:, 3] > box[:, 1]).all()
    lips = b["landmarks"][:, list(LIP_INDICES), :2]
    assert (lips[..., 0] >= box[:, None, 0]).all() and (lips[..., 0] <= box[:, None, 2]).all()
    assert (lips[..., 1] >= box[:, None, 1]).all() and (lips[..., 1] <= box[:, None, 3]).all()
    assert len(data._cache) == 3  # bounded cache
    data.batch([1, 2, 3, 4])
    assert len(data._cache) == 3
    # training draws only from [0, train_end), deterministically; resuming skips consumed batches
    it = data.train_index_batches(2, seed=0)
    seq = [next(it).tolist() for _ in range(12)]
    assert all(i < 10 for s in seq for i in s)
    resumed = data.train_index_batches(2, seed=0, start_step=7)
    assert [next(resumed).tolist() for _ in range(5)] == seq[7:]
    assert all(i >= 10 for i in data.val_subset(5))


def test_two_step_fit_end_to_end(tmp_path: Path, tiny: Path) -> None:
    run = tmp_path / "run"
    res = fit(tiny, run, tiny_config(steps=2))
    assert res.steps == 2 and res.start_step == 0
    for name in ("config.json", "avatar.safetensors", "avatar.json", "metrics.jsonl", "curves.png", "fit.log",
                 "dataset_manifest.json", "poses.npy", "blink.npy", "audio_feats.npy"):
        assert (run / name).is_file(), name
    assert [s for s, _ in ck.list_checkpoints(run)] == [1, 2]
    previews = list((run / "previews").glob("*.png"))
    assert len(previews) == 1
    grid = np.asarray(Image.open(previews[0]))
    assert grid.shape == (2 * 32, 3 * 32, 3)  # 2 val frames x (truth | render | depth)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "loss" in r]
    assert [r["step"] for r in train] == [1, 2] and [r["stage"] for r in train] == ["identity", "audio"]
    assert all(np.isfinite(r["loss"]) and r["sec_per_step"] > 0 for r in train)
    assert 0 < res.val["psnr"] < 60 and 0 < res.val["ssim"] <= 1 and res.val["frames"] == 2
    saved = FitConfig.from_dict({k: v for k, v in json.loads((run / "config.json").read_text()).items()
                                 if k != "dataset_dir"})
    assert saved.total_steps == 2 and saved.model.out_res == 32


def test_checkpoint_round_trip_renders_identically(tmp_path: Path, tiny: Path) -> None:
    from talk3d.model import Avatar

    run = make_tiny_run(tmp_path, steps=2)
    loaded = ck.load_run(run)
    assert not loaded.avatar.training and loaded.step == 2 and loaded.final
    assert loaded.poses.shape == (12, 4, 4) and loaded.blink.shape == (12,) and loaded.manifest.num_frames == 12
    data = TrainingData(tmp_path / "data", loaded.model_config)
    b = data.batch([10, 11])
    with torch.no_grad():
        a = loaded.avatar(b["cam2world"], b["intrinsics"], b["cond"])["rgb"]
    # the last checkpoint holds the same weights; a fresh model restored from it renders the same
    fresh = Avatar(loaded.model_config).eval()
    ck.latest_checkpoint(run).restore(fresh, rng=False)
    with torch.no_grad():
        c = fresh(b["cam2world"], b["intrinsics"], b["cond"])["rgb"]
        a2 = loaded.avatar(b["cam2world"], b["intrinsics"], b["cond"])["rgb"]
    assert torch.equal(a, c) and torch.equal(a, a2)
    # the background plate travels inside the model
    assert torch.allclose(loaded.avatar.background, data.background(), atol=1e-6)
    # optimiser state round trip: flattened tensors come back into an identical state dict
    tensors = load_file(str(ck.checkpoint_path(run, 2)))
    assert any(k.startswith("optim.") for k in tensors) and "rng.torch" in tensors


def test_resume_continues_step_count(tmp_path: Path, tiny: Path) -> None:
    run = tmp_path / "run"
    fit(tiny, run, tiny_config(steps=2))
    res = fit(tiny, run, tiny_config(steps=4))
    assert res.start_step == 2 and res.steps == 4
    assert [s for s, _ in ck.list_checkpoints(run)] == [3, 4]  # keeps the last 2
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(x)]
    assert steps == [1, 2, 3, 4]
    again = fit(tiny, run, tiny_config(steps=4))  # finished: nothing to do
    assert again.start_step == 4 and again.steps == 4
    fresh = fit(tiny, run, tiny_config(steps=2), force=True)
    assert fresh.start_step == 0 and [s for s, _ in ck.list_checkpoints(run)] == [1, 2]


def test_other_model_settings_are_named_and_older_runs_resume_with_them(tmp_path: Path, tiny: Path) -> None:
    run = tmp_path / "run"
    fit(tiny, run, tiny_config(steps=2))
    other = tiny_config(steps=4)
    other.model.coarse_samples = 5
    with pytest.raises(UserError, match=r"coarse_samples: run 8, this fit 5\): resume with the same"):
        fit(tiny, run, other)
    # a run saved before a model field existed: its config lacks the field, which loads as its
    # default (here the tiny model's value too), so the run resumes instead of being refused
    for sidecar in (run / "checkpoints").glob("*.json"):
        meta = json.loads(sidecar.read_text())
        del meta["config"]["model"]["fine_cull_alpha"]
        sidecar.write_text(json.dumps(meta))
    res = fit(tiny, run, tiny_config(steps=4))
    assert res.start_step == 2 and res.steps == 4


def _config(steps: int, lip_code: bool):
    cfg = tiny_config(steps=steps)
    # with the lip-motion code (the default): pretraining at the audio stage, the lip basis
    # driven by the noisy tracked code (teacher forcing); without: neither (audio augmented in both)
    cfg.model.mouth_code = 4 if lip_code else 0
    return cfg


@pytest.mark.parametrize("lip_code", [False, True])
def test_interrupt_then_resume_matches_uninterrupted(tmp_path: Path, tiny: Path, monkeypatch, lip_code) -> None:
    import talk3d.model.losses as losses

    fit(tiny, tmp_path / "a", _config(4, lip_code))
    real = losses.compute_losses
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(losses, "compute_losses", interrupting)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny, tmp_path / "b", _config(4, lip_code))
    assert ck.list_checkpoints(tmp_path / "b")[-1][0] == 2 and not (tmp_path / "b" / "avatar.json").exists()
    monkeypatch.setattr(losses, "compute_losses", real)
    res = fit(tiny, tmp_path / "b", _config(4, lip_code))
    assert res.start_step == 2
    wa, wb = load_file(str(tmp_path / "a" / "avatar.safetensors")), load_file(str(tmp_path / "b" / "avatar.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert ("mouth_basis" in wa) == lip_code
    if lip_code:  # the audio steps trained the lip basis
        assert wa["mouth_basis"].abs().amax() > 0


def test_nan_loss_keeps_last_good_checkpoint(tmp_path: Path, tiny: Path, monkeypatch) -> None:
    import talk3d.model.losses as losses

    real = losses.compute_losses
    calls = {"n": 0}

    def nan_at_three(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        if calls["n"] == 3:
            out["total"] = out["total"] * float("nan")
        return out

    monkeypatch.setattr(losses, "compute_losses", nan_at_three)
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"nan at step 3.*step 2\) is kept"):
        fit(tiny, run, tiny_config(steps=4))
    assert [s for s, _ in ck.list_checkpoints(run)] == [1, 2]
    assert all(torch.isfinite(t.float()).all() for t in load_file(str(ck.checkpoint_path(run, 2))).values())
    assert not (run / "avatar.safetensors").exists()


def test_bad_inputs_raise_user_errors(tmp_path: Path, tiny: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        fit(tmp_path / "nope", tmp_path / "run", tiny_config())
    cfg = tiny_config()
    cfg.min_frames = 50
    with pytest.raises(UserError, match="only 10 training frames"):
        fit(tiny, tmp_path / "run", cfg)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a talk3d run"):
        fit(tiny, other, tiny_config())
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        fit(tiny, tmp_path / "afile", tiny_config())
    with pytest.raises(UserError, match="unknown setting"):
        apply_override(tiny_config(), "model.nonsense=3")
    with pytest.raises(UserError, match="bad value"):
        apply_override(tiny_config(), "batch_size=abc")
    with pytest.raises(UserError, match="unknown preset"):
        preset("huge")
    bad = tiny_config()
    bad.model.neural_res = 12
    with pytest.raises(UserError, match="invalid model settings"):
        finalize(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        ck.load_run(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no avatar or checkpoint"):
        ck.load_run(other)


def test_load_run_refuses_other_format_version(tmp_path: Path) -> None:
    run = make_tiny_run(tmp_path, steps=1)
    meta = json.loads((run / "avatar.json").read_text())
    meta["format_version"] = 99
    (run / "avatar.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99"):
        ck.load_run(run)


def test_config_overrides_and_presets() -> None:
    cfg = preset("quick")
    assert cfg.model.out_res == 256 and cfg.model.neural_res == 64
    assert preset("full").model.out_res == 512
    cfg.identity_steps, cfg.audio_steps, cfg.refine_steps = 300, 300, 100
    cfg.set_total_steps(1400)
    assert cfg.total_steps == 1400 and cfg.identity_steps == 600 and cfg.refine_steps == 200
    apply_override(cfg, "model.coarse_samples=16")
    apply_override(cfg, "amp=false")
    apply_override(cfg, "lr=1e-3")
    apply_override(cfg, "model.box_min=[-1, -2, -1]")
    assert cfg.model.coarse_samples == 16 and cfg.amp is False and cfg.lr == 1e-3
    assert cfg.model.box_min == (-1.0, -2.0, -1.0)
    back = FitConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back.to_dict() == finalize(cfg).to_dict()


def test_a_user_file_in_the_run_folder_survives_the_writability_probe(tmp_path: Path, tiny: Path) -> None:
    run = tmp_path / "run"
    fit(tiny, run, tiny_config(steps=2))
    mine = run / ".write_test"  # the probe's old fixed name: a fit used to overwrite and delete it
    mine.write_text("my notes")
    fit(tiny, run, tiny_config(steps=3))
    fit(tiny, run, tiny_config(steps=2), force=True)
    assert mine.read_text() == "my notes"
    assert not [p for p in run.iterdir() if p.name.startswith("tmp")]  # the probe leaves nothing
