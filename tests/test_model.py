"""Avatar model: shapes, zero-initialised deltaplanes, gradients, losses, conditioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talk3d.camera import frontal_cam2world, intrinsics_matrix, orbit, project
from talk3d.errors import CheckpointError
from talk3d.model import (
    Avatar,
    LossWeights,
    ModelConfig,
    compute_losses,
    conditioning_for,
    frame_conditioning,
)
from talk3d.model.losses import mouth_weight_map, symmetry_loss

CFG = ModelConfig.tiny()
DIST = 4.0
FOCAL = 1.6


def _cameras(b: int) -> tuple[torch.Tensor, torch.Tensor]:
    c2w = orbit(frontal_cam2world(DIST, b), torch.linspace(-10, 10, b), 0.0)
    return c2w, intrinsics_matrix(FOCAL).expand(b, 3, 3)


def _cond(b: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = 40
    c2w = orbit(frontal_cam2world(DIST, n), torch.randn(n, generator=g) * 5, 0.0)
    feats = torch.randn(200, CFG.audio_dim, generator=g)
    return conditioning_for(CFG, feats, 100.0, 25.0, torch.rand(n, generator=g), c2w, torch.arange(b) * 3 + 5)


def _disc_batch(b: int) -> dict:
    """Red disc (the 'head') over a blue-green gradient background, at output resolution."""
    s = CFG.out_res
    yy, xx = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")
    bg = torch.stack([0.1 + 0.0 * xx, xx / s, 1.0 - yy / s])
    disc = ((xx - s / 2) ** 2 + (yy - s / 2) ** 2 < (s * 0.3) ** 2).float()
    fg = torch.tensor([0.9, 0.2, 0.1])[:, None, None].expand(3, s, s)
    img = fg * disc + bg * (1 - disc)
    c2w, k = _cameras(b)
    return {
        "image": img.expand(b, 3, s, s).clone(), "mask": (disc * 2).long().expand(b, 1, s, s).clone(),
        "cam2world": c2w, "intrinsics": k, "cond": _cond(b),
        "mouth_box": torch.tensor([[12, 18, 20, 22]] * b), "frame_index": torch.arange(b), "background": bg,
    }


def test_config_roundtrip_and_validation() -> None:
    cfg = ModelConfig.quick()
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.full().sr_factor == 4 and cfg.sr_factor == 4
    with pytest.raises(CheckpointError):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError):
        ModelConfig(neural_res=64, out_res=192)


def test_scene_box_holds_the_head_or_the_person_by_torso_mode() -> None:
    from talk3d.fit.config import apply_override, finalize, preset
    from talk3d.model.config import HEAD_BOX, PERSON_BOX

    assert (ModelConfig.quick().box_min, ModelConfig.quick().box_max) == HEAD_BOX
    assert (ModelConfig(torso_mode="volume").box_min, ModelConfig(torso_mode="volume").box_max) == PERSON_BOX
    chosen = ModelConfig(torso_mode="volume", box_min=(-1.4, -2.0, -1.0), box_max=(1.4, 1.0, 1.0))
    assert chosen.box_min == (-1.4, -2.0, -1.0)  # a box the user chose is kept
    fit = preset("quick")
    apply_override(fit, "model.torso_mode=volume")
    assert (finalize(fit).model.box_min, fit.model.box_max) == PERSON_BOX  # --set of the mode alone
    saved = {**ModelConfig.quick().to_dict(), "box_min": [-2.0, -2.4, -1.2], "box_max": [2.0, 1.6, 1.2]}
    assert ModelConfig.from_dict(saved).box_min == (-2.0, -2.4, -1.2)  # runs fitted with the old box keep it
    torch.manual_seed(0)
    av = Avatar(ModelConfig.tiny())
    outside = torch.tensor([[[1.6, 0.0, 0.0], [-1.8, 0.2, 0.1]]])  # beside the head, seen by no frontal camera
    assert float(av.query(av.identity_planes(), outside)[0].abs().sum()) == 0.0


def test_forward_shapes_and_zero_init_deltaplane() -> None:
    torch.manual_seed(0)
    av = Avatar(CFG).eval()
    c2w, k = _cameras(2)
    cond = _cond(2)
    with torch.no_grad():
        out = av(c2w, k, cond)
        zero = av(c2w, k, None, deltaplane=torch.zeros(2, 3, CFG.triplane_channels, CFG.triplane_res,
                                                         CFG.triplane_res))
        none = av(c2w, k, None)
    r, n = CFG.out_res, CFG.neural_res
    assert out["rgb"].shape == (2, 3, r, r) and out["rgb_lr"].shape == (2, 3, n, n)
    assert out["alpha"].shape == (2, 1, n, n) and out["depth"].shape == (2, 1, n, n)
    assert out["alpha_hr"].shape == (2, 1, r, r)
    with torch.no_grad():
        delta = av.deltaplane(cond)
    assert delta.shape == (2, 3, CFG.triplane_channels, CFG.triplane_res, CFG.triplane_res)
    assert float(delta.abs().max()) == 0.0  # last U-Net conv is zero-initialised
    assert "deltaplane" not in out  # rendering without gradients builds the planes frame by frame
    for key in ("rgb", "rgb_lr", "alpha", "depth"):
        torch.testing.assert_close(out[key], zero[key], rtol=0, atol=0)
        torch.testing.assert_close(out[key], none[key], rtol=0, atol=0)
    assert float(out["rgb"].min()) >= 0.0 and float(out["rgb"].max()) <= 1.0
    assert 0.0 < float(out["alpha"].mean()) < 1.0
    # other output size
    with torch.no_grad():
        big = av(c2w, k, cond, out_size=48)
    assert big["rgb"].shape == (2, 3, 48, 48)


def test_motion_scale_and_background() -> None:
    torch.manual_seed(0)
    av = Avatar(ModelConfig.tiny(torso_mode="volume")).eval()  # nothing but the volume in front of the plate
    c2w, k = _cameras(1)
    dp = torch.randn(1, 3, CFG.triplane_channels, CFG.triplane_res, CFG.triplane_res) * 0.3
    with torch.no_grad():
        a = av(c2w, k, None, deltaplane=dp, motion_scale=0.0)
        b = av(c2w, k, None)
        c = av(c2w, k, None, deltaplane=dp, motion_scale=1.0)
    torch.testing.assert_close(a["rgb"], b["rgb"])
    assert float((c["rgb"] - b["rgb"]).abs().max()) > 1e-3
    # a camera looking away from the box sees only the background plate
    av.set_background((torch.rand(20, 20, 3) * 255).to(torch.uint8).numpy())
    away = frontal_cam2world(DIST, 1)
    away[0, :3, :3] = torch.diag(torch.tensor([-1.0, -1.0, 1.0]))  # looks along +z, away from the head
    with torch.no_grad():
        out = av(away, k[:1], None)
    assert float(out["alpha"].max()) == 0.0
    torch.testing.assert_close(out["rgb_lr"][0], torch.nn.functional.interpolate(av.background[None], size=CFG.neural_res, mode="area")[0])
    torch.testing.assert_close(out["rgb"][0], av.background, atol=5e-3, rtol=0)  # SR residual starts tiny


def test_gradients_reach_all_parts() -> None:
    torch.manual_seed(0)
    av = Avatar(CFG).train()
    batch = _disc_batch(2)
    av.set_background(batch["background"])
    # one step so the zero-initialised last U-Net conv lets gradients through to the rest
    opt = torch.optim.Adam(av.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        out = av(batch["cam2world"], batch["intrinsics"], batch["cond"])
        compute_losses(out, batch, av, LossWeights())["total"].backward()
        opt.step()
    groups = {"triplane": av.triplane, "decoder": av.decoder, "unet": av.unet, "tokens": av.tokens,
              "superres": av.superres}
    for name, mod in groups.items():
        total = sum(float(p.grad.abs().sum()) for p in mod.parameters() if p.grad is not None)
        assert total > 0.0, f"no gradient reaches {name}"


def test_losses_finite_and_decrease_on_disc() -> None:
    torch.manual_seed(0)
    av = Avatar(CFG).train()
    batch = _disc_batch(2)
    av.set_background(batch["background"])
    # canonical landmarks: a small frontal patch at z = 0.5 (depth prior on)
    g = torch.linspace(-0.3, 0.3, 22)
    lm = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)[:478]
    av.set_canonical_landmarks(torch.cat([lm, torch.full((478, 1), 0.5)], -1))
    opt = torch.optim.Adam([{"params": av.triplane.parameters(), "lr": 5e-2},
                            {"params": [p for n, p in av.named_parameters() if not n.startswith("triplane")],
                             "lr": 5e-3}])
    totals, psnrs = [], []
    for _ in range(20):
        opt.zero_grad()
        out = av(batch["cam2world"], batch["intrinsics"], batch["cond"])
        losses = compute_losses(out, batch, av, LossWeights())
        assert all(bool(torch.isfinite(v)) for v in losses.values())
        losses["total"].backward()
        opt.step()
        totals.append(float(losses["total"].detach()))
        psnrs.append(float(losses["psnr"]))
    assert {"l1", "ssim", "l1_neural", "ssim_neural", "alpha", "face_depth", "face_alpha", "symmetry",
            "delta_l2", "delta_tv"} <= set(losses)
    assert np.mean(totals[-3:]) < 0.6 * np.mean(totals[:3])
    assert psnrs[-1] > psnrs[0] + 3.0


def test_query_and_losses_helpers() -> None:
    av = Avatar(CFG)
    pts = torch.tensor([[[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]])
    sigma, feat = av.query(av.identity_planes(), pts)
    assert sigma.shape == (1, 2) and feat.shape == (1, 2, CFG.feature_channels)
    assert float(sigma[0, 0].detach()) > 0.0 and float(sigma[0, 1].detach()) == 0.0
    w = mouth_weight_map(torch.tensor([[2, 1, 4, 3]]), 5, 2.0)
    assert w.shape == (1, 1, 5, 5) and float(w.sum()) == 25 + 2.0 * 4 and float(w[0, 0, 1, 2]) == 3.0
    sym = torch.randn(3, 2, 4, 4)
    sym = sym + sym.flip(-1)
    assert float(symmetry_loss(sym)) < 1e-6 and float(symmetry_loss(torch.randn(3, 2, 4, 4))) > 0.1


def test_frame_conditioning_windows_and_padding() -> None:
    t, d = 100, 3
    feats = np.tile(np.arange(t, dtype=np.float16)[:, None], (1, d))  # row i holds value i
    c2w = frontal_cam2world(4.0, 10).numpy()
    cond = frame_conditioning(feats, 100.0, 25.0, np.linspace(0, 1, 10, dtype=np.float32), c2w,
                              np.array([0, 5]), window=2, rows_per_frame=4)
    assert cond["audio"].shape == (2, 5, 4 * d) and cond["blink"].shape == (2, 1) and cond["pose"].shape == (2, 10)
    a = cond["audio"].reshape(2, 5, 4, d)[..., 0]
    # frame 5, offset 0 covers rows 20..23 exactly (100 Hz / 25 fps = 4 rows per frame)
    torch.testing.assert_close(a[1, 2], torch.tensor([20.0, 21.0, 22.0, 23.0]))
    # window looks ahead: offset +2 of frame 5 is frame 7 -> rows 28..31
    torch.testing.assert_close(a[1, 4], torch.tensor([28.0, 29.0, 30.0, 31.0]))
    # before the start: zeros
    assert float(a[0, :2].abs().max()) == 0.0
    torch.testing.assert_close(cond["blink"][:, 0], torch.tensor([0.0, 5 / 9]))
    rot6 = cond["pose"][0, :6]
    torch.testing.assert_close(rot6, torch.tensor([1.0, 0.0, 0.0, 0.0, -1.0, 0.0]))
    with pytest.raises(IndexError):
        frame_conditioning(feats, 100.0, 25.0, np.zeros(10), c2w, np.array([10]))


def test_token_encoder_rejects_wrong_window() -> None:
    av = Avatar(CFG)
    cond = _cond(1)
    cond["audio"] = cond["audio"][:, :-1]
    with pytest.raises(ValueError, match="conditioning_for"):
        av.deltaplane(cond)


def test_landmarks_project_into_view() -> None:
    """Sanity of the test cameras: the box centre projects to the image centre."""
    c2w, k = _cameras(1)
    uv, z = project(torch.zeros(1, 1, 3), frontal_cam2world(DIST, 1), k[:1], CFG.out_res)
    torch.testing.assert_close(uv[0, 0], torch.tensor([CFG.out_res / 2, CFG.out_res / 2]))
    assert float(z) == pytest.approx(DIST)


def test_shared_and_batched_planes_render_the_same() -> None:
    torch.manual_seed(0)
    av = Avatar(CFG).eval()
    c2w, k = _cameras(2)
    p = av.identity_planes()
    with torch.no_grad():
        shared = av.render_planes(p, c2w, k)
        batched = av.render_planes(p[None].expand(2, *p.shape), c2w, k)
    for key in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(shared[key], batched[key], atol=1e-5, rtol=1e-5)
    # yawed cameras see different images of the same field
    assert float((shared["rgb"][0] - shared["rgb"][1]).abs().max()) > 1e-3


@pytest.mark.parametrize("pose_token", [False, True])
def test_pose_reaches_the_unet_tokens_only_when_enabled(pose_token):
    """Without the pose token, two frames that differ only in head pose get identical tokens
    (the U-Net cannot use the pose to look up a training frame's mouth)."""
    torch.manual_seed(0)
    avatar = Avatar(ModelConfig.tiny(pose_token=pose_token)).eval()
    cond = _cond(2)
    moved = dict(cond, pose=cond["pose"] + 0.5)
    with torch.no_grad():
        same = torch.equal(avatar.tokens(cond), avatar.tokens(moved))
    assert same is (not pose_token)


def test_configs_saved_before_pose_token_keep_using_it():
    data = ModelConfig.tiny().to_dict()
    data.pop("pose_token")
    data.pop("audio_norm")
    old = ModelConfig.from_dict(data)
    assert old.pose_token is True and old.audio_norm == "layer"
    assert ModelConfig.tiny().pose_token is False and ModelConfig.tiny().audio_norm == "floor"
    assert isinstance(Avatar(old).tokens.audio.embed[0], torch.nn.LayerNorm)


def test_audio_normalisation_ignores_gain_and_noise_colour_and_keeps_pauses_quiet():
    from talk3d.audio import compute_logmel
    from talk3d.model.audio_encoder import normalize_floor
    from talk3d.model.drive import conditioning_for

    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000.0
    voice = np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.3 * rng.standard_normal(t.size)
    voice[16000:24000] = 0.0  # a pause (rows 100-160)
    speech = (voice + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    # gain: the same features (where the quiet copy is above the log floor)
    loud, quiet = normalize_floor(compute_logmel(0.5 * speech)), normalize_floor(compute_logmel(0.125 * speech))
    audible = torch.from_numpy(compute_logmel(0.125 * speech) > np.log(1e-6) + 4.0)
    assert audible[:100].float().mean() > 0.9
    torch.testing.assert_close(loud[audible], quiet[audible], atol=5e-2, rtol=0)
    assert float(loud.mean(1)[105:155].mean()) < float(loud.mean(1)[20:80].mean()) - 0.5  # pause far below speech
    # noise colour: the same voice over a louder, low-pass (rumbling) background; its pause
    # looks like the clean clip's pause, while the raw features' pauses differ
    import scipy.signal

    rumble = scipy.signal.lfilter([1.0], [1.0, -0.98], rng.standard_normal(t.size)) * 0.03
    noisy = (voice + rumble).astype(np.float32)
    for norm, close in ((normalize_floor, True), (lambda f: torch.from_numpy(f) / 3.0, False)):
        clean_pause = norm(compute_logmel(speech))[105:155].mean(0)
        noisy_pause = norm(compute_logmel(noisy))[105:155].mean(0)
        speech_rows = norm(compute_logmel(speech))[20:80].mean(0)
        ratio = float((noisy_pause - clean_pause).norm() / (speech_rows - clean_pause).norm())
        assert (ratio < 0.15) is close, ratio
    # the model config decides: a 'layer' model sees the raw features
    cfg = ModelConfig.tiny(audio_norm="layer")
    feats = compute_logmel(0.5 * speech.astype(np.float32))
    raw = conditioning_for(cfg, feats, 100.0, 25.0, np.zeros(50), np.tile(np.eye(4), (50, 1, 1)), np.arange(3))
    normed = conditioning_for(ModelConfig.tiny(), feats, 100.0, 25.0, np.zeros(50), np.tile(np.eye(4), (50, 1, 1)),
                              np.arange(3))
    assert not torch.allclose(raw["audio"], normed["audio"])
