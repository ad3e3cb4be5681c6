"""The second pass over the video: cropped frames, label masks and background samples."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from talk3d.console import make_progress
from talk3d.dataset import frame_name
from talk3d.errors import UserError
from talk3d.video import FrameReader
from talk3d_prep.masks import BackgroundAccumulator, PersonSegmenter, label_mask


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _encode_and_write(frames_dir: Path, masks_dir: Path, index: int, crop: np.ndarray, labels: np.ndarray,
                      quality: int) -> None:
    import cv2

    ok1, jpg = cv2.imencode(".jpg", crop[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    ok2, png = cv2.imencode(".png", labels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not (ok1 and ok2):
        raise OSError(f"could not encode frame {index}")
    _write_bytes(frames_dir / frame_name(index, "jpg"), jpg.tobytes())
    _write_bytes(masks_dir / frame_name(index, "png"), png.tobytes())


def write_frames_and_masks(reader: FrameReader, out_dir: Path, landmarks: np.ndarray,
                           size: int, quality: int = 95, seg_size: int = 256, background_samples: int = 40,
                           seg_stride: int = 2) -> tuple[np.ndarray, float]:
    """Decode the video again; write ``frames/``, ``masks/``; build the background plate.

    Args:
        reader: yields the cropped ``(size, size, 3)`` frames (``FrameReader(crop=..., out_size=size)``).
        seg_stride: run the person segmentation on every ``seg_stride``-th frame (and the last)
            and blend the probabilities linearly in between (1 = every frame).
        landmarks: ``(N, 478, 3)`` crop-pixel landmarks (gaps filled).
    Returns:
        background plate ``(size, size, 3)`` uint8 and the fraction of it never seen.
    """
    import cv2

    n = landmarks.shape[0]
    frames_dir, masks_dir = out_dir / "frames", out_dir / "masks"
    frames_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    samples = np.unique(np.linspace(0, n - 1, min(background_samples, n)).round().astype(int))
    background = BackgroundAccumulator(samples, size)
    segmenter = PersonSegmenter(seg_size)
    pending: deque[Future] = deque()
    count = 0
    waiting: list[tuple[int, np.ndarray]] = []  # frames between segmentation key frames
    last_key: tuple[int, np.ndarray] | None = None

    def emit(index: int, crop: np.ndarray, prob: np.ndarray) -> None:
        labels = label_mask(prob, landmarks[index], size)
        if background.wants(index):
            background.add(index, crop, labels)
        pending.append(pool.submit(_encode_and_write, frames_dir, masks_dir, index, crop, labels, quality))
        while len(pending) > 16:
            pending.popleft().result()

    try:
        with ThreadPoolExecutor(max_workers=1) as pool, make_progress() as bar:
            task = bar.add_task("frames + masks", total=n, status="")
            for i, frame in enumerate(reader):
                if i >= n:
                    raise UserError(f"'{reader.info.path}' decoded to more frames than on the first pass "
                                    f"({i + 1} > {n}); re-run with --force")
                count += 1
                if last_key is not None and i % max(1, seg_stride) and i != n - 1:
                    waiting.append((i, frame))
                    continue
                prob = segmenter(cv2.resize(frame, (seg_size, seg_size), interpolation=cv2.INTER_AREA))
                for j, crop_j in waiting:
                    assert last_key is not None
                    w = (j - last_key[0]) / (i - last_key[0])
                    emit(j, crop_j, (1.0 - w) * last_key[1] + w * prob)
                    bar.advance(task)
                waiting.clear()
                emit(i, frame, prob)
                bar.advance(task)
                last_key = (i, prob)
            while pending:
                pending.popleft().result()
    finally:
        segmenter.close()
    if count != n:
        raise UserError(f"'{reader.info.path}' decoded to {count} frames on the second pass but {n} on the "
                        f"first; re-run with --force")
    return background.plate()
