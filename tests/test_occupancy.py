"""Occupancy grid: ray bounds, skipped rays, renders against the whole-box reference."""

from __future__ import annotations

import torch

from talk3d.model import Avatar
from talk3d.model.config import ModelConfig
from talk3d.model.noise import FrameNoise
from talk3d.model.occupancy import DILATION, OPAQUE_DEPTH, OPAQUE_MARGIN, OccupancyGrid, grid_shape
from talk3d.model.renderer import ray_box_intersect, render_rays

BOX_MIN, BOX_MAX = (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)


def _ball(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A soft ball of radius ~0.4 at (0.2, 0, 0), coloured by position; empty elsewhere."""
    r = (p - torch.tensor([0.2, 0.0, 0.0])).norm(dim=-1)
    sigma = 40.0 * torch.sigmoid((0.4 - r) * 60.0) * (r < 0.55).float()
    colour = torch.stack([0.5 + 0.5 * p[..., 0], 0.5 + 0.5 * p[..., 1], 0.5 + 0.4 * p[..., 2]], -1)
    return sigma, colour


def _image_rays(b: int = 2, side: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays ``(b, side*side, 3)`` from z = 3 towards a square of side 1.8 at z = 0 (parallel shifts per frame)."""
    xs = torch.linspace(-0.9, 0.9, side)
    gy, gx = torch.meshgrid(xs, xs, indexing="ij")
    target = torch.stack([gx, gy, torch.zeros_like(gx)], -1).reshape(1, -1, 3).repeat(b, 1, 1)
    origin = torch.tensor([0.0, 0.0, 3.0]).expand_as(target).clone()
    origin[1:, :, 0] += 0.1
    target[1:, :, 0] += 0.1
    d = target - origin
    return origin, d / d.norm(dim=-1, keepdim=True)


def _grid(res: int = 32) -> OccupancyGrid:
    grid = OccupancyGrid(BOX_MIN, BOX_MAX, res)
    grid.refresh(lambda p: _ball(p)[0])
    return grid


def test_grid_shape_follows_the_box() -> None:
    assert grid_shape((-2.0, -2.4, -1.2), (2.0, 1.6, 1.2), 64) == (64, 64, 38)
    grid = OccupancyGrid((-2.0, -2.4, -1.2), (2.0, 1.6, 1.2), 20)
    assert tuple(grid.occupied.shape) == (20, 20, 12) and not grid.is_ready


def test_refresh_marks_the_ball_and_dilates() -> None:
    grid = _grid(32)
    assert grid.is_ready
    occ = grid.occupied.bool()
    centres = (torch.stack(torch.meshgrid(*[torch.arange(32)] * 3, indexing="ij"), -1) + 0.5) / 32 * 2 - 1
    r = (centres - torch.tensor([0.2, 0.0, 0.0])).norm(dim=-1)
    assert bool(occ[r < 0.35].all())  # inside: occupied
    reach = 0.55 + (DILATION + 1) * 3 ** 0.5 * 2 / 32  # support + dilation (cube diagonal) + one cell
    assert not bool(occ[r > reach].any())  # beyond the ball plus the dilation: empty
    assert 0.02 < float(occ.float().mean()) < 0.35


def test_ray_bounds_cover_the_ball_and_drop_misses() -> None:
    grid = _grid(32)
    o = torch.tensor([[0.2, 0.0, 3.0], [0.2, 0.9, 3.0], [0.9, 0.0, 3.0]])
    d = torch.tensor([[0.0, 0.0, -1.0]]).expand(3, 3)
    near, far, hit = ray_box_intersect(o, d, torch.tensor(BOX_MIN), torch.tensor(BOX_MAX))
    lo, hi, found = grid.ray_bounds(o, d, near, far, hit)
    assert found.tolist() == [True, False, False]
    # the ball's front is at t = 2.6 on the first ray; at density 40 the grid's optical depth
    # passes OPAQUE_DEPTH 0.3 further, and the span ends OPAQUE_MARGIN cells (2 / 32 each) after that
    opaque = 2.6 + OPAQUE_DEPTH / 40.0
    assert 2.3 < float(lo[0]) < 2.6
    assert opaque - 0.1 < float(hi[0]) < opaque + (OPAQUE_MARGIN + 2) * 2 / 32
    assert float(hi[0] - lo[0]) < float(far[0] - near[0]) * 0.5
    assert float(lo[1]) == 0.0 and float(hi[1]) == 0.0


def test_render_with_grid_matches_whole_box_reference() -> None:
    o, d = _image_rays()
    box = torch.tensor(BOX_MIN), torch.tensor(BOX_MAX)
    ref = render_rays(_ball, o, d, *box, 96, 64, jitter=False)
    fast = render_rays(_ball, o, d, *box, 96, 64, jitter=False, cull_alpha=0.01, occupancy=_grid(32))
    miss = ref["alpha"] < 1e-4
    assert 0.3 < float(miss.float().mean()) < 0.9  # the test has rays to skip and rays to render
    assert float((fast["alpha"] - ref["alpha"]).abs().max()) < 0.02
    assert float((fast["features"] - ref["features"]).abs().mean()) < 2e-3
    assert float((fast["features"] - ref["features"]).abs().max()) < 0.03
    assert bool((fast["alpha"][miss] == 0).all()) and bool((fast["features"][miss] == 0).all())
    torch.testing.assert_close(fast["t_far"], ref["t_far"])  # the depth blend keeps the box exit
    hit = ref["alpha"] > 0.99
    torch.testing.assert_close(fast["depth"][hit], ref["depth"][hit], atol=0.02, rtol=0)


def test_fewer_samples_in_the_grid_beat_the_same_count_over_the_box() -> None:
    o, d = _image_rays()
    box = torch.tensor(BOX_MIN), torch.tensor(BOX_MAX)
    ref = render_rays(_ball, o, d, *box, 256, 128, jitter=False)
    plain = render_rays(_ball, o, d, *box, 12, 12, jitter=False)
    fast = render_rays(_ball, o, d, *box, 12, 12, jitter=False, occupancy=_grid(32))
    err_plain = float((plain["features"] - ref["features"]).abs().mean())
    err_fast = float((fast["features"] - ref["features"]).abs().mean())
    assert err_fast < err_plain


def test_training_render_through_the_grid_keys_noise_per_ray_and_has_gradients() -> None:
    o, d = _image_rays(b=2, side=12)
    box = torch.tensor(BOX_MIN), torch.tensor(BOX_MAX)
    scale = torch.ones((), requires_grad=True)

    def field(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma, colour = _ball(p)
        return sigma * scale, colour

    grid = _grid(32)
    a = render_rays(field, o, d, *box, 8, 8, FrameNoise(0, 5, [3, 7]), 0.01, grid)
    b = render_rays(field, o[1:], d[1:], *box, 8, 8, FrameNoise(0, 5, [7]), 0.01, grid)
    torch.testing.assert_close(a["features"][1:], b["features"])  # frame 7 alike alone or in a batch
    a["features"].sum().backward()
    assert scale.grad is not None and float(scale.grad.abs()) > 0


def test_avatar_grid_is_saved_and_old_weights_get_one() -> None:
    torch.manual_seed(0)
    avatar = Avatar(ModelConfig.tiny(occupancy_res=16)).eval()
    fraction = avatar.refresh_occupancy()
    assert fraction is not None and avatar.occupancy.is_ready
    state = avatar.state_dict()
    assert {"occupancy.occupied", "occupancy.ready"} <= set(state)
    old = {k: v for k, v in state.items() if not k.startswith("occupancy.")}  # saved before the grid existed
    again = Avatar(ModelConfig.tiny(occupancy_res=16)).eval()
    again.load_state_dict(again.complete_state(old), strict=True)
    assert not again.occupancy.is_ready
    again.ensure_occupancy()
    assert again.occupancy.is_ready and torch.equal(again.occupancy.occupied, avatar.occupancy.occupied)
    assert Avatar(ModelConfig.tiny(occupancy_res=0)).occupancy is None
