"""`talk3d render` on a tiny avatar: video + audio, extras (depth, alpha, MPI), modes and errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from talk3d.errors import CheckpointError, UserError
from talk3d.media import write_wav
from talk3d.render.config import RenderConfig
from talk3d.render.driver import render
from talk3d.render.mpi import load_mpi, render_mpi
from talk3d.render.probe import count_frames, probe, read_frames
from tests.render_helpers import make_run_folder, psnr, write_speech_like

FPS = 25.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("render")
    run = make_run_folder(root, torso_mode="volume")  # the whole (untrained) person turns with --yaw
    audio = write_speech_like(root / "speech_44k_stereo.wav", 1.0, 44100, 2)
    return {"root": root, "run": run, "audio": audio}


def test_video_has_h264_aac_and_audio_duration(tiny, tmp_path):
    audio = write_speech_like(tmp_path / "a.wav", 1.34, 22050, 1)
    res = render(tiny["run"], audio, tmp_path / "out.mp4", RenderConfig(batch=8))
    info = probe(res.out_path)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert res.num_frames == round(1.34 * FPS) == count_frames(res.out_path)
    assert abs(info.duration - 1.34) <= 1.0 / FPS
    assert (info.width, info.height) == (32, 32)
    assert res.render_fps > 0


def test_extras_depth_alpha_mpi(tiny, tmp_path):
    cfg = RenderConfig(depth=True, alpha=True, mpi_dir=tmp_path / "mpi", mpi_frames=[0, 7], mpi_layers=24, size=48,
                       fps=10.0)
    res = render(tiny["run"], tiny["audio"], tmp_path / "out.mp4", cfg)
    n = res.num_frames
    assert n == 10
    dinfo = probe(res.extra_outputs["depth"])
    assert dinfo.video_codec == "h264" and (dinfo.width, dinfo.height) == (48, 48)
    assert count_frames(res.extra_outputs["depth"]) == n
    depth0 = next(read_frames(res.extra_outputs["depth"]))
    assert depth0.std() > 1.0  # not a constant image
    pngs = sorted(res.extra_outputs["alpha"].glob("*.png"))
    assert len(pngs) == n
    with Image.open(pngs[0]) as im:
        assert im.mode == "RGBA" and im.size == (48, 48)
        a = np.asarray(im)[..., 3]
    assert a.min() < a.max()  # real transparency, not a constant channel
    for f in (0, 7):
        folder = tmp_path / "mpi" / f"frame_{f:06d}"
        meta = json.loads((folder / "mpi.json").read_text())
        assert len(meta["layers"]) == 25  # 24 planes + background plane
        assert np.all(np.diff(meta["depths"]) > 0)
        assert np.array(meta["cam2world"]).shape == (4, 4) and np.array(meta["intrinsics"]).shape == (3, 3)
        assert meta["size"] == [16, 16]  # neural resolution of the tiny model
        back = render_mpi(load_mpi(folder))
        assert back.shape == (4, 16, 16)
        assert float(back[3].min()) > 0.99  # the background plane makes the MPI opaque


def test_mpi_matches_direct_render(tiny):
    """The MPI of a frame, rendered back at its own camera, reproduces the volume rendering."""
    from talk3d.fit.checkpoint import load_run
    from talk3d.model.drive import conditioning_for
    from talk3d.render.field import avatar_field
    from talk3d.render.mpi import box_near_far, export_mpi

    run = load_run(tiny["run"])
    feats = np.random.default_rng(1).normal(size=(200, 80)).astype(np.float32)
    cond = conditioning_for(run.model_config, feats, 100.0, FPS, run.blink, run.poses, np.array([3]))
    cam = torch.as_tensor(run.poses[3:4])
    k = torch.tensor(run.manifest.intrinsics)
    with torch.no_grad():
        direct = run.avatar(cam, k, cond)["rgb_lr"][0]
    field, size, bg = avatar_field(run.avatar, cond)
    near, far = box_near_far(cam[0], 3.2)
    mpi = export_mpi(field, cam[0], k, size, near, far, layers=32, samples=4, background=bg)
    back = render_mpi(mpi)
    assert psnr(back[:3], direct) >= 30.0
    # a different view changes the image (the planes are really warped)
    from talk3d.camera import orbit

    assert psnr(render_mpi(mpi, orbit(cam[0], 20.0, 0.0), k)[:3], back[:3]) < 40.0


def _frames(path: Path) -> np.ndarray:
    return np.stack(list(read_frames(path))).astype(np.float32)


def test_motion_scale_zero_and_fixed_pose_is_still(tiny, tmp_path):
    still = render(tiny["run"], tiny["audio"], tmp_path / "still.mp4",
                   RenderConfig(pose="fixed", motion_scale=0.0, blink="off", quality=0, fps=10.0))
    moving = render(tiny["run"], tiny["audio"], tmp_path / "moving.mp4", RenderConfig(pose="tracked", quality=0, fps=10.0))
    fs, fm = _frames(still.out_path), _frames(moving.out_path)
    assert np.abs(fs - fs[0]).max() <= 2.0  # identical up to H.264 rounding
    # tracked head motion (+-6 degrees of yaw in the tiny clip) moves the image
    assert np.abs(fm - fm[0]).max() > np.abs(fs - fs[0]).max() + 2.0


def test_orbit_and_yaw_change_the_view(tiny, tmp_path):
    def go(name: str, **kw) -> np.ndarray:
        cfg = RenderConfig(pose="fixed", motion_scale=0.0, quality=0, fps=8.0, **kw)
        return _frames(render(tiny["run"], tiny["audio"], tmp_path / name, cfg).out_path)

    f0, f30, fo = go("y0.mp4"), go("y30.mp4", yaw=30.0), go("orbit.mp4", orbit=True, orbit_range=20.0)
    assert np.abs(f30[0] - f0[0]).mean() > 2.0
    # the orbit starts at yaw 0 (sin 0) and reaches +20 degrees a quarter of the way (frame 2 of 8)
    assert np.abs(fo[0] - f0[0]).max() <= 2.0
    assert np.abs(fo[2] - f0[2]).mean() > 2.0


def test_fps_and_size_options(tiny, tmp_path):
    res = render(tiny["run"], tiny["audio"], tmp_path / "o.mp4", RenderConfig(fps=10.0, size=40))
    info = probe(res.out_path)
    assert res.num_frames == 10 == count_frames(res.out_path)
    assert (info.width, info.height) == (40, 40) and info.fps == pytest.approx(10.0)


def test_self_driven_validation_frames(tiny, tmp_path):
    res = render(tiny["run"], None, tmp_path / "val.mp4", RenderConfig(frames="val"))
    assert res.num_frames == 2 == count_frames(res.out_path)  # tiny dataset: 12 frames, last 2 held out
    assert probe(res.out_path).audio_codec == "aac"


# ----------------------------------------------------------------------------- errors
def test_error_run_missing(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        render(tmp_path / "nope", tiny["audio"], tmp_path / "o.mp4")


def test_error_run_incomplete(tiny, tmp_path):
    import shutil

    bad = tmp_path / "run"
    shutil.copytree(tiny["run"], bad)
    (bad / "poses.npy").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        render(bad, tiny["audio"], tmp_path / "o.mp4")


def test_error_checkpoint_other_version(tiny, tmp_path):
    import shutil

    bad = tmp_path / "run"
    shutil.copytree(tiny["run"], bad)
    meta = json.loads((bad / "avatar.json").read_text())
    meta["format_version"] = 99
    (bad / "avatar.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99"):
        render(bad, tiny["audio"], tmp_path / "o.mp4")


def test_error_audio_unreadable_silent_empty(tiny, tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio at all")
    with pytest.raises(UserError, match="cannot read audio"):
        render(tiny["run"], junk, tmp_path / "o.mp4")
    silent = tmp_path / "silent.wav"
    write_wav(silent, np.zeros(16000, np.float32))
    with pytest.raises(UserError, match="silent"):
        render(tiny["run"], silent, tmp_path / "o.mp4")
    empty = tmp_path / "empty.wav"
    write_wav(empty, np.zeros(0, np.float32))
    with pytest.raises(UserError, match="no audio samples"):
        render(tiny["run"], empty, tmp_path / "o.mp4")
    with pytest.raises(UserError, match="does not exist"):
        render(tiny["run"], tmp_path / "missing.wav", tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()


def test_error_output_exists_without_force(tiny, tmp_path):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"old")
    with pytest.raises(UserError, match="--force"):
        render(tiny["run"], tiny["audio"], out)
    assert out.read_bytes() == b"old"
    render(tiny["run"], tiny["audio"], out, RenderConfig(fps=5.0), force=True)
    assert probe(out).video_codec == "h264"


def test_error_angles(tiny, tmp_path, caplog):
    with pytest.raises(UserError, match="beyond"):
        render(tiny["run"], tiny["audio"], tmp_path / "o.mp4", RenderConfig(yaw=120.0))
    with pytest.raises(UserError, match="beyond"):
        render(tiny["run"], tiny["audio"], tmp_path / "o.mp4", RenderConfig(orbit=True, orbit_range=95.0))
    with caplog.at_level(logging.WARNING, logger="talk3d"):
        render(tiny["run"], tiny["audio"], tmp_path / "o.mp4", RenderConfig(yaw=40.0, fps=5.0))
    assert any("training saw" in r.message for r in caplog.records)
    assert (tmp_path / "o.mp4").is_file()


def test_error_bad_options(tiny, tmp_path):
    with pytest.raises(UserError, match="--pose"):
        render(tiny["run"], tiny["audio"], tmp_path / "o.mp4", RenderConfig(pose="wobble"))
    with pytest.raises(UserError, match=".mp4"):
        render(tiny["run"], tiny["audio"], tmp_path / "o.avi")
    with pytest.raises(UserError, match="AUDIO"):
        render(tiny["run"], None, tmp_path / "o.mp4")
