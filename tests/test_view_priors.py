"""Priors for views the clip never shows: the mirror-view prior (``LossWeights.mirror``: the field's
x-mirror, the loss against the long way round through mirrored cameras, determinism, a fit on tiny
data) and the weight distortion (``LossWeights.distortion``) (CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from talk3d.camera import frontal_cam2world, generate_rays, intrinsics_matrix, orbit
from talk3d.fit.config import tiny_config
from talk3d.fit.trainer import fit
from talk3d.image import resize
from talk3d.model import Avatar, ModelConfig
from talk3d.model.losses import LossWeights, compute_losses, mirror_prior, mirror_x
from talk3d.model.noise import FrameNoise
from talk3d.model.renderer import distortion
from tests.tiny_data import make_tiny_dataset

CFG = ModelConfig.tiny(occupancy_res=0)


def _avatar(seed: int = 0) -> Avatar:
    torch.manual_seed(seed)
    return Avatar(CFG).eval()


def _views(avatar: Avatar, yaws: list[float]) -> dict:
    """A batch whose images and head masks are the avatar's own renders from cameras at ``yaws``."""
    b = len(yaws)
    c2w = orbit(frontal_cam2world(4.0, b), torch.tensor(yaws), 0.0)
    k = intrinsics_matrix(1.6).expand(b, 3, 3)
    with torch.no_grad():
        out = avatar(c2w, k, None)
    head = (out["alpha_head_hr"] if "alpha_head_hr" in out else out["alpha_hr"]) > 0.5
    return {"image": out["rgb"], "mask": head.long() * 2, "cam2world": c2w, "intrinsics": k}


def test_mirror_x_is_the_field_seen_in_a_mirror() -> None:
    av = _avatar()
    planes = av.identity_planes().detach()
    pts = torch.rand(1, 200, 3) * 2.8 - 1.4
    sig_m, feat_m = av.query(mirror_x(planes), pts)
    sig, feat = av.query(planes, pts * torch.tensor([-1.0, 1.0, 1.0]))
    torch.testing.assert_close(sig_m, sig, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feat_m, feat, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mirror_x(mirror_x(planes)), planes)
    batched = planes[None].expand(2, -1, -1, -1, -1)
    torch.testing.assert_close(mirror_x(batched)[1], mirror_x(planes))


def _mirror_view_loss(av: Avatar, batch: dict, h: int) -> torch.Tensor:
    """The mirror prior computed the long way: the avatar's own field from the camera mirrored in x
    (``R -> M R M``, ``t -> M t``, ``cx -> 1 - cx``) against the left-right flipped frames."""
    m = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    c2w = batch["cam2world"].clone()
    c2w[:, :3, :3] = m @ c2w[:, :3, :3] @ m
    c2w[:, :3, 3] = c2w[:, :3, 3] @ m
    k = batch["intrinsics"].clone()
    k[:, 0, 2] = 1.0 - k[:, 0, 2]
    origins, dirs = generate_rays(c2w, k, h, h)
    res = av.render_rays(av.identity_planes(), origins, dirs)
    head = resize((batch["mask"] == 2).float(), h).flip(-1).flatten(2).transpose(1, 2)[..., 0]
    colour = (resize(batch["image"], h).flip(-1) * head[:, None].reshape(-1, 1, h, h)).flatten(2).transpose(1, 2)
    l1 = (res["features"][..., :3] - colour).abs().mean(-1)
    bce = torch.nn.functional.binary_cross_entropy(res["alpha"].clamp(1e-5, 1 - 1e-5), head, reduction="none")
    return (l1 + bce).mean()


def test_mirror_prior_is_the_flipped_frame_seen_from_the_mirrored_camera() -> None:
    av = _avatar()
    batch = _views(av, [-12.0, 7.0, 20.0])
    batch["intrinsics"] = batch["intrinsics"].clone()
    batch["intrinsics"][:, 0, 2] = torch.tensor([0.5, 0.47, 0.55])  # off-centre principal points too
    h = CFG.neural_res
    with torch.no_grad():
        out = av(batch["cam2world"], batch["intrinsics"], None)
        fast = mirror_prior(av, out, batch, h * h)  # every pixel (jitter off in eval mode)
        slow = _mirror_view_loss(av, batch, h)
    torch.testing.assert_close(fast, slow, atol=2e-5, rtol=1e-4)


