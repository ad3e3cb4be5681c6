"""Tiny synthetic datasets and runs for unit tests (CPU, a few KB, built in well under a second).

``make_tiny_dataset`` writes a complete dataset in the format of :mod:`talk3d.dataset`: a
coloured disc "head" with a dark mouth that opens with the audio envelope, on a plain
background, seen by a camera that orbits slightly (small yaw variation). Landmarks are
the projections of a canonical landmark shape (points on an ellipsoid face, with the
mediapipe mouth indices placed on the mouth), so they agree with the poses.

``make_tiny_run`` fits a tiny avatar on such a dataset for a couple of steps, for tests of
rendering and evaluation.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from talk3d.camera import frontal_cam2world, intrinsics_matrix, orbit, project
from talk3d.dataset import NUM_LANDMARKS, Manifest, frame_name, validate, write_manifest
from talk3d.io import atomic_path, write_npy
from talk3d.media import write_wav

TINY_FPS = 25.0
TINY_DISTANCE = 4.0
TINY_FOCAL = 1.6  # normalised: the unit-radius head spans about 0.8 of the image width
AUDIO_RATE = 16000
FEATURE_RATE = 100.0

# mediapipe FaceMesh indices around the lips (outer and inner contour) used for the mouth box.
MOUTH_INDICES = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181,
                 185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375,
                 402, 405, 409, 415)


def canonical_shape(seed: int = 0) -> np.ndarray:
    """``(478, 3)`` float32 points on the front of an ellipsoid face; lips on a mouth ellipse."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(-0.8, 0.8, NUM_LANDMARKS)
    v = rng.uniform(-0.9, 0.9, NUM_LANDMARKS)
    pts = np.stack([0.8 * u, 0.95 * v, np.zeros_like(u)], -1)
    for k, idx in enumerate(MOUTH_INDICES):
        a = 2 * math.pi * k / len(MOUTH_INDICES)
        pts[idx, 0] = 0.3 * math.cos(a)
        pts[idx, 1] = -0.45 + 0.08 * math.sin(a)
    r2 = (pts[:, 0] / 0.8) ** 2 + (pts[:, 1] / 0.95) ** 2
    pts[:, 2] = 0.7 * np.sqrt(np.clip(1.0 - r2, 0.0, None))
    return pts.astype(np.float32)


