"""Helpers shared by the render tests: a tiny run folder without training, test audio, PSNR.

Not a test module (its name does not start with ``test_``); its own check is in tests/test_media.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from talk3d.media import write_wav


def make_run_folder(root: Path, seed: int = 0, **model_overrides) -> Path:
    """A loadable run folder with an untrained tiny avatar (tiny dataset in ``root/data``).

    Written with the checkpoint module's own writers, so :func:`load_run` reads it like a
    fitted run; rendering tests do not depend on the trainer.
    """
    from PIL import Image

    from talk3d.fit.checkpoint import copy_dataset_files, save_avatar
    from talk3d.model.avatar import Avatar
    from talk3d.model.config import ModelConfig
    from tests.tiny_data import make_tiny_dataset

    data = make_tiny_dataset(root / "data", seed=seed)
    torch.manual_seed(seed)
    cfg = ModelConfig.tiny(audio_dim=80, **model_overrides)
    avatar = Avatar(cfg)
    with Image.open(data / "background.png") as im:
        avatar.set_background(np.array(im))
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    save_avatar(run, avatar, cfg, {}, 0, {}, str(data))
    copy_dataset_files(data, run)
    return run


def write_speech_like(path: Path, seconds: float = 1.0, rate: int = 16000, channels: int = 1) -> Path:
    """A tone with a 2 Hz syllable envelope (16-bit wav at any rate/channels) for driving renders."""
    t = np.arange(int(round(seconds * rate))) / rate
    x = 0.3 * (0.5 + 0.5 * np.sin(2 * math.pi * 2 * t)) * np.sin(2 * math.pi * 180 * t)
    if channels == 1 and rate == 16000:
        write_wav(path, x.astype(np.float32))
        return path
    import wave

    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    pcm = np.repeat(pcm[:, None], channels, 1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1]."""
    return float(-10 * torch.log10(((a.float() - b.float()) ** 2).mean().clamp_min(1e-12)))

