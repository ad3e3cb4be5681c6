"""Novel views against ground truth: the held-out frames of a ``--holdout turned`` dataset.

Prep's turned split holds out the frames whose head yaw lies furthest from the clip's median
(:mod:`talk3d_prep.split`), so they show the real person at angles the avatar never trained on.
Each is rendered at its own tracked pose with its own audio and compared with the frame;
beside it a baseline of what "no 3D" gives: the avatar rendered at the pose (and torso
offset) of the nearest training frame in yaw/pitch, with the held-out frame's audio. Both get
PSNR, SSIM, head-region PSNR (the prep head mask), mouth and whole-face LMD (where the features lie
against the real frame's) and, with dlib installed, the identity distance to the real frame (a
sharp face slightly off in place loses PSNR to a blurred one; it still looks like the person), and
every frame the degrees it lies beyond the training range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from talk3d.camera import camera_angles
from talk3d.dataset import MASK_HEAD, TalkingHeadDataset
from talk3d.eval import dlib_face, metrics
from talk3d.eval.suites import SuiteResult, _to_tensor, nan_to_none, render_all
from talk3d.eval.tracking import detect_sequence


def degrees_beyond(angles: np.ndarray, train_angles: np.ndarray) -> np.ndarray:
    """How far each of ``angles (V, 2)`` (yaw, pitch degrees) lies outside the range of
    ``train_angles (T, 2)``: the larger of the yaw and pitch excess, ``(V,)`` (0 inside)."""
    lo, hi = train_angles.min(0), train_angles.max(0)
    excess = np.maximum(lo - angles, angles - hi).clip(min=0.0)
    return excess.max(1)


def nearest_training(angles: np.ndarray, train_angles: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Index into ``train_angles (T, 2)`` of the nearest training pose of each of ``angles (V, 2)``
    (``chunk`` rows at a time: memory ``chunk x T``, not ``V x T``)."""
    return np.concatenate([np.linalg.norm(angles[s:s + chunk, None, :] - train_angles[None], axis=-1).argmin(1)
                           for s in range(0, len(angles), chunk)]) if len(angles) else np.zeros(0, np.int64)


FACE_MESH = tuple(range(468))
"""FaceMesh landmarks of the face itself (irises left out): where the render puts eyes, nose, mouth and outline."""


@dataclass
class _Faces:
    """Faces found in a stack of frames: landmarks ``(V, 478, 3)``, found ``(V,)`` and, with dlib, embeddings."""

    landmarks: np.ndarray
    found: np.ndarray
    embeddings: list[np.ndarray | None] | None


def _faces(rgb: np.ndarray) -> _Faces:
    """Landmarks (mediapipe, static mode) of frames ``(V, S, S, 3)`` and their dlib face embeddings when dlib is
    installed (None per frame without a face)."""
    lm, found = detect_sequence(rgb, static=True)
    embeddings = None
    if dlib_face.available():
        embeddings = [dlib_face.face_embedding(frame, pts) if ok else None
                      for frame, pts, ok in zip(rgb, lm, found, strict=True)]
    return _Faces(lm, found, embeddings)


def _identity_distance(faces: _Faces, truth: _Faces) -> float | str | None:
    """Mean dlib distance between each frame's face and the real frame's (same person below 0.6);
    :data:`dlib_face.NOT_AVAILABLE` without dlib, None where no pair of faces was found."""
    if faces.embeddings is None or truth.embeddings is None:
        return dlib_face.NOT_AVAILABLE
    dists = [float(np.linalg.norm(a - b)) for a, b in zip(faces.embeddings, truth.embeddings, strict=True)
             if a is not None and b is not None]
    return float(np.mean(dists)) if dists else None


def _image_figures(rgb: np.ndarray, gt: np.ndarray, head: np.ndarray, truth: _Faces) -> dict[str, Any]:
    """PSNR, SSIM, head PSNR per frame, mouth and face LMD and identity distance of renders ``(V, S, S, 3)``
    against ``gt`` (whose faces are ``truth``)."""
    pred_t, gt_t = _to_tensor(rgb), _to_tensor(gt)
    head_t = torch.from_numpy(head)
    has_head = head.reshape(len(head), -1).any(1)
    head_psnr = np.full(len(rgb), np.nan)
    if has_head.any():
        head_psnr[has_head] = metrics.masked_psnr(pred_t[has_head], gt_t[has_head], head_t[has_head]).numpy()
    faces = _faces(rgb)
    both = faces.found & truth.found
    size = rgb.shape[1]

    def lmd(indices: tuple[int, ...]) -> float | None:
        return metrics.landmark_distance(faces.landmarks[both], truth.landmarks[both], size, indices) \
            if both.any() else None

    return {
        "psnr": metrics.psnr(pred_t, gt_t).numpy(), "ssim": metrics.ssim(pred_t, gt_t).numpy(),
        "head_psnr": head_psnr, "lmd_mouth": lmd(metrics.LIP_INDICES), "lmd_face": lmd(FACE_MESH),
        "identity_distance": _identity_distance(faces, truth), "face_detected": float(faces.found.mean()),
    }


