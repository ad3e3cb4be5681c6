"""Audio features shared by prep and render: 80-bin log-mel spectrogram at 100 Hz.

The features are computed the same way for the training video (prep) and for new driving
audio (render), so the model sees one distribution. librosa is not used (its first call
JIT-compiles numba for ~14 s); the Slaney-style mel filterbank is built here in numpy and
the STFT runs in torch.

Phones (pocketsphinx) are computed on the same rows by :mod:`talk3d.phonemes`.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from talk3d.media import AUDIO_RATE, read_audio

N_MELS = 80
"""Mel bins."""
HOP = 160
"""Samples per feature row (10 ms at 16 kHz)."""
WIN = 400
"""Analysis window length in samples (25 ms at 16 kHz)."""
N_FFT = 512
"""FFT size (the 400-sample window is zero-padded to it)."""
FEATURE_RATE = AUDIO_RATE / HOP
"""Feature rows per second (100 Hz)."""
LOG_FLOOR = 1e-6
"""Added to mel power before the log, so silence maps to about ln(1e-6) = -13.8."""


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3.0
    mel = f / f_sp
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=4)
def mel_filterbank(sample_rate: int = AUDIO_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Slaney-normalised triangular mel filters.

    Returns:
        ``(n_mels, n_fft // 2 + 1)`` float32 weights (each filter has unit area in Hz).
    """
    fmax = sample_rate / 2.0 if fmax is None else fmax
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_pts = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_pts[2:] - mel_pts[:-2]))[:, None]
    return weights.astype(np.float32)


def num_feature_frames(num_samples: int) -> int:
    """Rows of :func:`compute_logmel` for ``num_samples`` samples: ``ceil(S / 160)``."""
    return -(-int(num_samples) // HOP)


def compute_logmel(audio: np.ndarray) -> np.ndarray:
    """80-bin log-mel spectrogram, 25 ms window, 10 ms hop, centred frames.

    Args:
        audio: ``(S,)`` float32 samples at 16 kHz in [-1, 1].
    Returns:
        ``(T, 80)`` float32 natural-log mel power, ``T = ceil(S / 160)``; row ``t`` is
        centred on sample ``160 * t``.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D (S,), got shape {audio.shape}")
    t_out = num_feature_frames(audio.shape[0])
    if t_out == 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    x = torch.from_numpy(audio)
    window = torch.hann_window(WIN, periodic=True)
    spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP, win_length=WIN, window=window, center=True,
                      pad_mode="constant", return_complex=True)  # (F, T')
    power = spec.real.square() + spec.imag.square()
    mel = torch.from_numpy(mel_filterbank()) @ power  # (80, T')
    logmel = torch.log(mel + LOG_FLOOR).T.contiguous().numpy()
    if logmel.shape[0] < t_out:  # cannot happen with centre padding; kept for safety
        logmel = np.pad(logmel, ((0, t_out - logmel.shape[0]), (0, 0)), mode="edge")
    return logmel[:t_out].astype(np.float32)


def load_audio_features(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read any audio/video file as 16 kHz mono and compute its log-mel features.

    Returns:
        audio ``(S,)`` float32 and log-mel ``(ceil(S / 160), 80)`` float32.
    Raises:
        UserError: the file is missing or has no audio.
    """
    audio = read_audio(path, AUDIO_RATE)
    return audio, compute_logmel(audio)


def frame_energy(logmel: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """Mean log-mel energy per video frame (a cheap voice-activity proxy).

    Args:
        logmel: ``(T, 80)`` features at 100 Hz.
    Returns:
        ``(num_frames,)`` float32, frame ``i`` averages rows of ``[i, i+1) / fps`` seconds.
    """
    e = np.asarray(logmel, dtype=np.float32).mean(axis=1)
    out = np.zeros(num_frames, dtype=np.float32)
    for i in range(num_frames):
        a = int(round(i / fps * FEATURE_RATE))
        b = max(a + 1, int(round((i + 1) / fps * FEATURE_RATE)))
        seg = e[a:b]
        out[i] = seg.mean() if seg.size else (e[-1] if e.size else 0.0)
    return out
