"""Tiny generated media for the prep tests (astronaut photo warped per frame), plus probe tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from talk3d.media import VideoWriter, write_wav

CENTRE = (225.0, 150.0)  # astronaut face centre region in the 512x512 photo (x, y)
HALF = 120


def astronaut_region() -> np.ndarray:
    """``(240, 240, 3)`` uint8 head-and-shoulders crop of skimage's astronaut photo."""
    from skimage import data

    img = data.astronaut()
    cx, cy = int(CENTRE[0]), int(CENTRE[1])
    return np.ascontiguousarray(img[cy - HALF:cy + HALF, cx - HALF:cx + HALF])


def warp_params(n: int, roll_amp: float = 6.0, shift_amp: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth per-frame in-plane rotation (degrees, counter-clockwise) and translation (pixels)."""
    t = np.arange(n) / n
    angles = roll_amp * np.sin(2 * np.pi * t)
    shifts = np.stack([shift_amp * np.sin(2 * np.pi * t + 1.0), 0.5 * shift_amp * np.cos(2 * np.pi * t)], 1)
    return angles, shifts


def warp_matrix(angle: float, shift: np.ndarray, size: int) -> np.ndarray:
    """``(2, 3)`` affine in continuous pixel coordinates: rotate about the image centre, then shift."""
    import cv2

    c = size / 2.0
    m = cv2.getRotationMatrix2D((c, c), float(angle), 1.0)
    m[:, 2] += shift
    return m


def to_index_affine(m: np.ndarray) -> np.ndarray:
    """Continuous-coordinate affine -> pixel-index affine (for ``cv2.warpAffine``)."""
    out = m.copy()
    out[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return out


def write_tone(path: Path, seconds: float) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000.0
    write_wav(path, (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32))
    return path


def make_clip(path: Path, frames: list[np.ndarray], fps: float = 25.0, audio: bool = True) -> Path:
    """Encode frames (H.264) with a tone as sound track (or none)."""
    wav = write_tone(path.with_suffix(".wav"), len(frames) / fps) if audio else None
    with VideoWriter(path, fps=fps, audio=wav, quality=12) as vw:
        vw.write_all(frames)
    return path


def astronaut_clip(path: Path, n: int = 80, fps: float = 25.0, audio: bool = True,
                   static: bool = False) -> tuple[Path, np.ndarray, np.ndarray]:
    """Clip of the warped astronaut; returns the path, angles ``(n,)`` and shifts ``(n, 2)``."""
    import cv2

    base = astronaut_region()
    angles, shifts = warp_params(n)
    if static:
        angles, shifts = np.zeros_like(angles), np.zeros_like(shifts)
    frames = [cv2.warpAffine(base, to_index_affine(warp_matrix(a, s, base.shape[0])), base.shape[1::-1],
                             flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT) for a, s in zip(angles, shifts, strict=True)]
    return make_clip(path, frames, fps, audio), angles, shifts


def test_probe_reads_generated_clip(tmp_path: Path) -> None:
    from talk3d.video import FrameReader, probe_video

    clip, _, _ = astronaut_clip(tmp_path / "a.mp4", n=20)
    info = probe_video(clip)
    assert (info.width, info.height) == (240, 240)
    assert info.has_audio and abs(info.duration - 0.8) < 0.1 and info.fps == 25.0
    frames = list(FrameReader(info, fps=25.0))
    assert len(frames) == 20 and frames[0].shape == (240, 240, 3)
    # resampling to 50 fps doubles the count (constant frame rate output)
    assert abs(len(list(FrameReader(info, fps=50.0))) - 40) <= 1


def _face_landmarks(cx: float, cy: float, height: float) -> np.ndarray:
    """Two frames of a square 'face' of side ``height`` centred on ``(cx, cy)``: ``(2, 478, 3)``."""
    rng = np.random.default_rng(0)
    lm = np.zeros((2, 478, 3), np.float32)
    lm[..., 0] = cx + rng.uniform(-height / 2, height / 2, (2, 478))
    lm[..., 1] = cy + rng.uniform(-height / 2, height / 2, (2, 478))
    lm[:, 0, :2] = [cx - height / 2, cy - height / 2]
    lm[:, 1, :2] = [cx + height / 2, cy + height / 2]
    return lm


def test_crop_stays_inside_tight_footage_unless_padding_is_asked() -> None:
    from talk3d_prep.track import choose_crop

    valid = np.ones(2, bool)
    # a small face in a large frame: side = 2.8 x face height, centred (0.1 face heights lower)
    x0, y0, side = choose_crop(_face_landmarks(640, 300, 100), valid, 1280, 720)
    assert side == 280 and abs(x0 + side / 2 - 640) <= 1 and abs(y0 + side / 2 - 310) <= 1
    # a tight 450x450 close-up (the face is 60% of the frame): the crop is the whole frame, no padding
    lm = _face_landmarks(225, 200, 270)
    assert choose_crop(lm, valid, 450, 450) == (0, 0, 450)
    # a face near the right edge of a wide frame: shifted inside, never past the edge
    x0, y0, side = choose_crop(_face_landmarks(1200, 360, 250), valid, 1280, 720)
    assert side == 700 and x0 + side <= 1280 and y0 >= 0 and y0 + side <= 720
    # --crop-padding keeps the framing scale and extends past the frame (edge-replicated later)
    x0, y0, side = choose_crop(lm, valid, 450, 450, allow_padding=True)
    assert side == 756 and x0 < 0 and y0 < 0
