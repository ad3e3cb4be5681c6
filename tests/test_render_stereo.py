"""Stereo output: side-by-side size and horizontal disparity sign, on an analytic ball stand-in avatar."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from talk3d.camera import frontal_cam2world, generate_rays, intrinsics_matrix
from talk3d.dataset import Manifest
from talk3d.model.config import ModelConfig
from talk3d.model.renderer import render_rays
from talk3d.render.config import RenderConfig
from talk3d.render.driver import render_run
from talk3d.render.probe import probe, read_frames
from tests.render_helpers import write_speech_like

FOCAL, DIST, SIZE = 1.6, 4.0, 32


class BallAvatar(nn.Module):
    """Stand-in with the Avatar's forward contract: an opaque white ball of radius 0.8 at the origin."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = ModelConfig.tiny(audio_dim=80, neural_res=SIZE, out_res=SIZE)
        self.dummy = nn.Parameter(torch.zeros(1))

    @staticmethod
    def field(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = 50.0 * (points.norm(dim=-1) < 0.8).float()
        return sigma, torch.ones(*points.shape[:-1], 3)

    def forward(self, cam2world, intrinsics, cond, *, motion_scale=1.0, out_size=None):
        b = cam2world.shape[0]
        o, d = generate_rays(cam2world, intrinsics, SIZE, SIZE)
        lim = torch.tensor([1.0, 1.0, 1.0])
        res = render_rays(self.field, o, d, -lim, lim, 64, 0, False)
        rgb = res["features"].transpose(1, 2).reshape(b, 3, SIZE, SIZE)
        alpha = res["alpha"].reshape(b, 1, SIZE, SIZE)
        depth = res["depth"].reshape(b, 1, SIZE, SIZE)
        return {"rgb": rgb, "rgb_lr": rgb, "alpha": alpha, "depth": depth, "rgb_fg": rgb, "alpha_hr": alpha}


def ball_run() -> SimpleNamespace:
    k = intrinsics_matrix(FOCAL)
    manifest = Manifest(num_frames=4, fps=10.0, size=SIZE, intrinsics=k.tolist(), train_end=3)
    avatar = BallAvatar()
    return SimpleNamespace(avatar=avatar, model_config=avatar.cfg, manifest=manifest,
                           poses=frontal_cam2world(DIST, 4).numpy(), blink=np.zeros(4, np.float32),
                           audio_feats=None, torso_offsets=np.zeros((4, 2), np.float32),
                           dataset_dir=Path("/nonexistent"), run_dir=Path("/nonexistent"), lip_prior=None,
                           phonemes=None)


def centroid_x(img: np.ndarray) -> float:
    w = img.mean(-1)
    w = np.where(w > 128, w, 0.0)
    xs = np.arange(img.shape[1]) + 0.5
    return float((w.sum(0) * xs).sum() / w.sum())


def test_stereo_side_by_side_disparity(tmp_path):
    audio = write_speech_like(tmp_path / "a.wav", 0.3)
    ipd = 0.8
    res = render_run(ball_run(), audio, tmp_path / "s.mp4", RenderConfig(stereo=True, ipd=ipd, quality=0))
    info = probe(res.out_path)
    assert (info.width, info.height) == (2 * SIZE, SIZE) and info.audio_codec == "aac"
    frame = next(read_frames(res.out_path))
    left, right = frame[:, :SIZE], frame[:, SIZE:]
    disparity = centroid_x(left) - centroid_x(right)
    # parallel eyes: a point at depth z shifts by f * W * ipd / z pixels, left image to the right
    expected = FOCAL * SIZE * ipd / DIST
    assert disparity > 0
    assert 0.6 * expected < disparity < 1.4 * expected
    # the mono render sits halfway between the eyes
    mono = render_run(ball_run(), audio, tmp_path / "m.mp4", RenderConfig(quality=0))
    cx = centroid_x(next(read_frames(mono.out_path)))
    assert abs(cx - 0.5 * (centroid_x(left) + centroid_x(right))) < 1.0
