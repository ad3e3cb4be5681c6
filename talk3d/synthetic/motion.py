"""Ground-truth motion of the synthetic clip: speech-like audio, mouth, blinks, head pose.

Everything is deterministic for a seed. The mouth opening of frame ``i`` is the loudness
envelope of the audio around the frame's instant ``i / fps``, so mouth and audio are in sync
by construction (lag 0).
"""

from __future__ import annotations

import math

import numpy as np


def syllable_envelope(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Loudness envelope of speech: phrases of syllables (~4-6 Hz) separated by pauses.

    Returns:
        ``(S,)`` float64 in [0, 1], ``S = round(seconds * rate)``.
    """
    n = int(round(seconds * rate))
    env = np.zeros(n)
    t = rng.uniform(0.3, 0.6)
    while t < seconds - 0.3:
        for _ in range(int(rng.integers(3, 10))):
            dur = rng.uniform(0.14, 0.3)
            peak = rng.uniform(0.45, 1.0)
            i0, i1 = int(t * rate), min(int((t + dur) * rate), n)
            if i1 <= i0:
                break
            phase = np.linspace(0.0, math.pi, i1 - i0)
            env[i0:i1] = np.maximum(env[i0:i1], peak * np.sin(phase) ** 1.5)
            t += dur * rng.uniform(0.85, 1.05)
            if t >= seconds - 0.3:
                break
        t += rng.uniform(0.35, 0.9)  # pause between phrases
    return env


def speech_like_audio(seconds: float, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A voiced, speech-like signal: a gliding harmonic source shaped by moving formants,
    amplitude-modulated by :func:`syllable_envelope`.

    Returns:
        audio ``(S,)`` float32 in [-1, 1] and its envelope ``(S,)`` float64 in [0, 1].
    """
    env = syllable_envelope(seconds, rate, rng)
    n = env.size
    t = np.arange(n) / rate
    f0 = 150.0 + 25.0 * np.sin(2 * math.pi * 0.35 * t + rng.uniform(0, 6.3)) \
        + 10.0 * np.sin(2 * math.pi * 2.1 * t + rng.uniform(0, 6.3))
    phase = 2 * math.pi * np.cumsum(f0) / rate
    # formants move smoothly (a new vowel every ~0.2 s)
    knots = np.arange(0.0, seconds + 0.4, 0.2)
    f1 = np.interp(t, knots, rng.uniform(300, 850, knots.size))
    f2 = np.interp(t, knots, rng.uniform(900, 2300, knots.size))
    out = np.zeros(n)
    for k in range(1, 30):
        fk = k * f0
        gain = (np.exp(-(((fk - f1) / 120.0) ** 2)) + 0.6 * np.exp(-(((fk - f2) / 180.0) ** 2)) + 0.05) / k ** 0.5
        gain = np.where(fk < 0.45 * rate, gain, 0.0)
        out += gain * np.sin(k * phase)
    out += 0.05 * rng.standard_normal(n)  # breath
    out *= env
    out *= 0.6 / max(np.abs(out).max(), 1e-8)
    return out.astype(np.float32), env


def frame_envelope(env: np.ndarray, rate: int, fps: float, num_frames: int) -> np.ndarray:
    """Mean envelope over each frame's interval ``[(i - 0.5) / fps, (i + 0.5) / fps)``: ``(N,)``."""
    out = np.zeros(num_frames)
    for i in range(num_frames):
        a = max(int((i - 0.5) / fps * rate), 0)
        b = min(int((i + 0.5) / fps * rate), env.size)
        out[i] = env[a:b].mean() if b > a else 0.0
    return out


def blink_track(num_frames: int, fps: float, rng: np.random.Generator, interval: tuple[float, float] = (2.0, 5.0),
                duration: float = 0.24) -> np.ndarray:
    """Eye closure ``(N,)`` in [0, 1]: smooth blinks at random intervals."""
    out = np.zeros(num_frames)
    t = rng.uniform(0.8, interval[1])
    times = np.arange(num_frames) / fps
    while t < num_frames / fps:
        x = (times - t) / (0.5 * duration)
        out = np.maximum(out, np.where(np.abs(x) < 1.0, np.cos(0.5 * math.pi * x) ** 2, 0.0))
        t += rng.uniform(*interval)
    return out


def smooth_angle(num_frames: int, fps: float, amplitude: float, rng: np.random.Generator,
                 freqs: tuple[float, float] = (0.05, 0.3)) -> np.ndarray:
    """Smooth head angle (degrees) ``(N,)``: a sum of three slow sinusoids scaled so that its
    largest magnitude is ``amplitude``."""
    if amplitude == 0.0 or num_frames == 0:
        return np.zeros(num_frames)
    t = np.arange(num_frames) / fps
    sig = np.zeros(num_frames)
    for _ in range(3):
        sig += rng.uniform(0.5, 1.0) * np.sin(2 * math.pi * rng.uniform(*freqs) * t + rng.uniform(0, 6.3))
    return amplitude * sig / max(np.abs(sig).max(), 1e-8)
