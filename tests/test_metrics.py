"""Eval metrics on constructed inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from talk3d.eval import metrics
from talk3d.eval.vad import energy_vad, to_frame_rate, voice_activity


def _rand_images(seed: int = 0, shape=(2, 3, 24, 24)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_psnr_identical_is_infinite_and_known_value():
    a = _rand_images()
    assert torch.isinf(metrics.psnr(a, a)).all()
    b = a.clone()
    b[0] = b[0] + 0.1  # MSE 0.01 -> 20 dB
    p = metrics.psnr(b, a)
    assert p[0].item() == pytest.approx(20.0, abs=1e-4)
    assert math.isinf(p[1].item())


def test_ssim_identical_is_one_and_drops_with_noise():
    a = _rand_images(1)
    assert metrics.ssim(a, a).numpy() == pytest.approx([1.0, 1.0], abs=1e-5)
    noisy = (a + 0.3 * torch.randn_like(a)).clamp(0, 1)
    assert (metrics.ssim(noisy, a) < 0.9).all()
    assert metrics.ssim(a[:, :, :6, :6], a[:, :, :6, :6]).numpy() == pytest.approx([1.0, 1.0], abs=1e-5)


def test_landmark_distance_of_shifted_set_is_known():
    rng = np.random.default_rng(0)
    lm = rng.uniform(0, 256, (5, 478, 3)).astype(np.float32)
    shifted = lm.copy()
    shifted[..., 0] += 3.0
    shifted[..., 1] += 4.0  # 5 px at 256 -> 10 px at 512
    assert metrics.landmark_distance(shifted, lm, size=256) == pytest.approx(10.0, abs=1e-4)
    assert metrics.landmark_distance(shifted, lm, size=512) == pytest.approx(5.0, abs=1e-4)
    # only the mouth moves: the mouth LMD sees it, the subset choice matters
    mouth_only = lm.copy()
    mouth_only[:, list(metrics.LIP_INDICES), 0] += 2.0
    assert metrics.landmark_distance(mouth_only, lm, 512, metrics.LIP_INDICES) == pytest.approx(2.0, abs=1e-4)
    assert metrics.landmark_distance(mouth_only, lm, 512) == pytest.approx(2.0 * 40 / 478, abs=1e-4)


def test_correlation_self_and_anti():
    t = np.linspace(0, 4 * np.pi, 100)
    s = np.sin(t) + 0.3 * np.sin(3.1 * t)
    assert metrics.correlation(s, s) == pytest.approx(1.0)
    assert metrics.correlation(s, -2.0 * s + 5) == pytest.approx(-1.0)
    assert math.isnan(metrics.correlation(s, np.ones_like(s)))
    with_nan = s.copy()
    with_nan[10:20] = np.nan
    assert metrics.correlation(with_nan, s) == pytest.approx(1.0)


def test_best_lag_correlation_finds_the_delay():
    rng = np.random.default_rng(1)
    a = rng.standard_normal(200)
    b = np.roll(a, 6)  # b[t + 6] = a[t]
    corr, lag = metrics.best_lag_correlation(a, b, 8)
    assert lag == 6
    assert corr == pytest.approx(1.0)


def test_mouth_opening_and_speech_pause_ratio():
    lm = np.zeros((2, 478, 3))
    lm[:, 33, 0], lm[:, 263, 0] = 100.0, 200.0  # eyes 100 px apart
    lm[0, 14, 1] = 0.0
    lm[1, 14, 1] = 30.0  # lip gap 30 px
    np.testing.assert_allclose(metrics.mouth_opening(lm), [0.0, 0.3])
    opening = np.array([0.3, 0.4, 0.05, 0.05, np.nan])
    speech = np.array([1, 1, 0, 0, 1])
    assert metrics.speech_pause_ratio(opening, speech) == pytest.approx(7.0)
    assert math.isnan(metrics.speech_pause_ratio(opening, np.ones(5)))


def test_mouth_box_and_crop():
    lm = np.zeros((478, 3))
    lm[list(metrics.LIP_INDICES), 0] = np.linspace(40, 60, len(metrics.LIP_INDICES))
    lm[list(metrics.LIP_INDICES), 1] = 70
    box = metrics.mouth_box(lm, size=64, margin=0.25)
    assert box == (35, 55, 64, 64)  # 20 px wide -> 30 px square around (50, 70), clipped at 64
    img = torch.zeros(3, 64, 64)
    assert metrics.box_crop(img, box).shape == (3, box[3] - box[1], box[2] - box[0])


def test_energy_vad_finds_tone_bursts():
    sr = 16000
    rng = np.random.default_rng(0)
    audio = 0.001 * rng.standard_normal(3 * sr)
    bursts = [(0.5, 1.0), (1.6, 2.4)]
    t = np.arange(len(audio)) / sr
    for a, b in bursts:
        on = (t >= a) & (t < b)
        audio[on] += 0.3 * np.sin(2 * np.pi * 300 * t[on])
    act = energy_vad(audio.astype(np.float32), sr)
    assert act.shape == (300,)
    edges = np.flatnonzero(np.diff(act.astype(int)))
    assert len(edges) == 4
    found = (edges + 1) / 100.0
    np.testing.assert_allclose(found, [0.5, 1.0, 1.6, 2.4], atol=0.03)
    act2, method = voice_activity(audio.astype(np.float32), sr, "energy")
    assert method == "energy"
    per_frame = to_frame_rate(act2, fps=25.0, num_frames=75)
    assert per_frame[20] == 1.0 and per_frame[5] == 0.0 and per_frame[70] == 0.0


def test_finite_mean():
    assert math.isinf(metrics.finite_mean([math.inf, math.inf]))
    assert metrics.finite_mean([1.0, math.inf, 3.0]) == 2.0
    assert math.isnan(metrics.finite_mean([]))


def test_masked_psnr_counts_only_the_masked_pixels() -> None:
    from talk3d.image import masked_psnr, psnr

    a = torch.zeros(3, 8, 8)
    b = a.clone()
    b[:, :4] = 0.1  # error only in the top half
    top = torch.zeros(8, 8, dtype=torch.bool)
    top[:4] = True
    assert float(masked_psnr(b, a, top)[0]) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01 where it counts
    assert float(masked_psnr(b, a, ~top)[0]) == float("inf")
    assert float(masked_psnr(b, a, torch.ones(8, 8, dtype=torch.bool))[0]) == pytest.approx(float(psnr(b, a)[0]))
