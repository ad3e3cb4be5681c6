"""Side-by-side evaluation video: ground truth | render | yaw 30 | depth, with the clip's audio."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from talk3d.dataset import frames_audio
from talk3d.media import AUDIO_RATE, VideoWriter, read_audio, write_wav


def colorize_depth(depth: np.ndarray, size: int) -> np.ndarray:
    """Depth maps ``(F, h, w)`` -> turbo-coloured ``(F, size, size, 3)`` uint8 (near = red).

    The range is the 2nd-98th percentile over the whole sequence, so colours are comparable
    between frames.
    """
    import cv2

    d = np.asarray(depth, dtype=np.float32)
    finite = d[np.isfinite(d)]
    lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
    norm = np.clip((d - lo) / max(hi - lo, 1e-6), 0, 1)
    out = []
    for frame in norm:
        g = (255 * (1.0 - frame)).astype(np.uint8)  # near -> high -> red in turbo
        g = cv2.resize(g, (size, size), interpolation=cv2.INTER_LINEAR)
        out.append(cv2.cvtColor(cv2.applyColorMap(g, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB))
    return np.stack(out)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    import cv2

    img = img.copy()
    scale = max(0.35, img.shape[0] / 700)
    cv2.putText(img, text, (6, int(22 * scale / 0.7)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 2,
                cv2.LINE_AA)
    cv2.putText(img, text, (6, int(22 * scale / 0.7)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def write_side_by_side(path: str | os.PathLike, gt: np.ndarray, render: np.ndarray, side: np.ndarray | None,
                       depth: np.ndarray, fps: float, audio_path: str | os.PathLike | None = None,
                       frames: np.ndarray | None = None) -> Path:
    """Write the comparison video.

    Args:
        gt, render: ``(F, S, S, 3)`` uint8; ``side`` the same at yaw 30 (or None: column omitted).
        depth: ``(F, h, w)`` float depth of ``render``.
        audio_path: the dataset's ``audio.wav``; the sound of ``frames`` (the ``(F,)`` frame
            numbers shown, default ``0 .. F-1``; separate runs joined like the frames) is muxed in.
    Returns:
        the written path.
    """
    path = Path(path)
    n, size = len(gt), gt.shape[1]
    depth_rgb = colorize_depth(depth, size)
    with tempfile.TemporaryDirectory(prefix="talk3d_eval_") as tmp:
        audio_seg = None
        if audio_path is not None and Path(audio_path).is_file():
            audio = read_audio(audio_path, AUDIO_RATE)
            seg = frames_audio(audio, AUDIO_RATE, fps, np.arange(n) if frames is None else np.asarray(frames))
            if seg.size:
                audio_seg = Path(tmp) / "segment.wav"
                write_wav(audio_seg, seg, AUDIO_RATE)
        with VideoWriter(path, fps=fps, audio=audio_seg) as vw:
            for i in range(n):
                cols = [_label(gt[i], "ground truth"), _label(render[i], "render")]
                if side is not None:
                    cols.append(_label(side[i], "yaw 30"))
                cols.append(_label(depth_rgb[i], "depth"))
                vw.write(np.concatenate(cols, axis=1))
    return path
