"""The evaluation suites: self-driven, cross-driven, novel views, speed.

Each suite takes a driver (:class:`talk3d.eval.driver.RunDriver` or a stand-in with the same
attributes and ``render``) and returns a JSON-ready ``figures`` dict plus the arrays the
plots and the side-by-side video need. Figures that need the optional extra are the string
:data:`talk3d.eval.dlib_face.NOT_AVAILABLE` when it is absent.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from talk3d.camera import camera_angles, orbit
from talk3d.console import progress
from talk3d.dataset import TalkingHeadDataset
from talk3d.eval import dlib_face, metrics
from talk3d.eval.driver import Rendered
from talk3d.eval.tracking import angle_errors, detect_sequence, pnp_angles


@dataclass
class SuiteResult:
    """Figures for the report and arrays for plots/video."""

    figures: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def render_all(driver: Any, feats: np.ndarray, blink: np.ndarray, poses: np.ndarray, indices: np.ndarray,
                yaw: float, pitch: float, batch_size: int, what: str,
                torso: np.ndarray | None = None, phones: np.ndarray | None = None) -> Rendered:
    """Render ``indices``: rgb ``(F, H, W, 3)`` uint8, depth ``(F, h, w)``, person ``(F, H, W)``.

    ``torso``: ``(N, 2)`` torso offsets of the sequence (None: resting torso). ``phones``:
    ``(T, P)`` phone rows of ``feats`` (the run's lip prior drives the mouth; None: its audio head).
    """
    batches = driver.render(feats, blink, poses, indices, yaw=yaw, pitch=pitch, batch_size=batch_size, torso=torso,
                            phones=phones)
    total = math.ceil(len(indices) / batch_size)
    parts = list(progress(batches, what, total=total))
    return Rendered(rgb=np.concatenate([p.rgb for p in parts]), depth=np.concatenate([p.depth for p in parts]),
                    person=np.concatenate([p.person for p in parts]))


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``(F, H, W, 3)`` uint8 -> ``(F, 3, H, W)`` float in [0, 1]."""
    frames = np.asarray(frames)
    if not frames.flags.writeable:  # decoded frames are read-only buffers; torch wants writable memory
        frames = frames.copy()
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0


def nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def val_indices(driver: Any, max_frames: int) -> np.ndarray:
    """The first ``max_frames`` held-out frames (contiguous within each held-out run, so time
    correlations make sense)."""
    return np.asarray(driver.manifest.val_frames)[:max_frames]


def self_driven(driver: Any, dataset: TalkingHeadDataset, max_frames: int, batch_size: int) -> SuiteResult:
    """Validation frames driven by their own audio and pose, compared with ground truth."""
    idx = val_indices(driver, max_frames)
    if driver.audio_feats is None:
        from talk3d.errors import UserError

        raise UserError("the run has no audio features of its dataset; re-run 'talk3d fit' or keep its dataset")
    rendered = render_all(driver, driver.audio_feats, driver.blink, driver.poses, idx, 0.0, 0.0, batch_size,
                          "self-driven", torso=driver.torso_offsets, phones=driver.phones)
    rgb, depth = rendered.rgb, rendered.depth
    gt = np.stack([dataset.frame(int(i)) for i in idx])
    if gt.shape != rgb.shape:
        raise ValueError(f"ground truth {gt.shape} and renders {rgb.shape} differ in size")
    size = rgb.shape[1]
    pred_t, gt_t = _to_tensor(rgb), _to_tensor(gt)
    psnr = metrics.psnr(pred_t, gt_t).numpy()
    ssim = metrics.ssim(pred_t, gt_t).numpy()
    scale = size / dataset.manifest.size
    boxes = [metrics.mouth_box(dataset.landmarks[int(i)][:, :2] * scale, size) for i in idx]
    mouth_psnr = np.array([float(metrics.psnr(metrics.box_crop(pred_t[j], b), metrics.box_crop(gt_t[j], b))[0])
                           for j, b in enumerate(boxes)])
    lm_r, ok_r = detect_sequence(rgb)
    lm_g, ok_g = detect_sequence(gt)
    both = ok_r & ok_g
    open_r, open_g = metrics.mouth_opening(lm_r), metrics.mouth_opening(lm_g)
    figures: dict[str, Any] = {
        "frames": int(len(idx)),
        "first_frame": int(idx[0]),
        "psnr": metrics.finite_mean(psnr),
        "ssim": float(ssim.mean()),
        "mouth_psnr": metrics.finite_mean(mouth_psnr),
        "face_detected_render": float(ok_r.mean()),
        "face_detected_gt": float(ok_g.mean()),
        "lmd_mouth": metrics.landmark_distance(lm_r[both], lm_g[both], size, metrics.LIP_INDICES) if both.any()
        else None,
        "lmd_face": metrics.landmark_distance(lm_r[both][:, :468], lm_g[both][:, :468], size) if both.any()
        else None,
        "mouth_open_corr": nan_to_none(metrics.correlation(open_r, open_g)),
    }
    if dlib_face.available():
        d68 = []
        for j in np.flatnonzero(ok_g):
            box = dlib_face.face_box_from_landmarks(lm_g[j])
            d68.append((dlib_face.landmarks68(rgb[j], box), dlib_face.landmarks68(gt[j], box)))
        if d68:
            pr, gr = np.stack([a for a, _ in d68]), np.stack([b for _, b in d68])
            figures["lmd_mouth_dlib68"] = metrics.landmark_distance(pr, gr, size, dlib_face.DLIB_MOUTH)
            figures["lmd_face_dlib68"] = metrics.landmark_distance(pr, gr, size)
        else:
            figures["lmd_mouth_dlib68"] = figures["lmd_face_dlib68"] = None
    else:
        figures["lmd_mouth_dlib68"] = figures["lmd_face_dlib68"] = dlib_face.NOT_AVAILABLE
    arrays = {"indices": idx, "rgb": rgb, "gt": gt, "depth": depth, "person": rendered.person, "psnr": psnr,
              "ssim": ssim,
              "open_render": open_r, "open_gt": open_g}
    return SuiteResult(figures, arrays)


def render_fixed_pose(driver: Any, features: np.ndarray, indices: np.ndarray, batch_size: int,
                      what: str, phones: np.ndarray | None = None) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 renders of frames ``indices`` of ``features`` at the mean training
    pose, eyes open, torso at rest: only the audio moves the face."""
    from talk3d.render.paths import mean_pose

    fixed = mean_pose(torch.from_numpy(np.asarray(driver.poses, np.float32))).numpy().reshape(4, 4)
    count = int(np.max(indices)) + 1 if len(indices) else 0
    return render_all(driver, features, np.zeros(count, np.float32), np.broadcast_to(fixed, (count, 4, 4)).copy(),
                      indices, 0.0, 0.0, batch_size, what, phones=phones).rgb


def fixed_pose_lip_sync(driver: Any, indices: np.ndarray, open_gt: np.ndarray, batch_size: int) -> dict[str, Any]:
    """Does the audio alone move the mouth? Render ``indices`` with their own audio at the mean
    head pose (no blinks, resting torso) and compare the mouth opening with the tracked one.

    With tracked poses a moving head makes the rendered mouth move too, so the self-driven
    correlation can be high for an avatar whose mouth ignores the audio (measured: 0.77 for one
    whose fixed-pose correlation was -0.25). ``open_gt (F,)``: ground-truth opening of ``indices``.

    Returns:
        ``mouth_open_corr_fixed_pose`` and ``mouth_open_std_ratio_fixed_pose`` (rendered / true
        standard deviation of the opening; ~0 when the mouth does not move).
    """
    rgb = render_fixed_pose(driver, driver.audio_feats, indices, batch_size, "fixed-pose lip sync", driver.phones)
    lm, ok = detect_sequence(rgb)
    opening = metrics.mouth_opening(lm)
    true_std = float(np.nanstd(open_gt))
    return {"mouth_open_corr_fixed_pose": nan_to_none(metrics.correlation(opening, open_gt)),
            "mouth_open_std_ratio_fixed_pose": (nan_to_none(float(np.nanstd(opening)) / true_std)
                                                if true_std > 0 else None)}


def cross_driven(driver: Any, audio_path: str | Path, max_seconds: float, batch_size: int,
                 vad_method: str = "auto", max_lag: int = 8) -> SuiteResult:
    """New audio (no ground truth): does the mouth open when the voice is active?"""
    from talk3d.eval.vad import to_frame_rate, voice_activity

    seq = driver.driving_sequence(audio_path, max_seconds)
    n, audio = len(seq.blink), seq.audio
    rgb = render_all(driver, seq.features, seq.blink, seq.poses, np.arange(n), 0.0, 0.0, batch_size,
                     f"cross-driven {Path(audio_path).name}", torso=seq.torso, phones=seq.phones).rgb
    lm, ok = detect_sequence(rgb)
    opening = metrics.mouth_opening(lm)
    activity, method = voice_activity(audio, 16000, vad_method)
    speech = to_frame_rate(activity, driver.fps, n)
    corr = metrics.correlation(opening, speech)
    best, lag = metrics.best_lag_correlation(opening, speech, max_lag)
    figures = {
        "audio": str(audio_path),
        "frames": n,
        "vad": method,
        "speech_fraction": float((speech > 0.5).mean()),
        "face_detected": float(ok.mean()),
        "mouth_vad_corr": nan_to_none(corr),
        "mouth_vad_corr_best": nan_to_none(best),
        "mouth_vad_best_lag_frames": int(lag),
        "speech_pause_ratio": nan_to_none(metrics.speech_pause_ratio(opening, speech)),
    }
    return SuiteResult(figures, {"opening": opening, "speech": speech, "rgb": rgb})


def identity_reference(dataset: TalkingHeadDataset, count: int = 8) -> np.ndarray | None:
    """Mean dlib embedding ``(128,)`` of ``count`` training frames spread over the clip."""
    if not dlib_face.available():
        return None
    m = dataset.manifest
    train = np.asarray(m.train_frames)
    idx = train[np.linspace(0, train.size - 1, min(count, train.size)).round().astype(int)]
    embs = [dlib_face.face_embedding(dataset.frame(int(i)), dataset.landmarks[int(i)])
            for i in idx if dataset.landmark_valid[int(i)]]
    return np.mean(embs, axis=0) if embs else None


def novel_views(driver: Any, dataset: TalkingHeadDataset, views: list[tuple[float, float]], num_frames: int,
                batch_size: int, reference: np.ndarray | None) -> SuiteResult:
    """Render held-out frames from other angles; re-detect, re-estimate pose, compare identity."""
    idx = val_indices(driver, num_frames)
    rows, frames = [], {}
    canon = dataset.canonical_landmarks
    for yaw, pitch in views:
        rgb = render_all(driver, driver.audio_feats, driver.blink, driver.poses, idx, yaw, pitch,
                         batch_size, f"view yaw {yaw:+g} pitch {pitch:+g}", torso=driver.torso_offsets,
                         phones=driver.phones).rgb
        frames[f"{yaw:+g},{pitch:+g}"] = rgb
        lm, ok = detect_sequence(rgb, static=True)
        size = rgb.shape[1]
        measured = pnp_angles(lm, canon, driver.intrinsics, size)
        expected = camera_angles(orbit(torch.from_numpy(driver.poses[idx]), yaw, pitch)).numpy()
        err = angle_errors(measured[:, :2], expected[:, :2])
        row: dict[str, Any] = {
            "yaw": yaw, "pitch": pitch, "frames": int(len(idx)), "face_detected": float(ok.mean()),
            "yaw_measured": nan_to_none(metrics.finite_mean(measured[:, 0])),
            "yaw_expected": float(expected[:, 0].mean()),
            "pitch_measured": nan_to_none(metrics.finite_mean(measured[:, 1])),
            "pitch_expected": float(expected[:, 1].mean()),
            "yaw_error": nan_to_none(metrics.finite_mean(err[:, 0])),
            "pitch_error": nan_to_none(metrics.finite_mean(err[:, 1])),
        }
        if reference is None:
            row["identity_distance"] = row["same_person_rate"] = (
                dlib_face.NOT_AVAILABLE if not dlib_face.available() else None)
        else:
            dists = [float(np.linalg.norm(dlib_face.face_embedding(rgb[j], lm[j]) - reference))
                     for j in np.flatnonzero(ok)]
            row["identity_distance"] = float(np.mean(dists)) if dists else None
            row["same_person_rate"] = (float(np.mean(np.array(dists) < dlib_face.SAME_PERSON_THRESHOLD))
                                       if dists else 0.0)
        rows.append(row)
    return SuiteResult({"views": rows}, frames)


def speed(driver: Any, num_frames: int, batch_size: int = 1) -> SuiteResult:
    """Render frames per second at the run's size on the driver's device (after one warm-up).

    The run's size is the model's output resolution (what ``talk3d render`` produces by
    default), not the dataset's working resolution that the quality suites compare at.
    """
    val = val_indices(driver, num_frames + 1)
    idx = val[np.arange(num_frames + 1) % len(val)]  # short validation splits are cycled
    feats, blink, poses = driver.audio_feats, driver.blink, driver.poses
    cuda = str(getattr(driver, "device", "cpu")).startswith("cuda")
    model_size = getattr(driver, "model_size", None)
    kw = {"size": model_size} if model_size else {}
    kw["torso"] = getattr(driver, "torso_offsets", None)
    kw["phones"] = getattr(driver, "phones", None)
    next(iter(driver.render(feats, blink, poses, idx[:1], batch_size=1, **kw)))  # warm-up
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    count = 0
    for out in driver.render(feats, blink, poses, idx[1:], batch_size=batch_size, **kw):
        count += len(out.rgb)
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return SuiteResult({
        "frames": count, "seconds": dt, "fps": count / dt if dt > 0 else None, "size": int(model_size or driver.size),
        "batch_size": batch_size, "device": str(getattr(driver, "device", "cpu")),
        "threads": torch.get_num_threads(),
    })
