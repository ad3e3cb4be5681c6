"""Inspect rendered videos with the bundled ffmpeg (there is no ffprobe): codecs, size, duration."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

from talk3d.media import ffmpeg_exe, ffmpeg_path


@dataclass
class VideoInfo:
    """What ``ffmpeg -i`` reports about a file."""

    duration: float
    """Container duration in seconds."""
    video_codec: str | None
    """Codec name of the first video stream (``h264``), or ``None``."""
    audio_codec: str | None
    """Codec name of the first audio stream (``aac``), or ``None``."""
    width: int
    """Frame width in pixels (0 without video)."""
    height: int
    """Frame height in pixels (0 without video)."""
    fps: float
    """Frame rate of the video stream (0 without video)."""


def probe(path: str | os.PathLike) -> VideoInfo:
    """Parse ``ffmpeg -i PATH`` (which exits 1 because no output is given; that is expected)."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", ffmpeg_path(path)], capture_output=True)
    text = proc.stderr.decode(errors="replace")
    if "Duration:" not in text:
        raise ValueError(f"ffmpeg cannot read '{path}': {text.strip().splitlines()[-1:]}")
    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", text).groups()
    duration = int(h) * 3600 + int(m) * 60 + float(s)
    v = re.search(r"Stream #\S+.*?: Video: (\w+).*?, (\d{2,5})x(\d{2,5})", text)
    a = re.search(r"Stream #\S+.*?: Audio: (\w+)", text)
    f = re.search(r"([\d.]+) fps", text)
    return VideoInfo(duration=duration, video_codec=v.group(1) if v else None, audio_codec=a.group(1) if a else None,
                     width=int(v.group(2)) if v else 0, height=int(v.group(3)) if v else 0,
                     fps=float(f.group(1)) if f else 0.0)


def count_frames(path: str | os.PathLike) -> int:
    """Number of decoded video frames."""
    import imageio_ffmpeg

    n, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    return int(n)


def read_frames(path: str | os.PathLike):
    """Iterate over the video's frames as ``(H, W, 3)`` uint8 arrays."""
    import imageio_ffmpeg
    import numpy as np

    gen = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(gen)
        w, h = meta["size"]
        for buf in gen:
            yield np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
    finally:
        gen.close()  # stops ffmpeg when the caller stops early
