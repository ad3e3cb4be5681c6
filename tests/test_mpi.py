"""MPI math on an analytic radiance field: export, save/load, render back, homographies."""

from __future__ import annotations

import math

import pytest
import torch

from talk3d.camera import frontal_cam2world, generate_rays, intrinsics_matrix, orbit
from talk3d.errors import UserError
from talk3d.ops import composite_rays
from talk3d.render.mpi import (
    box_near_far,
    export_mpi,
    load_mpi,
    plane_depths,
    plane_homographies,
    render_mpi,
    save_mpi,
    slab_bounds,
)

SIZE = 24


def ball_field(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A soft ball of radius 0.8 whose colour varies with position; ``(1, N, 3)`` -> sigma, rgb."""
    r = points.norm(dim=-1)
    sigma = 30.0 * torch.sigmoid((0.8 - r) * 25.0)
    rgb = torch.stack([0.5 + 0.5 * torch.tanh(2 * points[..., 0]), 0.5 + 0.4 * torch.tanh(2 * points[..., 1]),
                       0.3 + 0.2 * torch.cos(3 * points[..., 2])], -1)
    return sigma, rgb


def direct_render(c2w: torch.Tensor, k: torch.Tensor, size: int, near: float, far: float,
                  samples: int = 384) -> torch.Tensor:
    """Dense reference volume rendering ``(3, H, W)`` over black (premultiplied colour)."""
    o, d = generate_rays(c2w[None], k, size, size)
    # sample uniformly in camera depth so both renders integrate the same segment
    cos = (d[0] @ c2w[:3, 2]).clamp_min(1e-6)
    z = near + (far - near) * (torch.arange(samples) + 0.5) / samples
    t = z[None, :] / cos[:, None]
    pts = o[0, :, None, :] + d[0, :, None, :] * t[..., None]
    sigma, rgb = ball_field(pts.reshape(1, -1, 3))
    delta = ((far - near) / samples) / cos[:, None].expand_as(t)
    out = composite_rays(sigma.reshape(t.shape), rgb.reshape(*t.shape, 3), t, delta)
    return out["features"].T.reshape(3, size, size), out["alpha"].reshape(size, size)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def test_depths_uniform_in_disparity():
    b = slab_bounds(2.0, 6.0, 8)
    assert b[0] == pytest.approx(2.0) and b[-1] == pytest.approx(6.0)
    disp = 1.0 / b
    assert torch.allclose(disp[1:] - disp[:-1], (disp[1] - disp[0]).expand(8), atol=1e-6)
    d = plane_depths(2.0, 6.0, 8)
    assert bool((d > b[:-1]).all() and (d < b[1:]).all())


def test_identity_homography_at_reference():
    c2w = frontal_cam2world(4.0)
    k = intrinsics_matrix(1.5)
    mpi = export_mpi(ball_field, c2w, k, 8, 2.0, 6.0, layers=4, samples=2)
    h = plane_homographies(mpi, c2w, k, 8, 8)
    assert torch.allclose(h, torch.eye(3, dtype=h.dtype).expand(4, 3, 3), atol=1e-9)


def test_mpi_reproduces_direct_render_at_reference(tmp_path):
    c2w = frontal_cam2world(4.0)
    k = intrinsics_matrix(1.5)
    near, far = box_near_far(c2w, 1.0)
    mpi = export_mpi(ball_field, c2w, k, SIZE, near, far, layers=48, samples=8)
    assert mpi.rgba.shape == (48, 4, SIZE, SIZE)
    save_mpi(tmp_path / "m", mpi)
    assert (tmp_path / "m" / "mpi.json").is_file()
    back = load_mpi(tmp_path / "m")
    assert torch.allclose(back.depths, mpi.depths)
    out = render_mpi(back)
    ref_rgb, ref_a = direct_render(c2w, k, SIZE, near, far)
    assert psnr(out[:3], ref_rgb) > 30.0
    assert psnr(out[3], ref_a) > 30.0
    assert float(ref_a.max()) > 0.99  # the ball is actually seen


def test_mpi_novel_view_follows_the_geometry():
    """From a camera yawed by 10 degrees the MPI still matches a direct render of that view."""
    c2w = frontal_cam2world(4.0)
    k = intrinsics_matrix(1.5)
    near, far = box_near_far(c2w, 1.0)
    mpi = export_mpi(ball_field, c2w, k, SIZE, near, far, layers=48, samples=4)
    target = orbit(c2w, 10.0, 0.0)
    out = render_mpi(mpi, target, k)
    ref_rgb, _ = direct_render(target, k, SIZE, near, far)
    static = render_mpi(mpi)
    # warping must explain the new view better than the unwarped reference image
    assert psnr(out[:3], ref_rgb) > psnr(static[:3], ref_rgb) + 3.0
    assert psnr(out[:3], ref_rgb) > 24.0


def test_homography_moves_near_planes_more():
    c2w = frontal_cam2world(4.0)
    k = intrinsics_matrix(1.5)
    mpi = export_mpi(ball_field, c2w, k, 8, 2.0, 6.0, layers=4, samples=1)
    right = c2w.clone()
    right[:3, 3] += 0.2 * c2w[:3, 0]  # camera moves right -> content moves left
    h = plane_homographies(mpi, right, k, 8, 8)
    centre = torch.tensor([3.5, 3.5, 1.0], dtype=torch.float64)
    shifts = [float((hi @ centre)[0] / (hi @ centre)[2] - 3.5) for hi in h]
    assert all(s < 0 for s in shifts)
    assert shifts[0] < shifts[-1]  # nearest plane shifts most
    expected = -0.2 * 1.5 * 8 / float(mpi.depths[0])
    assert math.isclose(shifts[0], expected, rel_tol=1e-6)


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="no mpi.json"):
        load_mpi(tmp_path)
