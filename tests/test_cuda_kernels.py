"""CUDA kernels against the torch twin on a GPU (skipped without one)."""

from __future__ import annotations

import pytest
import torch

from cuda_ext.testing import composite_case, triplane_case
from talk3d.ops import composite_rays, sample_triplane, select_impl
from talk3d.ops.reference import composite_rays_ref, sample_triplane_ref

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
KEYS = ("weights", "transmittance", "features", "depth", "alpha")


def _run(fn, inputs, upstream):
    ins = [t.clone().requires_grad_(True) for t in inputs]
    out = fn(*ins)
    outs = out if isinstance(out, dict) else {"out": out}
    loss = sum((outs[k].float() * upstream[k]).sum() for k in upstream)
    loss.backward()
    grads = [torch.zeros_like(t) if t.grad is None else t.grad for t in ins]
    return {k: v.detach() for k, v in outs.items()}, grads


def test_select_impl_picks_cuda() -> None:
    x = torch.zeros(1, device="cuda")
    assert select_impl(x, "auto") == "cuda" and select_impl(x, "cuda") == "cuda"


@pytest.mark.parametrize("reduce", ["sum", "concat"])
@pytest.mark.parametrize("shape", [(2, 1000, 8, 16), (1, 257, 32, 64), (3, 0, 4, 8)])
def test_triplane_matches_twin(reduce: str, shape) -> None:
    planes, points = triplane_case(*shape, device="cuda")
    ref_out = sample_triplane_ref(planes, points, reduce)
    up = {"out": torch.randn_like(ref_out)}
    k_out, k_grads = _run(lambda p, x: sample_triplane(p, x, reduce, impl="cuda"), (planes, points), up)
    t_out, t_grads = _run(lambda p, x: sample_triplane_ref(p, x, reduce), (planes, points), up)
    torch.testing.assert_close(k_out["out"], t_out["out"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k_grads[0], t_grads[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(k_grads[1], t_grads[1], atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("rsc", [(512, 96, 32), (64, 24, 3), (0, 8, 3), (7, 0, 3)])
def test_composite_matches_twin(rsc) -> None:
    case = composite_case(*rsc, device="cuda")
    ref = composite_rays_ref(*case)
    up = {k: torch.randn_like(ref[k]) for k in KEYS}
    k_out, k_grads = _run(lambda *a: composite_rays(*a, impl="cuda"), case, up)
    t_out, t_grads = _run(composite_rays_ref, case, up)
    for k in KEYS:
        torch.testing.assert_close(k_out[k], t_out[k], atol=1e-5, rtol=1e-5)
    for kg, tg in zip(k_grads, t_grads, strict=True):
        torch.testing.assert_close(kg, tg, atol=5e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_computed_in_float32(dtype) -> None:
    planes, points = triplane_case(1, 200, 8, 16, device="cuda")
    out = sample_triplane(planes.to(dtype), points.to(dtype), impl="cuda")
    assert out.dtype == dtype
    ref = sample_triplane_ref(planes.to(dtype).float(), points.to(dtype).float())
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    case = composite_case(32, 16, 4, device="cuda")
    res = composite_rays(*(t.to(dtype) for t in case), impl="cuda")
    assert res["features"].dtype == dtype
    ref = composite_rays_ref(*(t.to(dtype).float() for t in case))
    torch.testing.assert_close(res["features"].float(), ref["features"], atol=2e-2, rtol=2e-2)


def test_non_contiguous_inputs() -> None:
    planes, points = triplane_case(2, 100, 8, 16, device="cuda")
    pts_t = points.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    torch.testing.assert_close(sample_triplane(planes, pts_t, impl="cuda"), sample_triplane_ref(planes, points))
