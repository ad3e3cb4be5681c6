"""Runs saved by an older talk3d (commit 87840d3, ``tests/fixtures/legacy_run``) load, render
the frames that version rendered, and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.fixtures.make_legacy_run import render_views

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


def test_old_checkpoint_resumes(tmp_path: Path) -> None:
    from talk3d.fit.config import tiny_config
    from talk3d.fit.trainer import fit
    from tests.tiny_data import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data", seed=0)
    run = tmp_path / "run"
    shutil.copytree(LEGACY, run)
    (run / "avatar.json").unlink()  # an unfinished fit: resume from the step-6 checkpoint
    (run / "avatar.safetensors").unlink()
    cfg = tiny_config(steps=8)
    cfg.identity_steps, cfg.audio_steps = 3, 5
    res = fit(data, run, cfg)
    assert res.start_step == 6 and res.steps == 8
    assert (run / "avatar.safetensors").is_file()