def test_mirror_prior_in_the_losses_deterministic_and_trains_the_identity() -> None:
    av = _avatar()
    batch = _views(av, [10.0, 20.0])
    av.train()
    with torch.no_grad():  # the frames' heads mirrored: the identity now disagrees with its mirror image
        batch["image"], batch["mask"] = batch["image"].flip(-1), batch["mask"].flip(-1)
    weights = LossWeights(mirror=1.0, mirror_rays=64)
    values = []
    for _ in range(2):
        noise = FrameNoise(3, 7, [4, 9])
        out = av(batch["cam2world"], batch["intrinsics"], None, noise=noise)
        losses = compute_losses(out, {**batch, "noise": noise}, av, weights)
        values.append(float(losses["mirror"].detach()))
    assert values[0] == values[1] and np.isfinite(values[0]) and values[0] > 0
    av.zero_grad()
    losses["mirror"].backward()
    assert float(av.triplane.planes.grad.abs().sum()) > 0
    off = compute_losses(out, {**batch, "noise": FrameNoise(3, 7, [4, 9])}, av, LossWeights())
    assert "mirror" not in off


def test_fit_with_the_mirror_prior_on_tiny_data(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", num_frames=8, size=32)
    cfg = tiny_config(steps=3)
    cfg.loss.mirror = 0.5
    res = fit(data, tmp_path / "run", cfg)
    assert res.steps == 3 and np.isfinite(res.val["psnr"])
    lines = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"mirror"' in lines


def _distortion_brute_force(w: torch.Tensor, t: torch.Tensor, t_far: torch.Tensor) -> torch.Tensor:
    edges = torch.cat([t, t_far[:, None]], -1)
    mid, length = (edges[:, 1:] + edges[:, :-1]) / 2, edges[:, 1:] - edges[:, :-1]
    pairs = (w[:, :, None] * w[:, None, :] * (mid[:, :, None] - mid[:, None, :]).abs()).sum((1, 2))
    return pairs + (w ** 2 * length).sum(-1) / 3


def test_distortion_matches_its_definition_and_prefers_one_surface() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.rand(5, 12, generator=g).sort(-1).values * 3 + 1
    w = torch.rand(5, 12, generator=g) / 12
    t_far = torch.full((5,), 4.5)
    torch.testing.assert_close(distortion(w, t, t_far), _distortion_brute_force(w, t, t_far))
    t = torch.linspace(1.0, 3.0, 21)[None].expand(2, -1)
    one, two = torch.zeros(2, 21), torch.zeros(2, 21)
    one[:, 10] = 0.9  # all the opacity in one interval
    two[:, 4], two[:, 16] = 0.45, 0.45  # the same opacity in two layers
    t_far = torch.full((2,), 3.1)
    d_one, d_two = distortion(one, t, t_far), distortion(two, t, t_far)
    torch.testing.assert_close(d_one, torch.full((2,), 0.81 * 0.1 / 3))
    assert bool((d_two > 10 * d_one).all())


def test_training_renders_carry_the_distortion_and_the_loss_uses_it() -> None:
    av = _avatar().train()
    batch = _views(av, [0.0, 10.0])
    out = av(batch["cam2world"], batch["intrinsics"], None)
    assert out["distortion"].shape == (2, 1, CFG.neural_res, CFG.neural_res) and bool((out["distortion"] >= 0).all())
    losses = compute_losses(out, batch, av, LossWeights(distortion=0.1))
    torch.testing.assert_close(losses["distortion"], out["distortion"].mean())
    with torch.no_grad():
        assert "distortion" not in av(batch["cam2world"], batch["intrinsics"], None)
