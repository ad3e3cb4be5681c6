"""Driving audio for rendering: read + normalise like prep, check it, count frames."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talk3d.errors import UserError
from talk3d.media import AUDIO_RATE

SILENCE_RMS = 1e-4
"""RMS (full scale = 1) below which the driving audio counts as silent."""


@dataclass
class DrivingAudio:
    """Normalised driving audio and its features."""

    path: Path
    """The file the user gave (muxed into the output as AAC)."""
    samples: np.ndarray
    """``(S,)`` float32 mono at 16 kHz, normalised exactly as prep does."""
    features: np.ndarray
    """``(T, D)`` float32 features (log-mel) at ``feature_rate`` rows per second."""
    feature_rate: float
    """Rows per second of ``features``."""

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.samples.shape[0] / AUDIO_RATE


def frame_count(duration: float, fps: float) -> int:
    """Frames for ``duration`` seconds at ``fps``: ``round(duration * fps)``, at least 1."""
    return max(1, int(math.floor(duration * fps + 0.5)))


def load_driving_audio(path: str | os.PathLike) -> DrivingAudio:
    """Read any audio ffmpeg understands and compute its features like prep does.

    Raises:
        UserError: missing, unreadable, empty or silent audio (one line with the fix).
    """
    from talk3d.audio import load_audio_features

    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio file '{path}' does not exist: give a wav/mp3/m4a file or a video with sound")
    audio, feats = load_audio_features(path)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        raise UserError(f"'{path}' contains no audio samples: give a file with sound")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if not rms > SILENCE_RMS:
        raise UserError(f"audio '{path}' is silent (RMS {rms:.1e}): give a recording with speech")
    return DrivingAudio(path=path, samples=audio, features=np.asarray(feats, dtype=np.float32),
                        feature_rate=_feature_rate())


def _feature_rate() -> float:
    import talk3d.audio as ta

    for name in ("FEATURE_RATE", "HOP_RATE", "FRAME_RATE"):
        if hasattr(ta, name):
            return float(getattr(ta, name))
    return 100.0
