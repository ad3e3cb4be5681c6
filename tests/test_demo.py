"""`talk3d demo` orchestration with stand-in stages (the real ones are tested in their own files)."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from talk3d import demo
from talk3d.errors import UserError


@dataclass
class FakePrepConfig:
    size: int = 512
    focal_35mm: float | None = None
    version = 1  # class attribute: a test bumps it to mimic changed prep settings

    def settings(self) -> dict:
        return {"size": self.size, "focal_35mm": self.focal_35mm, "version": self.version}


@dataclass
class FakeFitConfig:
    identity_steps: int = 800
    audio_steps: int = 900
    refine_steps: int = 300
    device: str = "auto"
    lr: float = 1e-3

    def set_total_steps(self, steps: int) -> None:
        self.identity_steps, self.audio_steps, self.refine_steps = steps, 0, 0


@dataclass
class FakeRenderConfig:
    orbit: bool = False
    orbit_range: float = 30.0
    device: str = "auto"


@dataclass
class Calls:
    prep: list = field(default_factory=list)
    fit: list = field(default_factory=list)
    render: list = field(default_factory=list)


def _fake_stages(calls: Calls) -> dict[str, types.SimpleNamespace]:
    def run_prep(video, out_dir, config, force=False):
        assert Path(video).is_file() and config.size == 32
        assert config.focal_35mm is not None and 20 < config.focal_35mm < 200  # the sample camera's focal
        calls.prep.append(force)
        out_dir.mkdir(parents=True, exist_ok=True)
        np.save(out_dir / "landmark_valid.npy", np.array([True, True, True, False]))
        (out_dir / "manifest.json").write_text(json.dumps({"prep_settings": config.settings()}))

    def fit(dataset_dir, run_dir, config, force=False):
        calls.fit.append((config.identity_steps, config.device, config.lr, force))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "avatar.safetensors").write_bytes(b"x")
        return types.SimpleNamespace(val={"psnr": 27.5}, steps=config.identity_steps)

    def render(run_dir, audio, out_path, config, force=False):
        calls.render.append((config.orbit, config.orbit_range, force))
        Path(out_path).write_bytes(b"mp4")
        return types.SimpleNamespace(render_fps=12.5)

    return {
        "talk3d_prep.pipeline": types.SimpleNamespace(PrepConfig=FakePrepConfig, run_prep=run_prep),
        "talk3d.fit.config": types.SimpleNamespace(preset=lambda name: FakeFitConfig()),
        "talk3d.fit.trainer": types.SimpleNamespace(fit=fit),
        "talk3d.render.config": types.SimpleNamespace(RenderConfig=FakeRenderConfig),
        "talk3d.render.driver": types.SimpleNamespace(render=render),
    }


@pytest.fixture(autouse=True)
def fake_sample(monkeypatch):
    """Stand-in for the sample clip (test_synthetic.py covers the real one)."""
    import talk3d.synthetic

    made = []

    def make_clip(out_dir, config, force=False, replace_stale=False):
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("video.mp4", "audio.wav", "clip.json"):
            (out_dir / name).write_bytes(b"x")
        made.append(force)
        return types.SimpleNamespace(path=out_dir, video=out_dir / "video.mp4", audio=out_dir / "audio.wav")

    monkeypatch.setattr(talk3d.synthetic, "make_clip", make_clip)
    return made


def _config(tmp_path: Path) -> demo.DemoConfig:
    return demo.DemoConfig(workdir=tmp_path / "work", seconds=0.4, size=32, fit_steps=7,
                           fit_overrides={"lr": 0.5}, orbit_range=20.0, device="cpu")


def test_demo_runs_the_chain_and_reuses_finished_stages(tmp_path, monkeypatch, fake_sample):
    calls = Calls()
    modules = _fake_stages(calls)
    monkeypatch.setattr(demo, "_import", lambda stage, name: modules[name])
    cfg = _config(tmp_path)
    res = demo.run_demo(cfg)
    assert res.video.is_file() and (res.sample_dir / "clip.json").is_file()
    assert res.figures["tracking_rate"] == pytest.approx(0.75)
    assert res.figures["fit_psnr"] == pytest.approx(27.5)
    assert res.figures["render_fps"] == pytest.approx(12.5)
    assert calls.fit == [(7, "cpu", 0.5, True)]  # steps override, device, extra override
    assert calls.render == [(True, 20.0, True)]
    lines = demo.describe(res)
    assert any("27.50 dB" in line and "75.0%" in line and "12.5 fps" in line for line in lines)

    again = demo.run_demo(cfg)  # sample, prep and fit are reused; the figures survive
    assert len(calls.prep) == 1 and len(calls.fit) == 1 and len(calls.render) == 2
    assert again.figures["fit_psnr"] == pytest.approx(27.5)

    # a dataset made with other prep settings (e.g. an older talk3d) is redone, and so is the fit
    monkeypatch.setattr(FakePrepConfig, "version", 2)
    demo.run_demo(cfg)
    assert len(calls.prep) == 2 and calls.prep[-1] is True and len(calls.fit) == 2 and calls.fit[-1][-1] is True
    demo.run_demo(cfg)
    assert len(calls.prep) == 2 and len(calls.fit) == 2

    demo.run_demo(cfg, force=True)
    assert calls.prep[-1] is True and len(calls.fit) == 3
    assert fake_sample == [False, False, False, False, True]

    # another sample (new settings) invalidates the dataset and the run
    demo.run_demo(demo.DemoConfig(**{**cfg.__dict__, "seed": 5}))
    assert calls.prep[-1] is True and len(calls.fit) == 4


def test_missing_stage_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "talk3d_prep.pipeline", None)  # import fails
    with pytest.raises(UserError, match="prep stage"):
        demo.run_demo(_config(tmp_path))


def test_cli_demo_reports_a_missing_stage(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from talk3d_cli.main import app

    calls = Calls()
    modules = _fake_stages(calls)
    del modules["talk3d.render.driver"]

    def fake_import(stage, name):
        if name not in modules:
            raise UserError(f"the demo cannot run the {stage} stage: {name} is not available")
        return modules[name]

    monkeypatch.setattr(demo, "_import", fake_import)
    cfg = _config(tmp_path)
    monkeypatch.setattr(demo, "DemoConfig", lambda **kw: cfg)
    result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "w"), "--quiet"])
    assert result.exit_code == 1
    assert "render stage" in result.output
