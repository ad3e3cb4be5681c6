"""The U-Net's first level on shared identity planes: computed once, exact, and refreshed when weights change."""

from __future__ import annotations

import torch

from talk3d.model.config import ModelConfig
from talk3d.model.unet import DeltaplaneUNet


def _unet() -> tuple[DeltaplaneUNet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    cfg = ModelConfig.tiny(triplane_res=32, unet_widths=(8, 16), unet_attn_res=8)
    net = DeltaplaneUNet(cfg).eval()
    torch.nn.init.normal_(net.out.weight, std=0.1)  # the zero-initialised head would hide differences
    planes = torch.nn.Parameter(torch.randn(3, cfg.triplane_channels, 32, 32))
    tokens = torch.randn(2, 5, cfg.token_dim)
    return net, planes, tokens


def test_shared_planes_match_the_batched_path_with_and_without_grad() -> None:
    net, planes, tokens = _unet()
    batched = net(planes.detach().expand(2, *planes.shape), tokens)
    with torch.no_grad():
        first = net(planes, tokens)
        again = net(planes, tokens)  # from the cache
    assert net._first_cache is not None
    torch.testing.assert_close(first, batched, atol=1e-5, rtol=1e-5)
    assert torch.equal(first, again)
    out = net(planes, tokens)  # with gradients: no cache, gradients reach the planes
    out.square().sum().backward()
    assert planes.grad is not None and float(planes.grad.abs().sum()) > 0


def test_cache_follows_in_place_updates_of_planes_and_weights() -> None:
    net, planes, tokens = _unet()
    with torch.no_grad():
        before = net(planes, tokens)
        planes.add_(0.5)  # an optimiser step on the identity planes
        after_planes = net(planes, tokens)
        net.downs[0][0].weight.mul_(1.5)  # ... and on the first level's weights
        after_weights = net(planes, tokens)
        fresh = net(planes.detach().clone().expand(2, *planes.shape), tokens)
    assert not torch.allclose(before, after_planes)
    assert not torch.allclose(after_planes, after_weights)
    torch.testing.assert_close(after_weights, fresh, atol=1e-5, rtol=1e-5)


def test_the_cache_keeps_one_result_per_autocast_type() -> None:
    net, planes, tokens = _unet()
    with torch.no_grad():
        plain = net._shared_first_level(planes)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net._shared_first_level(planes)
            assert net._shared_first_level(planes) is low  # kept under autocast too
        assert low.dtype == torch.bfloat16 and plain.dtype == torch.float32
        again = net._shared_first_level(planes)  # autocast off again: recomputed in float32
    assert again.dtype == torch.float32 and torch.equal(again, plain)
