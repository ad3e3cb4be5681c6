"""The embedding-bag triplane sampler (talk3d.ops.bag), checked against the torch twin."""

from __future__ import annotations

import pytest
import torch

from cuda_ext.testing import triplane_case
from talk3d.ops import sample_triplane
from talk3d.ops.bag import sample_triplane_bag
from talk3d.ops.reference import sample_triplane_ref


@pytest.mark.parametrize("reduce", ["sum", "concat"])
@pytest.mark.parametrize("shape", [(2, 300, 5, 8), (1, 1000, 32, 128), (3, 50, 1, 1)])
def test_forward_matches_twin(reduce: str, shape: tuple[int, int, int, int]) -> None:
    b, n, c, r = shape
    planes, points = triplane_case(b=b, n=n, c=c, r=r)
    got = sample_triplane_bag(planes, points, reduce)
    want = sample_triplane_ref(planes, points, reduce)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("reduce", ["sum", "concat"])
def test_gradients_match_twin(reduce: str) -> None:
    planes, points = triplane_case(b=2, n=400, c=4, r=16, dtype=torch.float64)
    points = points[:, 4:].contiguous()  # off the kinks (faces of the box, far outside)
    upstream = torch.randn(2, 396, 4 if reduce == "sum" else 12, dtype=torch.float64)
    grads = []
    for fn in (sample_triplane_bag, sample_triplane_ref):
        p, x = planes.clone().requires_grad_(True), points.clone().requires_grad_(True)
        (fn(p, x, reduce) * upstream).sum().backward()
        grads.append((p.grad, x.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-10)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-8)


def test_gradcheck() -> None:
    planes, points = triplane_case(b=2, n=20, c=2, r=4, dtype=torch.float64)
    inputs = (planes.requires_grad_(True), points[:, 4:].clone().requires_grad_(True))
    assert torch.autograd.gradcheck(lambda p, x: sample_triplane_bag(p, x, "sum"), inputs, eps=1e-6, atol=1e-5)


def test_outside_reads_zero_and_shared_planes_broadcast() -> None:
    planes = torch.randn(1, 3, 4, 8, 8)
    far = torch.tensor([[[3.0, 0.0, 0.0], [0.0, -1.2, 0.0], [0.0, 0.0, 1.13]]])
    out = sample_triplane_bag(planes, far, "concat")  # each point is outside one plane pair
    assert torch.all(out[0, 0, :8] == 0) and torch.all(out[0, 1, 0:4] == 0)
    with pytest.raises(ValueError, match="planes must be"):
        sample_triplane_bag(planes[0], far)
    with pytest.raises(ValueError, match="reduce"):
        sample_triplane_bag(planes, far, "max")


def test_dispatch_uses_bag_for_float32_cpu(render_impl_env) -> None:
    planes, points = triplane_case(b=1, n=64, c=3, r=8)
    render_impl_env(None)
    assert torch.equal(sample_triplane(planes, points), sample_triplane_bag(planes, points))
    assert torch.equal(sample_triplane(planes, points, impl="torch"), sample_triplane_ref(planes, points))
    render_impl_env("torch")
    assert torch.equal(sample_triplane(planes, points), sample_triplane_ref(planes, points))


def test_points_sampled_again_reuse_their_corners(monkeypatch: pytest.MonkeyPatch) -> None:
    from talk3d.ops import bag

    computed = []
    original = bag._corners
    monkeypatch.setattr(bag, "_corners", lambda p, r: computed.append(p.shape[0]) or original(p, r))
    monkeypatch.setattr(bag, "_MEMO", bag._CornerMemo())
    torch.manual_seed(0)
    planes = torch.randn(1, 3, 4, 8, 8)
    coarse, fine = torch.rand(1, 50, 3) * 2 - 1, torch.rand(1, 50, 3) * 2 - 1
    with torch.no_grad():
        first = sample_triplane_bag(planes, coarse)
        for _ in range(3):  # a fixed camera: the coarse points again, new fine points every frame
            again = sample_triplane_bag(planes * 2, coarse)
            sample_triplane_bag(planes, torch.rand(1, 50, 3) * 2 - 1)
        sample_triplane_bag(planes, fine)
    assert computed == [50, 50, 50, 50, 50]  # the coarse set once, each fine set
    torch.testing.assert_close(again, 2 * first)
    torch.testing.assert_close(again, sample_triplane_ref(planes * 2, coarse), atol=1e-5, rtol=1e-5)
    computed.clear()
    sample_triplane_bag(planes.requires_grad_(), coarse).sum().backward()  # training: always computed
    assert computed == [50]