def _audio(num_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Audio samples ``(S,)``, per-frame envelope ``(N,)`` in [0, 1], features ``(T, 80)``."""
    rng = np.random.default_rng(seed)
    dur = num_frames / TINY_FPS
    s = int(round(dur * AUDIO_RATE))
    t = np.arange(s) / AUDIO_RATE
    env = 0.5 + 0.5 * np.sin(2 * math.pi * 1.5 * t + rng.uniform(0, 2 * math.pi))
    audio = (0.4 * env * np.sin(2 * math.pi * 220.0 * t) + 0.01 * rng.standard_normal(s)).astype(np.float32)
    frame_t = (np.arange(num_frames) + 0.5) / TINY_FPS
    frame_env = np.interp(frame_t, t, env).astype(np.float32)
    num_feat = int(math.ceil(s / (AUDIO_RATE / FEATURE_RATE)))
    feat_t = np.arange(num_feat) / FEATURE_RATE
    feat_env = np.interp(feat_t, t, env)
    bands = np.exp(-0.5 * ((np.arange(80) - 20.0) / 6.0) ** 2)
    feats = np.log(1e-3 + feat_env[:, None] * bands[None, :] + 0.01 * rng.random((num_feat, 80)))
    return audio, frame_env, feats.astype(np.float16)


def make_tiny_dataset(root: str | os.PathLike, num_frames: int = 12, size: int = 32, seed: int = 0) -> Path:
    """Write a complete tiny dataset to ``root`` and return its path.

    Args:
        root: folder to create (must not hold a dataset already; files are overwritten).
        num_frames: ``N`` frames; the last ``max(2, N // 10)`` are the validation split.
        size: side of the square frames in pixels.
        seed: random seed (landmark layout, colours, audio noise).
    """
    root = Path(root)
    (root / "frames").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(num_frames)
    yaw = 6.0 * np.sin(np.linspace(0, 2 * math.pi, n, endpoint=False))
    poses = orbit(frontal_cam2world(TINY_DISTANCE, n), torch.tensor(yaw, dtype=torch.float32), 0.0)
    k = intrinsics_matrix(TINY_FOCAL)
    canon = canonical_shape(seed)
    pix, z = project(torch.from_numpy(canon).expand(n, -1, -1), poses, k, size)
    # z in pixels, mediapipe-like: relative to the head centre depth, scaled like x.
    z_pix = (z - TINY_DISTANCE) * TINY_FOCAL * size / TINY_DISTANCE
    landmarks = torch.cat([pix, z_pix[..., None]], -1).numpy().astype(np.float32)
    centre, _ = project(torch.zeros(n, 1, 3), poses, k, size)
    centre = centre[:, 0].numpy()
    audio, frame_env, feats = _audio(n, seed)
    blink = np.clip(np.sin(np.linspace(0, 3 * math.pi, n)) ** 8, 0, 1).astype(np.float32)

    bg_colour = rng.uniform(0.2, 0.4, 3)
    head_colour = rng.uniform(0.6, 0.9, 3)
    torso_colour = rng.uniform(0.1, 0.3, 3) + np.array([0.0, 0.0, 0.3])
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    radius = 0.8 * TINY_FOCAL * size / TINY_DISTANCE
    background = np.broadcast_to(bg_colour, (size, size, 3))
    _save_png(root / "background.png", background)
    for i in range(n):
        cx, cy = centre[i]
        head = (xs - cx) ** 2 / (0.8 * radius) ** 2 + (ys - cy) ** 2 / radius**2 <= 1.0
        torso = (ys > cy + 0.8 * radius) & (np.abs(xs - cx) < 1.4 * radius) & ~head
        img = np.array(background)
        img[torso] = torso_colour
        shade = 0.85 + 0.15 * np.clip(1.0 - ((xs - cx) ** 2 + (ys - cy) ** 2) / radius**2, 0, 1)
        img[head] = (head_colour[None, :] * shade[head][:, None])
        lips = landmarks[i, list(MOUTH_INDICES), :2]
        mx, my = lips[:, 0].mean(), lips[:, 1].mean()
        mw = 0.5 * (lips[:, 0].max() - lips[:, 0].min())
        mh = 0.5 + 0.12 * radius * frame_env[i]
        mouth = ((xs - mx) / max(mw, 1.0)) ** 2 + ((ys - my) / mh) ** 2 <= 1.0
        img[mouth & head] = (0.35, 0.05, 0.08)
        eye_h = 0.04 * radius * (1.0 - blink[i]) + 0.3
        for ex in (cx - 0.3 * radius, cx + 0.3 * radius):
            eye = ((xs - ex) / (0.12 * radius)) ** 2 + ((ys - (cy - 0.25 * radius)) / eye_h) ** 2 <= 1.0
            img[eye & head] = (0.05, 0.05, 0.1)
        mask = np.zeros((size, size), np.uint8)
        mask[torso] = 1
        mask[head] = 2
        _save_png(root / "frames" / frame_name(i, "jpg"), img, jpeg=True)
        with atomic_path(root / "masks" / frame_name(i, "png")) as tmp:
            Image.fromarray(mask).save(tmp)

    write_npy(root / "landmarks.npy", landmarks)
    write_npy(root / "landmark_valid.npy", np.ones(n, dtype=bool))
    write_npy(root / "poses.npy", poses.numpy().astype(np.float32))
    write_npy(root / "canonical_landmarks.npy", canon)
    write_npy(root / "audio_feats.npy", feats)
    write_npy(root / "blink.npy", blink)
    write_wav(root / "audio.wav", audio, AUDIO_RATE)
    manifest = Manifest(
        num_frames=n, fps=TINY_FPS, size=size, intrinsics=k.tolist(), train_end=n - max(2, n // 10),
        source="synthetic:tiny", source_size=[size, size], crop_box=[0.0, 0.0, float(size)],
        audio_sample_rate=AUDIO_RATE, audio_feature_rate=FEATURE_RATE, audio_feature_dim=80,
        scene_scale=TINY_FOCAL * size / TINY_DISTANCE, camera_distance=TINY_DISTANCE,
        prep_settings={"synthetic": True, "seed": seed},
    )
    write_manifest(root, manifest)
    validate(root)
    return root


def _save_png(path: Path, img: np.ndarray, jpeg: bool = False) -> None:
    arr = (np.clip(np.asarray(img, dtype=np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        if jpeg:
            Image.fromarray(arr).save(tmp, format="JPEG", quality=95)
        else:
            Image.fromarray(arr).save(tmp, format="PNG")


def make_tiny_run(root: str | os.PathLike, steps: int = 2, seed: int = 0) -> Path:
    """Fit a tiny avatar for ``steps`` steps on a fresh tiny dataset; return the run folder.

    The dataset goes to ``root/data`` and the run to ``root/run``.
    """
    from talk3d.fit.config import tiny_config
    from talk3d.fit.trainer import fit

    root = Path(root)
    data = make_tiny_dataset(root / "data", seed=seed)
    cfg = tiny_config(steps=steps)
    cfg.seed = seed
    fit(data, root / "run", cfg)
    return root / "run"
