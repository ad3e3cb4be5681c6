"""Rendering adapter: the only place where eval touches the model.

:class:`RunDriver` loads a fitted run and renders frames for given audio features, eye
closure and tracked poses, optionally orbited by an extra yaw/pitch. Everything else in
:mod:`talk3d.eval` sees only numpy frames, so the suites can be tested with a stand-in
driver (any object with the same attributes and :meth:`RunDriver.render`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talk3d.camera import orbit


@dataclass
class Rendered:
    """One batch of rendered frames."""

    rgb: np.ndarray
    """``(B, H, W, 3)`` uint8 final images."""
    depth: np.ndarray
    """``(B, h, w)`` float32 expected ray distance (neural resolution)."""
    person: np.ndarray
    """``(B, H, W)`` float32 the whole person's opacity (head over torso) at the image's size."""


class RunDriver:
    """Render a fitted run (``talk3d.fit.checkpoint.load_run``) frame by frame.

    Attributes:
        size: output side in pixels (the dataset's working resolution).
        fps, poses ``(N, 4, 4)``, blink ``(N,)``, audio_feats ``(T, D)`` or None,
        feature_rate, intrinsics ``(3, 3)``, dataset_dir, manifest, step, device.
    """

    def __init__(self, run_dir: str | os.PathLike, device: str | torch.device = "cpu", lip_drive: str = "auto"):
        from talk3d import threads
        from talk3d.fit.checkpoint import load_run
        from talk3d.memory import keep_freed_memory

        threads.start()
        keep_freed_memory()
        self.run = load_run(run_dir, device)
        self.device = torch.device(device)
        m = self.run.manifest
        self.manifest = m
        self.size = int(m.size)
        self.model_size = int(self.run.model_config.out_res)
        self.fps = float(m.fps)
        self.poses = np.asarray(self.run.poses, dtype=np.float32)
        self.blink = np.asarray(self.run.blink, dtype=np.float32)
        self.torso_offsets = np.asarray(self.run.torso_offsets, dtype=np.float32)
        self.feature_rate = float(m.audio_feature_rate)
        self.intrinsics = np.asarray(m.intrinsics, dtype=np.float32)
        self.dataset_dir = Path(self.run.dataset_dir)
        self.step = int(self.run.step)
        feats = self.run.audio_feats
        if feats is None and (self.dataset_dir / "audio_feats.npy").is_file():
            from talk3d.io import read_npy

            feats = read_npy(self.dataset_dir / "audio_feats.npy")
        self.audio_feats = None if feats is None else np.asarray(feats, dtype=np.float32)
        from talk3d.model.lip_prior import check_lip_drive, own_clip_phones

        check_lip_drive(lip_drive, self.run.lip_prior, run_dir)
        self.lip_drive = lip_drive
        """``talk3d.model.lip_prior.LIP_DRIVES``: what drives the mouth on new audio and on the clip's own."""
        self.phones = own_clip_phones(self.run.lip_prior, self.run.phonemes, lip_drive)
        """``(T, P)`` phone rows of the training audio when the prior drives the mouth on it, else None."""

    def render(self, audio_feats: np.ndarray, blink: np.ndarray, poses: np.ndarray, frame_indices: np.ndarray,
               yaw: float = 0.0, pitch: float = 0.0, batch_size: int = 4,
               size: int | None = None, torso: np.ndarray | None = None,
               phones: np.ndarray | None = None) -> Iterator[Rendered]:
        """Render frames ``frame_indices`` of a driving sequence.

        Args:
            audio_feats: ``(T, D)`` features at :attr:`feature_rate` Hz of the driving audio.
            blink: ``(N,)`` eye closure per sequence frame.
            poses: ``(N, 4, 4)`` tracked camera-to-world per sequence frame (the conditioning
                pose; the rendering camera is this orbited by ``yaw``/``pitch``).
            frame_indices: ``(F,)`` sequence frames to render (index the audio timeline at fps).
            yaw, pitch: extra camera rotation about the head centre in degrees.
            batch_size: frames per forward pass.
            size: output side (default :attr:`size`, the dataset's working resolution, so
                renders compare with the ground-truth frames pixel for pixel).
            torso: ``(N, 2)`` torso offsets per sequence frame (None: resting torso).
            phones: ``(T, P)`` phone rows of the driving audio: with them the run's phonetic lip
                prior drives the mouth (None: the model's audio-to-lip head; see :attr:`lip_drive`).
        Yields:
            :class:`Rendered` batches in order.
        """
        from talk3d import threads
        from talk3d.model.drive import DrivingClip, forward_frames

        clip = DrivingClip.from_arrays(self.run.model_config, audio_feats, self.feature_rate, self.fps, blink, poses,
                                       torso, self.run.lip_prior if phones is not None else None, phones)
        idx = np.asarray(frame_indices, dtype=np.int64)
        cams = clip.poses[torch.from_numpy(idx)]
        if yaw or pitch:
            cams = orbit(cams, yaw, pitch)
        out_size = size or self.size
        for fb in forward_frames(self.run.avatar, clip, idx, cams, self.intrinsics, batch_size,
                                 forward=lambda c, k, cond: self.run.avatar(c, k, cond, out_size=out_size),
                                 before_batch=threads.rebalance):
            out = fb.out
            rgb = (out["rgb"].clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            yield Rendered(rgb=rgb, depth=out["depth"][:, 0].float().cpu().numpy(),
                           person=out["alpha_hr"][:, 0].float().cpu().numpy())

    def driving_sequence(self, audio_path: str | os.PathLike, max_seconds: float) -> DrivingSequence:
        """New audio driving the avatar exactly as ``talk3d render`` does (defaults: tracked
        head motion and blinks of the training clip, ping-ponged)."""
        from talk3d.model.lip_prior import driving_phones
        from talk3d.render import paths
        from talk3d.render.audio_drive import frame_count, load_driving_audio

        audio = load_driving_audio(audio_path)
        n = min(frame_count(audio.duration, self.fps), max(1, int(max_seconds * self.fps)))
        head, source = paths.head_motion(torch.from_numpy(self.poses), n, "tracked")
        blink = paths.blink_track(self.blink, n, "auto")
        return DrivingSequence(audio=audio.samples, features=audio.features, feature_rate=audio.feature_rate,
                               blink=blink, poses=head.numpy().astype(np.float32),
                               torso=paths.torso_track(self.torso_offsets, source),
                               phones=driving_phones(self.run.lip_prior, audio.samples, self.lip_drive, n / self.fps))


@dataclass
class DrivingSequence:
    """A driving audio clip turned into per-frame inputs."""

    audio: np.ndarray
    """``(S,)`` float32 16 kHz samples."""
    features: np.ndarray
    """``(T, D)`` audio features at ``feature_rate`` Hz."""
    feature_rate: float
    """Rows per second of ``features``."""
    blink: np.ndarray
    """``(F,)`` eye closure per output frame."""
    poses: np.ndarray
    """``(F, 4, 4)`` camera-to-world per output frame (head motion)."""
    torso: np.ndarray | None = None
    """``(F, 2)`` torso offsets per output frame (None: resting torso)."""
    phones: np.ndarray | None = None
    """``(T, P)`` phone rows of the audio (rows of ``features``) when the run has a lip prior."""
