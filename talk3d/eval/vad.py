"""Voice activity per video frame: silero-vad when installed (``talk3d[eval]``), else energy.

silero-vad 6 ships its TorchScript model inside the wheel and needs only torch (no
torchaudio), so it works offline. Importing it calls ``torch.set_num_threads(1)``; this
module restores the previous thread count so rendering speed is not affected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import binary_closing, binary_opening

HOP_SECONDS = 0.010
WINDOW_SECONDS = 0.025


@dataclass
class EnergyVADConfig:
    """Settings of the energy-based voice activity detector."""

    margin_db: float = 12.0
    """Speech is louder than the noise floor (10th percentile of frame energy) by this much."""
    range_db: float = 35.0
    """...and no quieter than the loudest frame minus this (keeps breathing out)."""
    min_speech_s: float = 0.06
    """Shorter bursts are dropped (morphological opening)."""
    min_pause_s: float = 0.15
    """Shorter gaps inside speech are filled (morphological closing)."""


def frame_energy_db(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS energy in dB of 25 ms windows every 10 ms.

    Args:
        audio: ``(S,)`` float samples.
    Returns:
        ``(ceil(S / hop),)`` float64 dB (floor -120).
    """
    hop = int(round(HOP_SECONDS * sample_rate))
    win = int(round(WINDOW_SECONDS * sample_rate))
    x = np.asarray(audio, dtype=np.float64)
    n = int(math.ceil(len(x) / hop))
    padded = np.pad(x, (win // 2, win + n * hop - len(x)))
    sq = np.concatenate([[0.0], np.cumsum(padded**2)])
    starts = np.arange(n) * hop
    energy = (sq[starts + win] - sq[starts]) / win
    return 10.0 * np.log10(np.maximum(energy, 1e-12))


def energy_vad(audio: np.ndarray, sample_rate: int, config: EnergyVADConfig | None = None) -> np.ndarray:
    """Energy-threshold voice activity at 100 Hz.

    Args:
        audio: ``(S,)`` float samples in [-1, 1].
    Returns:
        ``(T,)`` bool, ``T = ceil(S / (sample_rate * 0.01))``.
    """
    cfg = config or EnergyVADConfig()
    db = frame_energy_db(audio, sample_rate)
    if db.size == 0:
        return np.zeros(0, dtype=bool)
    floor = np.percentile(db, 10)
    thr = max(floor + cfg.margin_db, db.max() - cfg.range_db)
    active = db > thr
    open_n = max(1, int(round(cfg.min_speech_s / HOP_SECONDS)))
    close_n = max(1, int(round(cfg.min_pause_s / HOP_SECONDS)))
    padded = np.pad(active, close_n, mode="edge")  # closing must not erode speech at the ends
    active = binary_closing(padded, structure=np.ones(close_n))[close_n:-close_n]
    active = binary_opening(active, structure=np.ones(open_n))
    return active.astype(bool)


def silero_available() -> bool:
    """Whether silero-vad can be imported (part of the optional ``talk3d[eval]`` extra)."""
    import importlib.util

    return importlib.util.find_spec("silero_vad") is not None


def silero_vad(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """silero-vad speech probability at 100 Hz (``(T,)`` float in [0, 1]); 16 kHz audio only."""
    if sample_rate != 16000:
        raise ValueError("silero_vad expects 16 kHz audio")
    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad

        model = load_silero_vad()
    finally:
        torch.set_num_threads(threads)
    chunk = 512  # 32 ms at 16 kHz, the model's window
    x = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    n_chunks = int(math.ceil(len(x) / chunk))
    x = torch.nn.functional.pad(x, (0, n_chunks * chunk - len(x)))
    model.reset_states()
    probs = np.empty(n_chunks, dtype=np.float64)
    with torch.inference_mode():
        for i in range(n_chunks):
            probs[i] = float(model(x[i * chunk:(i + 1) * chunk], sample_rate))
    t_chunks = (np.arange(n_chunks) + 0.5) * chunk / sample_rate
    n = int(math.ceil(len(audio) / (HOP_SECONDS * sample_rate)))
    t = (np.arange(n) + 0.5) * HOP_SECONDS
    return np.interp(t, t_chunks, probs)


def voice_activity(audio: np.ndarray, sample_rate: int, method: str = "auto") -> tuple[np.ndarray, str]:
    """Voice activity at 100 Hz with the best available detector.

    Args:
        audio: ``(S,)`` float samples.
        method: ``"auto"`` (silero when installed, else energy), ``"silero"`` or ``"energy"``.
    Returns:
        ``(T,)`` float activity in [0, 1] (speech probability or 0/1) and the method used.
    """
    if method not in ("auto", "silero", "energy"):
        raise ValueError(f"unknown VAD method {method!r}")
    if method in ("auto", "silero") and sample_rate == 16000 and silero_available():
        return silero_vad(audio, sample_rate), "silero-vad"
    if method == "silero":
        raise RuntimeError("silero-vad is not installed (pip install 'talk3d[eval]')")
    return energy_vad(audio, sample_rate).astype(np.float64), "energy"


def to_frame_rate(activity: np.ndarray, fps: float, num_frames: int, rate: float = 100.0) -> np.ndarray:
    """Average a ``rate`` Hz activity signal over each video frame's interval.

    Returns:
        ``(num_frames,)`` float in [0, 1] (0 past the end of the audio).
    """
    act = np.asarray(activity, dtype=np.float64)
    out = np.zeros(num_frames)
    for i in range(num_frames):
        a = int(math.floor(i / fps * rate))
        b = max(a + 1, int(math.floor((i + 1) / fps * rate)))
        seg = act[a:b]
        out[i] = seg.mean() if seg.size else 0.0
    return out
