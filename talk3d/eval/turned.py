"""Novel views against ground truth: the held-out frames of a ``--holdout turned`` dataset.

Prep's turned split holds out the frames whose head yaw lies furthest from the clip's median
(:mod:`talk3d_prep.split`), so they show the real person at angles the avatar never trained on.
Each is rendered at its own tracked pose with its own audio and compared with the frame;
beside it a baseline of what "no 3D" gives: the avatar rendered at the pose (and torso
offset) of the nearest training frame in yaw/pitch, with the held-out frame's audio. Both get
PSNR, SSIM, head-region PSNR (the prep head mask) and mouth LMD, and every frame the degrees it
lies beyond the training range.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from talk3d.camera import camera_angles
from talk3d.dataset import MASK_HEAD, TalkingHeadDataset
from talk3d.eval import metrics
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


def _image_figures(rgb: np.ndarray, gt: np.ndarray, head: np.ndarray) -> dict[str, Any]:
    """PSNR, SSIM, head PSNR per frame and mouth LMD of renders ``(V, S, S, 3)`` against ``gt``."""
    pred_t, gt_t = _to_tensor(rgb), _to_tensor(gt)
    head_t = torch.from_numpy(head)
    has_head = head.reshape(len(head), -1).any(1)
    head_psnr = np.full(len(rgb), np.nan)
    if has_head.any():
        head_psnr[has_head] = metrics.masked_psnr(pred_t[has_head], gt_t[has_head], head_t[has_head]).numpy()
    lm_r, ok_r = detect_sequence(rgb, static=True)
    lm_g, ok_g = detect_sequence(gt, static=True)
    both = ok_r & ok_g
    size = rgb.shape[1]
    return {
        "psnr": metrics.psnr(pred_t, gt_t).numpy(), "ssim": metrics.ssim(pred_t, gt_t).numpy(),
        "head_psnr": head_psnr,
        "lmd_mouth": metrics.landmark_distance(lm_r[both], lm_g[both], size, metrics.LIP_INDICES)
        if both.any() else None,
        "face_detected": float(ok_r.mean()),
    }


def _summary(per_frame: dict[str, Any]) -> dict[str, Any]:
    return {"psnr": metrics.finite_mean(per_frame["psnr"]), "ssim": float(np.mean(per_frame["ssim"])),
            "head_psnr": nan_to_none(metrics.finite_mean(per_frame["head_psnr"])),
            "lmd_mouth": per_frame["lmd_mouth"], "face_detected": per_frame["face_detected"]}


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
    got_r, got_b = _image_figures(render, gt, head), _image_figures(baseline, gt, head)
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
