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
