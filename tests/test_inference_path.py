"""The inference path (no gradients) renders what the training path renders: channels-last
convolutions, the half-resolution deltaplane sum, the decoder in chunks, frames marched one at a
time, a fixed camera's ray bounds reused, and bfloat16 convolutions within a small error."""

from __future__ import annotations

import pytest
import torch

from talk3d.camera import frontal_cam2world, intrinsics_matrix, orbit
from talk3d.image import psnr
from talk3d.model import Avatar, ModelConfig, conditioning_for
from talk3d.model import decoder as decoder_module
from talk3d.model.precision import PRECISIONS, conv_dtype, native_bf16_cpu

CFG = ModelConfig.tiny(mouth_code=4)


def _avatar() -> Avatar:
    """A tiny avatar whose U-Net output, lip basis and SR all change the picture."""
    torch.manual_seed(0)
    av = Avatar(CFG).eval()
    with torch.no_grad():
        torch.nn.init.normal_(av.unet.out.weight, std=0.2)
        av.mouth_basis.normal_(std=0.3)
        torch.nn.init.normal_(av.superres.tail.weight, std=0.05)
        av.triplane.planes.mul_(8.0)  # dense enough to show a head
    av.refresh_occupancy()
    return av


def _inputs(b: int, same_camera: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    yaw = torch.zeros(b) if same_camera else torch.linspace(-12, 12, b)
    c2w = orbit(frontal_cam2world(4.0, b), yaw, 0.0)
    g = torch.Generator().manual_seed(1)
    n = 30
    poses = orbit(frontal_cam2world(4.0, n), torch.randn(n, generator=g) * 5, 0.0)
    cond = conditioning_for(CFG, torch.randn(160, CFG.audio_dim, generator=g), 100.0, 25.0,
                            torch.rand(n, generator=g), poses, torch.arange(b) * 2 + 4)
    return c2w, intrinsics_matrix(1.6).expand(b, 3, 3), cond


def test_precision_choices() -> None:
    assert conv_dtype("float32", torch.device("cpu")) == torch.float32
    assert conv_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    assert conv_dtype("auto", torch.device("cuda")) == torch.float32  # not measured on a GPU yet
    assert conv_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if native_bf16_cpu() else torch.float32)
    with pytest.raises(ValueError):
        conv_dtype("half", torch.device("cpu"))
    assert set(PRECISIONS) == {"auto", "float32", "bfloat16"}


def test_float32_inference_renders_what_the_training_layout_renders() -> None:
    av = _avatar()
    av.precision = "float32"
    c2w, k, cond = _inputs(3)
    with torch.no_grad():
        fast = av(c2w, k, cond)
    with torch.enable_grad():
        slow = av(c2w, k, cond)
    for name in ("rgb", "alpha", "depth", "mouth_code"):
        torch.testing.assert_close(fast[name], slow[name].detach(), atol=2e-5, rtol=1e-4, msg=name)
    assert float(slow["deltaplane"].detach().abs().max()) > 1e-2  # the U-Net and the basis really moved the planes
    with torch.no_grad():
        still = av(c2w, k, cond, motion_scale=0.0)["rgb"]
    assert float((still - fast["rgb"]).abs().max()) > 1e-3  # ... and the picture


def test_frame_planes_are_the_planes_of_each_frame() -> None:
    from talk3d.model.avatar import FramePlanes

    av = _avatar()
    _, _, cond = _inputs(3)
    with torch.no_grad():
        planes, _ = av.planes(cond, motion_scale=0.7)
        half, _ = av.half_deltaplane_and_code(cond)
        lazy = FramePlanes(av.identity_planes(), half, 0.7, av.unet.upsample)
        torch.testing.assert_close(lazy.frames(1, 3), planes[1:3])
        assert lazy.frames(0, 1).permute(0, 1, 3, 4, 2).is_contiguous()


