"""Image-space torso layer (``ModelConfig.torso_mode="image"``): compositing, warp, losses, checkpoints, MPI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from talk3d.camera import frontal_cam2world, intrinsics_matrix, orbit
from talk3d.fit import checkpoint as ck
from talk3d.fit.config import apply_override, finalize, tiny_config
from talk3d.fit.data import TrainingData
from talk3d.fit.trainer import fit
from talk3d.model import Avatar, ModelConfig, conditioning_for
from talk3d.model.losses import alpha_loss
from talk3d.render.field import avatar_field, avatar_torso_layer
from talk3d.render.mpi import box_near_far, export_mpi, render_mpi
from tests.tiny_data import make_tiny_dataset

torch.set_num_threads(1)
CFG = ModelConfig.tiny(torso_mode="image")
DIST, FOCAL = 4.0, 1.6


def _cameras(b: int) -> tuple[torch.Tensor, torch.Tensor]:
    return orbit(frontal_cam2world(DIST, b), torch.linspace(-8, 8, b), 0.0), intrinsics_matrix(FOCAL).expand(b, 3, 3)


def _cond(b: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = 30
    c2w = orbit(frontal_cam2world(DIST, n), torch.randn(n, generator=g) * 6, torch.randn(n, generator=g) * 3)
    return conditioning_for(CFG, torch.randn(200, CFG.audio_dim, generator=g), 100.0, 25.0,
                            torch.rand(n, generator=g), c2w, torch.arange(b) * 4 + 3)


def _textured(cfg: ModelConfig = CFG, seed: int = 0) -> Avatar:
    """An image-mode avatar whose torso texture is a random image with a band of opaque torso."""
    torch.manual_seed(seed)
    av = Avatar(cfg)
    s = cfg.out_res
    alpha = torch.zeros(1, s, s)
    alpha[:, s // 2:] = 0.9
    av.set_torso_init(torch.rand(3, s, s), alpha)
    av.set_background(torch.rand(3, s, s))
    return av


def test_config_torso_mode_default_and_validation() -> None:
    assert ModelConfig().torso_mode == "image" and Avatar(ModelConfig.tiny(torso_mode="volume")).torso is None
    old = ModelConfig.tiny().to_dict()
    for key in ("torso_mode", "torso_res", "torso_warp_hidden"):
        old.pop(key)  # a config JSON written before the option existed
    assert ModelConfig.from_dict(old).torso_mode == "volume"
    with pytest.raises(ValueError, match="torso_mode"):
        ModelConfig.tiny(torso_mode="mesh")
    cfg = tiny_config()
    apply_override(cfg, "model.torso_mode=image")
    assert finalize(cfg).model.torso_mode == "image" and cfg.model.torso_size == cfg.model.out_res


def test_image_mode_shapes_compositing_and_gradients() -> None:
    av = _textured().train()
    b, s, h = 2, CFG.out_res, CFG.neural_res
    c2w, k = _cameras(b)
    out = av(c2w, k, _cond(b))
    for name, shape in (("rgb", (b, 3, s, s)), ("rgb_lr", (b, 3, h, h)), ("alpha", (b, 1, h, h)),
                        ("alpha_hr", (b, 1, s, s)), ("alpha_head", (b, 1, h, h)), ("alpha_head_hr", (b, 1, s, s)),
                        ("torso_rgb", (b, 3, s, s)), ("torso_alpha", (b, 1, s, s)), ("rgb_fg", (b, 3, s, s))):
        assert out[name].shape == shape, name
    # composite: head over torso over background; alpha is the person's (union)
    ah, ta, bg = out["alpha_head_hr"], out["torso_alpha"], av.background[None]
    expect = out["rgb_fg"] - (1 - ah) * out["torso_rgb"] * ta + (1 - ah) * (out["torso_rgb"] * ta + (1 - ta) * bg)
    torch.testing.assert_close(out["rgb"], expect.clamp(0, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["alpha_hr"], ah + (1 - ah) * ta, atol=1e-6, rtol=0)
    assert bool((out["alpha"] >= out["alpha_head"] - 1e-6).all())
    # gradients reach the torso texture and the warp MLP's (zero-initialised) last layer
    (out["rgb"].mean() + out["rgb_lr"].mean()).backward()
    assert av.torso.texture.grad is not None and float(av.torso.texture.grad.abs().sum()) > 0
    assert float(av.torso.warp[-1].weight.grad.abs().sum()) > 0
    assert float(av.torso.warp[-1].bias.grad.abs().sum()) > 0


def test_zero_init_warp_is_identity_and_warp_moves_torso() -> None:
    av = _textured().eval()
    b, s = 2, CFG.out_res
    c2w, k = _cameras(b)
    with torch.no_grad():
        with_cond = av(c2w, k, _cond(b))
        without = av(c2w, k, None)
        torch.testing.assert_close(with_cond["torso_rgb"], without["torso_rgb"], atol=0, rtol=0)
        torch.testing.assert_close(with_cond["torso_alpha"], without["torso_alpha"], atol=0, rtol=0)
        # identity warp at the texture's own size reproduces the texture exactly
        tex = torch.sigmoid(av.torso.texture)
        rgb, a = av.torso(None, 1, CFG.torso_size)
        torch.testing.assert_close(rgb[0], tex[:3], atol=1e-6, rtol=0)
        torch.testing.assert_close(a[0], tex[3:], atol=1e-6, rtol=0)
        # a non-zero warp (shift) moves the layer
        av.torso.warp[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.25]))
        moved = av(c2w, k, _cond(b))
    assert float((moved["torso_alpha"] - with_cond["torso_alpha"]).abs().max()) > 0.5
    assert s == with_cond["torso_alpha"].shape[-1]


def test_head_alpha_supervised_by_head_mask_in_image_mode() -> None:
    s, h = 16, 8
    mask = torch.zeros(1, 1, s, s, dtype=torch.long)
    mask[..., 8:, :] = 1  # torso band
    mask[..., 2:10, 4:12] = 2  # head over it
    head, torso, person = (mask == 2).float(), (mask == 1).float(), (mask > 0).float()
    lr = lambda x: F.interpolate(x, size=(h, h), mode="area")  # noqa: E731

    def outputs(a_head: torch.Tensor, t_a: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"alpha": lr(person), "alpha_hr": person, "alpha_head": lr(a_head), "alpha_head_hr": a_head,
                "torso_alpha": t_a}

    # head alpha = head mask and torso alpha = torso mask (anything under the head): ~0 loss
    under_head = torso.clone()
    under_head[head > 0] = 0.7  # unobserved behind the head: not penalised
    good = alpha_loss(outputs(head, under_head), mask, h)
    assert float(good) < 1e-3
    # the volume covering the torso too (the volume-mode target) is penalised in image mode
    bad = alpha_loss(outputs(person, torso), mask, h)
    assert float(bad) > 1.0
    # volume mode (no alpha_head in the outputs) still supervises alpha with the person mask
    vol = alpha_loss({"alpha": lr(person), "alpha_hr": person}, mask, h)
    assert float(vol) < 1e-3
    assert float(alpha_loss({"alpha": lr(head), "alpha_hr": head}, mask, h)) > 1.0


def test_fit_initialises_torso_and_checkpoint_round_trip(tmp_path: Path) -> None:
    data_dir = make_tiny_dataset(tmp_path / "data", num_frames=12, size=32)
    cfg = tiny_config(steps=2)
    apply_override(cfg, "model.torso_mode=image")
    fit(data_dir, tmp_path / "run", cfg)
    meta = json.loads((tmp_path / "run" / ck.AVATAR_META).read_text())
    assert meta["model_config"]["torso_mode"] == "image"
    run = ck.load_run(tmp_path / "run")
    assert run.avatar.torso is not None and run.model_config.torso_mode == "image"
    # the texture was initialised from the data (not the constant grey start) and then trained
    tex = torch.sigmoid(run.avatar.torso.texture.detach())
    assert float(tex[:3].std()) > 0.01
    data = TrainingData(data_dir, run.model_config)
    b = data.batch([10, 11])
    fresh = Avatar(run.model_config).eval()
    ck.latest_checkpoint(tmp_path / "run").restore(fresh, rng=False)
    with torch.no_grad():
        a = run.avatar(b["cam2world"], b["intrinsics"], b["cond"])
        c = fresh(b["cam2world"], b["intrinsics"], b["cond"])
    assert torch.equal(a["rgb"], c["rgb"]) and torch.equal(a["torso_alpha"], c["torso_alpha"])


@pytest.mark.parametrize("mode", ["volume", "image"])
def test_mpi_matches_direct_render(mode: str) -> None:
    """MPI export (+ the torso plane in image mode) re-rendered at its camera reproduces ``rgb_lr``."""
    cfg = ModelConfig.tiny(torso_mode=mode)
    av = _textured(cfg) if mode == "image" else Avatar(cfg)
    av.eval()
    cam, k = frontal_cam2world(DIST), intrinsics_matrix(FOCAL)
    cond = {n: v[:1] for n, v in _cond(1).items()}
    with torch.no_grad():
        av.torso is None or av.torso.warp[-1].bias.copy_(torch.tensor([0.0, 0.02, 0.01, 0.0, 0.0, 0.05]))
        direct = av(cam[None], k, cond)["rgb_lr"][0]
    field, size, bg = avatar_field(av, cond)
    torso = avatar_torso_layer(av, cam, cond, size)
    assert (torso is None) == (mode == "volume")
    near, far = box_near_far(cam, 3.2)
    mpi = export_mpi(field, cam, k, size, near, far, layers=32, samples=4, background=bg,
                     extra_layers=[torso] if torso is not None else [])
    assert mpi.rgba.shape[0] == 32 + 1 + (mode == "image")
    assert bool((mpi.depths[1:] > mpi.depths[:-1]).all())
    back = render_mpi(mpi)
    err = float(-10 * torch.log10(((back[:3] - direct) ** 2).mean()))
    assert err >= 30.0
    if torso is not None:
        # the torso plane sits at the far end of the head box, behind all volume content
        assert torso[0] == pytest.approx(DIST + cfg.box_max[2])
        # and it matters: without it the re-render is clearly worse
        plain = render_mpi(export_mpi(field, cam, k, size, near, far, layers=32, samples=4, background=bg))
        assert float(-10 * torch.log10(((plain[:3] - direct) ** 2).mean())) < err - 6.0


def test_tracked_offset_moves_the_torso_by_that_many_pixels() -> None:
    av = _textured().eval()
    s = CFG.out_res
    with torch.no_grad():
        rest_rgb, rest_a = av.torso(None, 1, s)
        rgb, a = av.torso(None, 1, s, torch.tensor([[3.0 / s, -2.0 / s]]))  # 3 px right, 2 px up
    # content moved by (+3, -2) px: compare away from the borders
    torch.testing.assert_close(rgb[0, :, 4:-4, 6:-6], rest_rgb[0, :, 6:-2, 3:-9], atol=1e-5, rtol=0)
    torch.testing.assert_close(a[0, :, 4:-4, 6:-6], rest_a[0, :, 6:-2, 3:-9], atol=1e-5, rtol=0)
    # the avatar reads the offset from the conditioning ("torso", image widths)
    c2w, k = _cameras(1)
    cond = _cond(1)
    with torch.no_grad():
        base = av(c2w, k, cond)["torso_alpha"]
        shifted = av(c2w, k, dict(cond, torso=torch.tensor([[0.0, -2.0 / s]])))["torso_alpha"]
    torch.testing.assert_close(shifted[0, :, 4:-4], base[0, :, 6:-2], atol=1e-5, rtol=0)


def test_prep_torso_tracking_recovers_known_sway(tmp_path: Path) -> None:
    """Frames whose lower half (the 'torso') slides by known sub-pixel shifts, head region static."""
    import cv2
    import numpy as np

    from talk3d.dataset import MASK_HEAD, MASK_TORSO, frame_name
    from talk3d_prep.torso import track_torso

    size, n = 128, 24
    rng = np.random.default_rng(0)
    cloth = cv2.GaussianBlur(rng.uniform(0, 255, (2 * size, 2 * size, 3)).astype(np.float32), (0, 0), 2.0)
    truth = np.stack([2.5 * np.sin(np.arange(n) / 3.0), 1.5 * np.cos(np.arange(n) / 4.0)], 1)  # px at `size`
    (tmp_path / "frames").mkdir()
    (tmp_path / "masks").mkdir()
    labels = np.zeros((size, size), np.uint8)
    labels[size // 2:] = MASK_TORSO
    labels[8:size // 2, 32:96] = MASK_HEAD
    for i, (dx, dy) in enumerate(truth):
        m = np.float32([[1, 0, dx - size / 2], [0, 1, dy - size / 2]])
        frame = cv2.warpAffine(cloth, m, (size, size), flags=cv2.INTER_CUBIC)
        frame[: size // 2] = 90.0  # static upper half
        cv2.imwrite(str(tmp_path / "frames" / frame_name(i, "jpg")), frame.clip(0, 255).astype(np.uint8),
                    [cv2.IMWRITE_JPEG_QUALITY, 98])
        cv2.imwrite(str(tmp_path / "masks" / frame_name(i, "png")), labels)
    offsets, stats = track_torso(tmp_path, n, train=np.arange(20), work_size=size, smooth_frames=0)
    assert offsets.shape == (n, 2) and offsets.dtype == np.float32 and stats["torso_tracked"] == 1.0
    expected = (truth - np.median(truth, axis=0)) / size
    err_px = np.abs(offsets - expected).max() * size
    assert err_px < 0.35, err_px


def test_render_places_the_torso_by_the_tracked_offsets(tmp_path: Path) -> None:
    """`talk3d render` follows the run's torso_offsets.npy with --pose tracked, rests it with --pose fixed."""
    import numpy as np

    from talk3d.render.config import RenderConfig
    from talk3d.render.driver import render
    from talk3d.render.probe import read_frames
    from tests.render_helpers import make_run_folder, write_speech_like

    run = make_run_folder(tmp_path, torso_mode="image")
    loaded = ck.load_run(run)
    s = loaded.model_config.out_res
    stripes = torch.zeros(1, s, s)
    stripes[..., (torch.arange(s) // 3) % 2 == 0] = 1.0  # vertical stripes: a horizontal shift shows
    alpha = torch.zeros(1, s, s)
    alpha[:, s // 2:] = 1.0
    loaded.avatar.set_torso_init(stripes.expand(3, s, s), alpha)
    ck.save_avatar(run, loaded.avatar, loaded.model_config, {}, 0, {}, str(loaded.dataset_dir))
    n = loaded.poses.shape[0]
    offsets = np.zeros((n, 2), np.float32)
    offsets[:, 0] = 1.0 / s * (np.arange(n) % 2 * 3)  # odd frames: 3 px to the right
    np.save(run / "torso_offsets.npy", offsets)
    assert np.allclose(ck.load_run(run).torso_offsets, offsets)
    audio = write_speech_like(tmp_path / "a.wav", 0.4)
    common = dict(motion_scale=0.0, blink="off", quality=0, fps=10.0, size=s)
    tracked = np.stack(list(read_frames(render(run, audio, tmp_path / "t.mp4", RenderConfig(**common)).out_path)))
    fixed = np.stack(list(read_frames(render(run, audio, tmp_path / "f.mp4",
                                             RenderConfig(pose="fixed", **common)).out_path)))
    low = slice(3 * s // 4, s - 2)
    # tracked: the stripes jump between frames 0 and 1 (the head itself is untrained and faint)
    assert np.abs(tracked[1, low].astype(float) - tracked[0, low]).mean() > 3 * np.abs(
        fixed[1, low].astype(float) - fixed[0, low]).mean() + 5.0
