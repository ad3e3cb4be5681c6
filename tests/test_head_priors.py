"""The 3D priors for views the clip never shows (issue 15): the face prior (depth, opacity and
thinness of rays through the triangulated canonical face), the weight distortion it uses, and the
head volume (where density may be) with its measurement from a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.interpolate import LinearNDInterpolator

from talk3d.camera import frontal_cam2world, generate_rays
from talk3d.dataset import TalkingHeadDataset
from talk3d.errors import UserError
from talk3d.fit.config import FitConfig, apply_override, finalize, tiny_config
from talk3d.fit.head_volume import measure_head_volume
from talk3d.fit.trainer import fit
from talk3d.model import Avatar, ModelConfig
from talk3d.model.face_surface import face_triangles, sample_face
from talk3d.model.head_volume import FADE, head_volume_weight
from talk3d.model.losses import face_prior
from talk3d.model.renderer import distortion
from tests.tiny_data import make_tiny_dataset, make_tiny_run


def test_distortion_equals_the_double_sum() -> None:
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(5, 9, generator=gen).sort(-1).values * 3.0
    t_far = t[:, -1] + 0.5
    w = torch.rand(5, 9, generator=gen) / 9.0
    nxt = torch.cat([t[:, 1:], t_far[:, None]], -1)
    mid, length = (t + nxt) / 2, nxt - t
    brute = (w[:, :, None] * w[:, None, :] * (mid[:, :, None] - mid[:, None, :]).abs()).sum((1, 2))
    brute = brute + (w.square() * length).sum(-1) / 3.0
    torch.testing.assert_close(distortion(w, t, t_far), brute)


def test_face_samples_lie_on_the_triangulated_landmarks() -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(-0.5, 0.5, (478, 2))
    lm = torch.tensor(np.c_[xy, 0.8 - xy[:, 0] ** 2 - 0.5 * xy[:, 1] ** 2], dtype=torch.float32)
    tri, cdf = face_triangles(lm)
    assert tri.shape[1] == 3 and cdf.shape == (tri.shape[0],) and float(cdf[-1]) == pytest.approx(1.0)
    pts = sample_face(lm, torch.rand(2, 300, 3, generator=torch.Generator().manual_seed(0)))
    assert pts.shape == (2, 300, 3)
    surface = LinearNDInterpolator(lm[:, :2].numpy(), lm[:, 2].numpy())  # the same piecewise-linear face
    flat = pts.reshape(-1, 3).numpy()
    np.testing.assert_allclose(flat[:, 2], surface(flat[:, :2]), atol=1e-5)
    # area-uniform: the left and right halves of this (symmetric in x) face get about the same share
    assert abs(float((flat[:, 0] < 0).mean()) - 0.5) < 0.08


def _slab_avatar(thickness: float, density: float) -> tuple[Avatar, torch.Tensor]:
    """An avatar whose field is a slab ``|z - 0.5| < thickness / 2`` and landmarks on the plane ``z = 0.5``."""
    av = Avatar(ModelConfig.tiny(coarse_samples=96, importance_samples=32, occupancy_res=0))
    rng = np.random.default_rng(0)
    lm = np.c_[rng.uniform(-0.4, 0.4, (478, 2)), np.full(478, 0.5)]
    av.set_canonical_landmarks(torch.tensor(lm, dtype=torch.float32))

    def query(planes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inside = ((points[..., 2] - 0.5).abs() < thickness / 2).float()
        return density * inside, torch.ones(*points.shape[:-1], av.cfg.feature_channels)

    av.query = query  # type: ignore[method-assign]
    return av.eval(), frontal_cam2world(4.0, 2)


def test_face_prior_tells_a_surface_from_a_fog() -> None:
    surface, cams = _slab_avatar(thickness=0.05, density=400.0)
    fog, _ = _slab_avatar(thickness=0.8, density=8.0)
    with torch.no_grad():
        s = face_prior(surface, surface.identity_planes(), cams, 64, points="surface", spread=True)
        f = face_prior(fog, fog.identity_planes(), cams, 64, points="surface", spread=True)
    assert float(s["face_alpha"]) < 0.01 and float(f["face_alpha"]) < 0.05  # both opaque
    assert float(s["face_depth"]) < 0.05  # the surface is where the landmarks are
    assert float(f["face_spread"]) > 5 * float(s["face_spread"])


def test_face_prior_trains_the_field() -> None:
    av = Avatar(ModelConfig.tiny(occupancy_res=0))
    lm = torch.tensor(np.c_[np.random.default_rng(0).uniform(-0.4, 0.4, (478, 2)), np.full(478, 0.5)],
                      dtype=torch.float32)
    av.set_canonical_landmarks(lm)
    out = face_prior(av, av.identity_planes(), frontal_cam2world(4.0, 2), 32, points="surface", spread=True)
    assert set(out) == {"face_depth", "face_alpha", "face_spread"}
    assert set(face_prior(av, av.identity_planes(), frontal_cam2world(4.0, 2), 32)) == {"face_depth", "face_alpha"}
    sum(out.values()).backward()
    assert float(av.triplane.planes.grad.abs().sum()) > 0


def test_head_volume_weight_fades_to_zero_outside() -> None:
    vol = (0.8, 1.0, 0.0, 1.0, 0.2)  # ax, ytop, zc, az, yc
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.79, -0.5, 0.0], [0.8 * (1 + FADE / 2), 0.0, 0.0],
                        [0.8 * (1 + 2 * FADE), 0.0, 0.0], [0.0, 1.0 + 2 * FADE, 0.0], [0.0, 0.0, -1.2]])
    w = head_volume_weight(pts, vol)
    assert w[:2].tolist() == [1.0, 1.0]
    assert 0.3 < float(w[2]) < 0.7 and w[3:].tolist() == [0.0, 0.0, 0.0]


def test_avatar_density_is_zero_outside_its_head_volume() -> None:
    vol = (0.6, 1.0, 0.0, 0.8, 0.2)
    with_volume, plain = Avatar(ModelConfig.tiny(head_volume=vol)), Avatar(ModelConfig.tiny())
    plain.load_state_dict(with_volume.state_dict())
    pts = torch.tensor([[[0.0, 0.0, 0.3], [1.2, 0.0, 0.0], [0.5, 0.0, -0.7]]])  # inside, beside, behind
    s_vol, f_vol = with_volume.query(with_volume.identity_planes(), pts)
    s_all, f_all = plain.query(plain.identity_planes(), pts)
    s_vol, s_all = s_vol.detach(), s_all.detach()
    assert float(s_vol[0, 0]) == pytest.approx(float(s_all[0, 0])) and float(s_all[0, 1:].min()) > 0
    assert s_vol[0, 1:].tolist() == [0.0, 0.0]
    torch.testing.assert_close(f_vol, f_all)  # colour is the field's; only the density is bounded
    assert ModelConfig.from_dict(ModelConfig.tiny(head_volume=vol).to_dict()).head_volume == vol
    with pytest.raises(ValueError, match="5 numbers"):
        ModelConfig.tiny(head_volume=(1.0, 2.0))
    for bad in [(0.0, 1.0, 0.0, 1.0, 0.2), (0.6, 1.0, 0.0, -1.0, 0.2), (0.6, 0.2, 0.0, 1.0, 0.2)]:
        with pytest.raises(ValueError, match="ax > 0"):
            ModelConfig.tiny(head_volume=bad)
    with pytest.raises(ValueError, match="torso_mode"):
        ModelConfig.tiny(head_volume=vol, torso_mode="volume")


def test_measured_head_volume_holds_every_head_pixel(tmp_path: Path) -> None:
    ds = TalkingHeadDataset(make_tiny_dataset(tmp_path / "data", num_frames=8, size=32))
    frames = ds.manifest.train_frames
    vol = measure_head_volume(ds, frames, rays=32, every=1)
    assert vol is not None and len(vol) == 5
    origins, dirs = generate_rays(torch.as_tensor(np.asarray(ds.poses)[frames]),
                                  torch.as_tensor(np.asarray(ds.intrinsics)), 32, 32)
    t = torch.linspace(2.0, 6.0, 400)
    pts = origins[..., None, :] + t[:, None] * dirs[..., None, :]  # (F, rays, 400, 3)
    reach = head_volume_weight(pts, vol).amax(-1)  # best weight along each ray
    head = torch.stack([torch.as_tensor(np.asarray(ds.mask(int(i)))[:, :] == 2).reshape(-1) for i in frames])
    assert bool(head.any()) and float(reach[head].min()) == 1.0


def test_no_head_in_the_masks_means_no_head_volume(tmp_path: Path) -> None:
    ds = TalkingHeadDataset(make_tiny_dataset(tmp_path / "data", num_frames=4, size=32))

    class NoHead:
        canonical_landmarks, poses, intrinsics = ds.canonical_landmarks, ds.poses, ds.intrinsics

        @staticmethod
        def mask(index: int) -> np.ndarray:
            return np.minimum(ds.mask(index), 1)

    assert measure_head_volume(NoHead(), ds.manifest.train_frames) is None  # type: ignore[arg-type]


def test_fits_measure_their_head_volume(tmp_path: Path) -> None:
    run = make_tiny_run(tmp_path, steps=1)
    saved = json.loads((run / "config.json").read_text())["model"]["head_volume"]
    assert saved is not None and len(saved) == 5 and saved[0] > 0
    cfg = tiny_config(steps=1)  # a config reused for another dataset is measured again, not carried over
    fit(make_tiny_dataset(tmp_path / "other", seed=3), tmp_path / "run2", cfg)
    assert cfg.model.head_volume is None
    assert json.loads((tmp_path / "run2" / "config.json").read_text())["model"]["head_volume"] != saved


def test_face_prior_settings_old_names_and_bad_choices() -> None:
    old = FitConfig.from_dict({"loss": {"landmark_depth": 0.2, "landmark_alpha": 0.3, "landmark_rays": 16}})
    assert (old.loss.face_depth, old.loss.face_alpha, old.loss.face_rays) == (0.2, 0.3, 16)
    assert (old.loss.face_points, old.loss.face_spread) == ("landmarks", 0.0)  # the landmark prior they had
    before = FitConfig.from_dict({"loss": {"face_depth": 0.05, "face_alpha": 0.05}})  # saved before it was named
    assert (before.loss.face_points, before.loss.face_rays, before.loss.face_spread) == ("landmarks", 64, 0.0)
    now = FitConfig.from_dict(FitConfig().to_dict()).loss  # today's default: the thin face prior, kept on reload
    assert (now.face_points, now.face_rays, now.face_spread) == ("surface", 256, 0.05)
    cfg = FitConfig()
    apply_override(cfg, "loss.face_points=vertices")
    with pytest.raises(UserError, match="face_points"):
        finalize(cfg)
