"""Lip-sync supervision: lip-motion codes, audio augmentation, encoder pretraining, model wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from talk3d.face.landmarks import MOUTH, mouth_opening
from talk3d.fit.lipsync import (
    AudioAugment,
    lip_codes,
    pretrain_mouth_head,
    rest_code,
    room_tone,
    silent_span_mask,
)
from talk3d.fit.stages import apply_frozen
from talk3d.model import Avatar, ModelConfig, conditioning_for
from talk3d.model.conditioning import TokenEncoder, token_count


def _talking_landmarks(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel landmarks ``(n, 478, 3)`` of a random rigid 'face' whose lower lip drops by
    ``opening (n,)``, seen under random head rotations, scales and shifts; plus the canonical shape."""
    rng = np.random.default_rng(seed)
    canonical = rng.normal(size=(478, 3))
    opening = rng.uniform(0.0, 1.0, n)
    lower = np.isin(np.arange(478), MOUTH[: MOUTH.size // 2])
    out = np.empty((n, 478, 3))
    for i in range(n):
        shape = canonical.copy()
        shape[lower, 1] -= 0.3 * opening[i]
        rot = Rotation.from_euler("yxz", rng.uniform(-20, 20, 3), degrees=True).as_matrix()
        posed = rng.uniform(50, 80) * shape @ rot.T + rng.uniform(100, 150, 3)
        out[i] = posed * np.array([1.0, -1.0, -1.0])  # world (y up) -> pixel frame (y down)
    return out.astype(np.float32), canonical.astype(np.float32), opening


def test_lip_code_follows_the_lips_and_ignores_head_pose():
    lm, canonical, opening = _talking_landmarks(60)
    codes = lip_codes(lm, canonical, np.arange(40), 4)
    assert codes.shape == (60, 4) and codes.dtype == np.float32
    np.testing.assert_allclose(codes[:40].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(codes[:40].std(0)[0], 1.0, rtol=1e-4)
    # One motion drives the lips: the first component is it, on held-out frames too.
    assert abs(np.corrcoef(codes[40:, 0], opening[40:])[0, 1]) > 0.999
    # Pose, scale and position of the head do not leak into the code.
    assert abs(np.corrcoef(codes[:, 0], lm[:, 0, 0])[0, 1]) < 0.5


def test_lip_code_of_real_face_shape_tracks_mouth_opening():
    # FaceMesh-like check: the mouth_opening measure and the code agree on the synthetic lips.
    lm, canonical, opening = _talking_landmarks(30, seed=3)
    codes = lip_codes(lm, canonical, np.arange(30), 2)
    assert np.isfinite(mouth_opening(lm)).all()
    assert abs(np.corrcoef(codes[:, 0], opening)[0, 1]) > 0.99


def test_audio_augment_keeps_shape_pauses_and_can_band_limit():
    torch.manual_seed(0)
    bins = 10
    audio = torch.rand(16, 5, 2 * bins) + 0.5
    quiet = AudioAugment(noise=0.0)
    out = quiet(torch.zeros_like(audio), bins, torch.Generator().manual_seed(1))
    assert out.shape == audio.shape and torch.equal(out, torch.zeros_like(audio))  # pauses stay silent
    lowpass = AudioAugment(noise=0.0, lowpass_p=1.0, lowpass_min=0.5, gain=(1.0, 1.0), tilt=0.0)
    out = lowpass(audio, bins, torch.Generator().manual_seed(1)).reshape(16, 5, 2, bins)
    kept = (out != 0).all(dim=(1, 2))  # (16, bins): which bins survive, per sample
    assert kept[:, : bins // 2].all()  # the cutoff is never below half the bins
    assert (kept.int().diff(dim=1) <= 0).all()  # what is removed is the top of the band
    assert (~kept[:, -1]).sum() >= 8  # and most samples lose their highest bin
    assert torch.equal(out[:, :, :, 0], audio.reshape(16, 5, 2, bins)[..., 0])  # unchanged below the cutoff
    varied = AudioAugment()(audio, bins, torch.Generator().manual_seed(2))
    assert not torch.allclose(varied, audio)
    ratio = (varied / audio).reshape(16, -1)
    assert ratio.std(0).mean() > 0.05  # samples get different gains


def test_pretraining_learns_a_code_the_audio_determines():
    cfg = ModelConfig.tiny(mouth_code=8)
    enc = TokenEncoder(cfg)
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(64, cfg.audio_frames, cfg.audio_token_input, generator=g)
    w = torch.randn(cfg.audio_frames * cfg.audio_token_input, cfg.mouth_code, generator=g) / 10
    codes = audio.flatten(1) @ w
    codes = (codes - codes.mean(0)) / codes.std(0)
    with torch.no_grad():
        before = float((enc.mouth_code(audio) - codes).pow(2).mean())
    losses = pretrain_mouth_head(enc, audio, codes, steps=150, batch=32, lr=3e-3, bins=cfg.audio_dim)
    with torch.no_grad():
        after = float((enc.mouth_code(audio) - codes).pow(2).mean())
    assert after < 0.3 * before, (before, after, losses[-1])


def test_model_hands_the_code_to_the_unet_and_returns_it():
    cfg = ModelConfig.tiny(mouth_code=8)
    av = Avatar(cfg)
    n = 12
    c2w = torch.eye(4).expand(n, 4, 4).clone()
    c2w[:, 2, 3] = 4.0
    feats = torch.randn(100, cfg.audio_dim)
    cond = conditioning_for(cfg, feats, 100.0, 25.0, torch.zeros(n), c2w, torch.arange(3))
    tokens, code = av.tokens.encode(cond)
    assert tokens.shape == (3, token_count(cfg), cfg.token_dim) and code.shape == (3, cfg.mouth_code)
    k = torch.eye(3).expand(3, 3, 3).clone()
    k[:, 0, 0] = k[:, 1, 1] = 1.6
    k[:, :2, 2] = 0.5
    out = av(c2w[:3], k, cond)
    assert torch.equal(out["mouth_code"], code)
    assert "mouth_code" not in av(c2w[:3], k, None)
    plain = ModelConfig.tiny(mouth_code=0)
    assert token_count(plain) == token_count(cfg) - 1
    assert "mouth_code" not in Avatar(plain)(c2w[:3], k, cond)


def test_configs_saved_before_the_lip_code_load_without_it():
    data = ModelConfig.tiny().to_dict()
    del data["mouth_code"]
    assert ModelConfig.from_dict(data).mouth_code == 0
    with pytest.raises(ValueError):
        ModelConfig.tiny(mouth_code=-1)


def _tiny_batch(cfg: ModelConfig, n: int = 3) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    c2w = torch.eye(4).expand(n, 4, 4).clone()
    c2w[:, :3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # OpenCV camera at z = 4 looking at the head
    c2w[:, 2, 3] = 4.0
    k = torch.eye(3).expand(n, 3, 3).clone()
    k[:, 0, 0] = k[:, 1, 1] = 1.6
    k[:, :2, 2] = 0.5
    feats = torch.randn(100, cfg.audio_dim, generator=torch.Generator().manual_seed(0))
    cond = conditioning_for(cfg, feats, 100.0, 25.0, torch.zeros(n), c2w, torch.arange(n))
    return c2w, k, cond


def test_lip_basis_is_linear_in_the_code_and_teacher_code_replaces_the_prediction():
    torch.manual_seed(0)
    cfg = ModelConfig.tiny(mouth_code=4)
    assert cfg.mouth_basis  # on by default with a code
    av = Avatar(cfg)
    assert av.mouth_basis.shape == (4, 3, cfg.triplane_channels, cfg.triplane_res // 2, cfg.triplane_res // 2)
    assert torch.equal(av.basis_delta(torch.randn(2, 4)), torch.zeros(2, 3, cfg.triplane_channels,
                                                                      cfg.triplane_res, cfg.triplane_res))
    with torch.no_grad():
        av.mouth_basis.normal_()
    a, b = torch.randn(2, 4), torch.randn(2, 4)
    torch.testing.assert_close(av.basis_delta(a + 2 * b), av.basis_delta(a) + 2 * av.basis_delta(b))
    c2w, k, cond = _tiny_batch(cfg)
    with torch.no_grad():
        predicted, code = av.deltaplane_and_code(cond)
        forced, code_forced = av.deltaplane_and_code({**cond, "mouth_drive": code + 1.0})
    torch.testing.assert_close(code_forced, code)  # the returned code is still the prediction
    assert (forced - predicted).abs().amax() > 1e-3  # ... but the deltaplane follows the teacher code
    assert not hasattr(Avatar(ModelConfig.tiny(mouth_code=0)), "mouth_basis")


def test_image_loss_trains_the_lip_basis_but_not_the_audio_encoder():
    torch.manual_seed(0)
    cfg = ModelConfig.tiny(mouth_code=4)
    av = Avatar(cfg)
    with torch.no_grad():
        av.unet.out.weight.normal_(std=0.1)  # let the U-Net's output depend on its tokens
    c2w, k, cond = _tiny_batch(cfg)
    cond["mouth_drive"] = torch.randn(3, 4)
    out = av(c2w, k, cond)
    out["rgb"].mean().backward()
    assert av.mouth_basis.grad is not None and av.mouth_basis.grad.abs().sum() > 0
    assert av.tokens.mouth_in[0].weight.grad.abs().sum() > 0  # the teacher code reaches the U-Net token
    encoder = [av.tokens.audio.embed[1].weight, av.tokens.mouth_head[1].weight]
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in encoder)
    out["mouth_code"].pow(2).mean().backward()  # only the code loss trains the encoder
    assert all(p.grad.abs().sum() > 0 for p in encoder)


def test_configs_saved_before_the_lip_basis_load_without_it():
    data = ModelConfig.tiny(mouth_code=4).to_dict()
    del data["mouth_basis"]
    assert not ModelConfig.from_dict(data).mouth_basis
    assert not ModelConfig.tiny(mouth_code=0, mouth_basis=True).mouth_basis


def test_silent_spans_cover_the_centre_and_sometimes_leave_speech_at_the_edges():
    mask = silent_span_mask(400, 17, torch.Generator().manual_seed(0))
    assert mask.shape == (400, 17) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert (mask[:, 6:11] == 0).all()  # the centre frame and 2 frames each side are always silent
    assert (mask[:, 0] == 1).any() and (mask[:, 0] == 0).any()  # edges: sometimes speech, sometimes not
    silent = (mask == 0).int()
    assert ((silent.diff(dim=1) != 0).sum(1) <= 2).all()  # one contiguous span


def test_room_tone_is_quiet_low_and_varied():
    tone = room_tone(256, 5, 2, 40, torch.Generator().manual_seed(0)).reshape(256, 5, 2, 40)
    assert tone.mean().abs() < 0.1 and tone.std() < 0.1
    bins = tone.mean(dim=(0, 1, 2))
    assert bins[:4].mean() > bins[-4:].mean() + 0.01  # louder in the low bins
    assert tone.mean(dim=(1, 2, 3)).std() > 0.005  # samples differ in level


def test_rest_code_is_the_mean_of_the_most_closed_frames():
    codes = np.arange(20, dtype=np.float32)[:, None] * np.array([[1.0, -2.0]], np.float32)
    opening = np.arange(20, dtype=np.float64)[::-1]  # the last frames are the most closed
    np.testing.assert_allclose(rest_code(codes, opening, quantile=0.1), [18.5, -37.0])


def test_pretraining_with_silence_maps_pauses_to_the_rest_code_and_freezing_stops_training():
    torch.manual_seed(0)
    cfg = ModelConfig.tiny(mouth_code=4)
    enc = TokenEncoder(cfg)
    g = torch.Generator().manual_seed(0)
    audio = torch.rand(64, cfg.audio_frames, cfg.audio_token_input, generator=g) + 0.5  # all speech
    codes = torch.randn(64, 4, generator=g) * 0.3
    rest = torch.tensor([2.0, -1.0, 0.5, 1.5])
    pretrain_mouth_head(enc, audio, codes, steps=300, batch=32, lr=3e-3, bins=cfg.audio_dim, rest=rest,
                        silence=0.25)
    pauses = room_tone(16, cfg.audio_frames, cfg.mel_per_frame, cfg.audio_dim, torch.Generator().manual_seed(5))
    with torch.no_grad():
        pred = enc.mouth_code(pauses)
        speech = enc.mouth_code(audio)
    assert (pred - rest).pow(2).mean() < 0.1 * rest.pow(2).mean()
    assert (speech - rest).pow(2).mean() > rest.pow(2).mean() * 0.5  # speech is not read as a pause
    assert apply_frozen({"lip_encoder": enc.lip_encoder()}, enc, ("lip_encoder",))  # what the audio stages do
    frozen = {n for n, p in enc.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in enc.named_parameters() if n.startswith(("audio.", "audio_pos", "mouth_head."))}
    assert enc.blink_in[0].weight.requires_grad

