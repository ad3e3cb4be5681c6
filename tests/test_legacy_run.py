"""Runs saved by an older talk3d (commit 87840d3, ``tests/fixtures/legacy_run``) load, render
the frames that version rendered, and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from talk3d.model.avatar import _current_key
from tests.fixtures.make_legacy_run import render_views, resume_from_step_2

LEGACY = Path(__file__).parent / "fixtures" / "legacy_run"


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture was rendered with one thread (float sums follow the split)
    yield
    torch.set_num_threads(before)


def test_old_run_renders_what_the_old_version_rendered(one_thread) -> None:
    expected = load_file(str(LEGACY / "expected.safetensors"))
    got = render_views(LEGACY)
    for name, want in expected.items():
        assert got[name].shape == want.shape
        diff = float((got[name] - want).abs().max())
        assert diff <= 1e-5, f"{name}: max difference {diff} from the old version's render"
    assert float(expected["rgb"].std()) > 0.01  # a real image, not a blank one


def test_old_run_config_loads_and_keeps_its_choices() -> None:
    from talk3d.fit.checkpoint import load_run

    run = load_run(LEGACY)
    saved = json.loads((LEGACY / "config.json").read_text())
    assert run.model_config.audio_norm == saved["model"]["audio_norm"] == "floor"
    assert run.model_config.mouth_code == 8 and run.model_config.mouth_basis
    assert run.fit_config.identity_steps == 3 and run.fit_config.audio_steps == 3


def test_old_checkpoint_resumes_as_the_old_version_did(tmp_path: Path, one_thread) -> None:
    """The step-2 checkpoint (identity stage) resumed through the lip pretraining, the audio and
    the refine stages gives the weights the old version's trainer gave."""
    from tests.tiny_data import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data", seed=0)
    shutil.copytree(LEGACY, tmp_path / "run")
    resumed = resume_from_step_2(tmp_path / "run", data)
    got = load_file(str(resumed / "avatar.safetensors"))
    want = {_current_key(k): v for k, v in load_file(str(LEGACY / "expected_resumed.safetensors")).items()}
    assert got.keys() == want.keys()
    worst = max(float((got[k].float() - want[k].float()).abs().max()) for k in want)
    assert worst <= 1e-5, f"resumed weights differ from the old version's by up to {worst}"
    before = load_file(str(LEGACY / "checkpoints" / "step_0000002.safetensors"))
    assert not torch.equal(before["model.mouth_basis"], got["mouth_basis"])  # the audio stages trained


def test_retired_settings_load_when_they_held_their_only_value_and_are_refused_otherwise() -> None:
    from talk3d.errors import CheckpointError
    from talk3d.fit.config import FitConfig
    from talk3d.model.config import ModelConfig

    saved = json.loads((LEGACY / "config.json").read_text())
    assert {"extra", "pose_dim", "decoder_layers", "decoder_activation"} <= set(saved["model"])
    assert {"freeze_lip_encoder", "lip_teacher", "audio_augment"} <= set(saved)
    assert {"l1_lr", "ssim_lr", "mouth_code"} <= set(saved["loss"])
    cfg = FitConfig.from_dict({**saved, "freeze_lip_encoder": False})  # shaped the training only: loads
    assert cfg.loss.l1_neural == saved["loss"]["l1_lr"] and cfg.loss.ssim_neural == saved["loss"]["ssim_lr"]
    assert ModelConfig.from_dict({**saved["model"], "extra": {"note": "x"}}) == cfg.model
    for key, value in (("decoder_activation", "softplus"), ("decoder_layers", 2), ("pose_dim", 12)):
        with pytest.raises(ValueError, match=f"{key}={value!r} is no longer supported"):
            ModelConfig.from_dict({**saved["model"], key: value})
    with pytest.raises(ValueError, match="'loudness' normalisation was retired"):
        ModelConfig.from_dict({**saved["model"], "audio_norm": "loudness"})
    with pytest.raises(CheckpointError, match="unknown keys"):
        ModelConfig.from_dict({**saved["model"], "bogus": 1})


def test_a_run_with_a_retired_model_choice_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    from talk3d.errors import CheckpointError
    from talk3d.fit.checkpoint import load_run

    run = tmp_path / "run"
    shutil.copytree(LEGACY, run)
    meta = json.loads((run / "avatar.json").read_text())
    meta["model_config"]["decoder_activation"] = "softplus"
    (run / "avatar.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        load_run(run)
    assert "decoder_activation='softplus' is no longer supported" in str(err.value)
    assert "\n" not in str(err.value)


def test_old_checkpoint_after_the_lip_pretraining_resumes_without_repeating_it(tmp_path: Path, one_thread) -> None:
    """The step-6 checkpoint predates the 'progress' record: its metrics say the pretraining ran,
    so the resumed audio steps keep the lip encoder exactly as the checkpoint holds it."""
    from talk3d.fit.trainer import fit
    from talk3d.model.avatar import Avatar
    from talk3d.model.config import ModelConfig
    from tests.fixtures.make_legacy_run import fit_config
    from tests.tiny_data import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data", seed=0)
    run = tmp_path / "run"
    shutil.copytree(LEGACY, run)
    for name in ("avatar.json", "avatar.safetensors"):
        (run / name).unlink()
    sidecar = json.loads((run / "checkpoints" / "step_0000006.json").read_text())
    assert "progress" not in sidecar and "lip_code_mse" in sidecar["metrics"]
    res = fit(data, run, fit_config(8, 3, 5, 0))
    assert res.start_step == 6 and res.steps == 8
    before = {_current_key(k[len("model."):]): v
              for k, v in load_file(str(LEGACY / "checkpoints" / "step_0000006.safetensors")).items()
              if k.startswith("model.")}
    after = load_file(str(run / "avatar.safetensors"))
    shell = Avatar(ModelConfig.from_dict(sidecar["config"]["model"]))
    lip = {id(p) for p in shell.parameter_sets()["lip_encoder"]}
    lip_names = [n for n, p in shell.named_parameters() if id(p) in lip]
    assert lip_names and all(torch.equal(before[n], after[n]) for n in lip_names)
    assert not torch.equal(before["mouth_basis"], after["mouth_basis"])  # the other parameters trained


def test_a_renamed_loss_setting_names_its_new_name() -> None:
    from talk3d.errors import UserError
    from talk3d.fit.config import apply_override, tiny_config

    with pytest.raises(UserError, match="use --set loss.l1_neural="):
        apply_override(tiny_config(), "loss.l1_lr=0.3")