def test_inference_planes_are_channels_last_and_equal_the_plain_sum() -> None:
    av = _avatar()
    _, _, cond = _inputs(2)
    with torch.no_grad():
        planes, dp = av.planes(cond, motion_scale=0.7)
    assert planes.permute(0, 1, 3, 4, 2).is_contiguous()  # channels innermost: the CPU sampler's table
    torch.testing.assert_close(planes, av.identity_planes()[None] + 0.7 * dp)


def test_bfloat16_convolutions_stay_close_to_float32() -> None:
    av = _avatar()
    c2w, k, cond = _inputs(2)
    with torch.no_grad():
        av.precision = "float32"
        ref = av(c2w, k, cond)["rgb"]
        av.precision = "bfloat16"
        out = av(c2w, k, cond)["rgb"]
    assert out.dtype == torch.float32
    assert not torch.equal(out, ref)  # bfloat16 really ran
    assert float(psnr(out, ref).min()) > 40.0


def test_decoder_in_chunks_equals_the_layers_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoder_module, "INFERENCE_CHUNK", 7)
    dec = _avatar().decoder
    feats = torch.randn(2, 40, CFG.triplane_channels)
    with torch.no_grad():
        sigma, colour = dec(feats)
    with torch.enable_grad():
        sigma_ref, colour_ref = dec(feats)
    torch.testing.assert_close(sigma, sigma_ref.detach())
    torch.testing.assert_close(colour, colour_ref.detach())


def test_frames_marched_one_at_a_time_match_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from talk3d.camera import generate_rays
    from talk3d.model import avatar as avatar_module

    av = _avatar()
    c2w, k, cond = _inputs(3)
    o, d = generate_rays(c2w, k, CFG.neural_res, CFG.neural_res)
    with torch.no_grad():
        planes, _ = av.planes(cond)
        single = av.render_rays(planes, o, d, jitter=False)
        monkeypatch.setattr(avatar_module, "FRAMES_PER_MARCH", 3)
        together = av.render_rays(planes, o, d, jitter=False)
    for name in ("features", "alpha", "depth"):
        torch.testing.assert_close(single[name], together[name], atol=1e-5, rtol=1e-5)


def test_a_fixed_camera_reuses_its_ray_bounds_until_the_grid_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    from talk3d.camera import generate_rays
    from talk3d.model.occupancy import OccupancyGrid

    av = _avatar()
    c2w, k, _ = _inputs(3, same_camera=True)
    o, d = generate_rays(c2w, k, CFG.neural_res, CFG.neural_res)
    moved_o, moved_d = generate_rays(orbit(c2w[:1], 5.0, 0.0), k[:1], CFG.neural_res, CFG.neural_res)
    marched = []
    original = OccupancyGrid._span

    def counting(self, origins, *args):
        marched.append(origins.shape[0])
        return original(self, origins, *args)

    monkeypatch.setattr(OccupancyGrid, "_span", counting)
    planes = av.identity_planes()
    with torch.no_grad():
        shared = av.render_rays(planes, o, d, jitter=False)  # frame by frame: the same rays three times
        n = CFG.neural_res ** 2
        assert marched == [n]
        av.render_rays(planes, moved_o, moved_d, jitter=False)  # other rays are marched
        assert marched == [n, n]
        av.refresh_occupancy()  # a refreshed grid is marched again
        again = av.render_rays(planes, o[:1], d[:1], jitter=False)
        assert marched == [n, n, n]
    torch.testing.assert_close(shared["alpha"], again["alpha"].expand(3, -1))
    assert float(shared["alpha"].max()) > 0.5


def test_decoder_and_render_run_under_an_outer_autocast_without_gradients() -> None:
    """Fit validation on CUDA renders under autocast without gradients: the chunked decoder must step aside."""
    av = _avatar()
    c2w, k, cond = _inputs(2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        sigma, colour = av.decoder(torch.randn(2, 40, CFG.triplane_channels))
        out = av(c2w, k, cond)["rgb"]
    assert sigma.shape == (2, 40) and colour.shape == (2, 40, CFG.feature_channels)
    assert torch.isfinite(out.float()).all()
