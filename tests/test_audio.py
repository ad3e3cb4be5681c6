"""Log-mel features: shapes, frequency placement, file loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talk3d.audio import N_MELS, compute_logmel, frame_energy, load_audio_features, mel_filterbank
from talk3d.media import write_wav


@pytest.mark.parametrize("samples", [0, 1, 159, 160, 161, 16000, 16123])
def test_logmel_length_is_ceil_samples_over_hop(samples: int) -> None:
    feats = compute_logmel(np.zeros(samples, np.float32))
    assert feats.shape == (-(-samples // 160), N_MELS) and feats.dtype == np.float32


def test_filterbank_shape_and_coverage() -> None:
    fb = mel_filterbank()
    assert fb.shape == (80, 257)
    assert (fb >= 0).all() and (fb.sum(1) > 0).all()
    peaks = fb.argmax(1)
    assert (np.diff(peaks) >= 0).all()  # filters ordered by frequency


def test_tone_lands_in_the_right_bin() -> None:
    t = np.arange(16000) / 16000.0
    fb = mel_filterbank()
    freqs = np.linspace(0, 8000, 257)
    for hz in (300.0, 1000.0, 4000.0):
        feats = compute_logmel((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32))
        expected = fb[:, np.argmin(np.abs(freqs - hz))].argmax()
        assert abs(int(feats[50].argmax()) - int(expected)) <= 1
    loud = compute_logmel((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))[50].max()
    quiet = compute_logmel((0.005 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))[50].max()
    assert loud - quiet == pytest.approx(2 * np.log(100.0), abs=0.1)  # power ratio 100^2


def test_load_audio_features_matches_compute(tmp_path: Path) -> None:
    t = np.arange(8000) / 16000.0
    audio = (0.3 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    write_wav(tmp_path / "a.wav", audio)
    loaded, feats = load_audio_features(tmp_path / "a.wav")
    assert loaded.shape == (8000,) and feats.shape == (50, 80)
    np.testing.assert_allclose(feats, compute_logmel(loaded), atol=1e-5)
    np.testing.assert_allclose(loaded, audio, atol=1e-3)  # PCM16 round trip


def test_frame_energy_follows_loudness() -> None:
    audio = np.zeros(32000, np.float32)
    audio[16000:] = 0.5 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000.0)
    e = frame_energy(compute_logmel(audio), fps=25.0, num_frames=50)
    assert e.shape == (50,) and e[30:].min() > e[:20].max() + 1.5