def _summary(per_frame: dict[str, Any]) -> dict[str, Any]:
    return {"psnr": metrics.finite_mean(per_frame["psnr"]), "ssim": float(np.mean(per_frame["ssim"])),
            "head_psnr": nan_to_none(metrics.finite_mean(per_frame["head_psnr"])),
            **{name: per_frame[name] for name in ("lmd_mouth", "lmd_face", "identity_distance", "face_detected")}}


def turned_views(driver: Any, dataset: TalkingHeadDataset, batch_size: int, max_frames: int = 240) -> SuiteResult:
    """The held-out turned frames: render and "nearest training pose" baseline against ground truth.

    Returns:
        figures (``available`` False on datasets with another split) and arrays ``indices``,
        ``gt``, ``render``, ``baseline`` ``(V, S, S, 3)`` and ``beyond (V,)`` for the picture.
    """
    m = dataset.manifest
    if m.holdout != "turned":
        return SuiteResult({"available": False, "reason": f"the dataset holds out its {m.holdout} "
                                                          "(prep --holdout turned gives these figures)"})
    poses = np.asarray(driver.poses, dtype=np.float32)
    angles = camera_angles(torch.from_numpy(poses).double()).numpy()[:, :2]
    val = np.asarray(m.val_frames)
    idx = val[np.linspace(0, val.size - 1, min(max_frames, val.size)).round().astype(int)]
    train = np.asarray(m.train_frames)
    beyond = degrees_beyond(angles[idx], angles[train])
    nearest = train[nearest_training(angles[idx], angles[train])]
    gt = np.stack([dataset.frame(int(i)) for i in idx])
    head = np.stack([dataset.mask(int(i)) == MASK_HEAD for i in idx])
    torso = np.asarray(driver.torso_offsets, dtype=np.float32)
    render = render_all(driver, driver.audio_feats, driver.blink, poses, idx, 0.0, 0.0, batch_size,
                        "turned held-out frames", torso=torso, phones=driver.phones).rgb
    poses_b, torso_b = poses.copy(), torso.copy()
    poses_b[idx], torso_b[idx] = poses[nearest], torso[nearest]
    baseline = render_all(driver, driver.audio_feats, driver.blink, poses_b, idx, 0.0, 0.0, batch_size,
                          "baseline: nearest training pose", torso=torso_b, phones=driver.phones).rgb
    truth = _faces(gt)
    got_r, got_b = _image_figures(render, gt, head, truth), _image_figures(baseline, gt, head, truth)
    figures = {
        "available": True, "frames": int(idx.size), "held_out_frames": int(val.size),
        "train_yaw": [float(angles[train, 0].min()), float(angles[train, 0].max())],
        "train_pitch": [float(angles[train, 1].min()), float(angles[train, 1].max())],
        "held_out_yaw": [float(angles[idx, 0].min()), float(angles[idx, 0].max())],
        "degrees_beyond_mean": float(beyond.mean()), "degrees_beyond_max": float(beyond.max()),
        "render": _summary(got_r), "baseline": _summary(got_b),
        "per_frame": [{"frame": int(i), "yaw": float(angles[i, 0]), "pitch": float(angles[i, 1]),
                       "beyond": float(b), "psnr": float(pr), "psnr_baseline": float(pb),
                       "head_psnr": nan_to_none(float(hr)), "head_psnr_baseline": nan_to_none(float(hb))}
                      for i, b, pr, pb, hr, hb in zip(idx, beyond, got_r["psnr"], got_b["psnr"],
                                                      got_r["head_psnr"], got_b["head_psnr"], strict=True)],
    }
    return SuiteResult(figures, {"indices": idx, "gt": gt, "render": render, "baseline": baseline, "beyond": beyond})
