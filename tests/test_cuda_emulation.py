"""The CUDA kernels' per-thread bodies, run on CPU (cuda_ext.emulation), against the twin.

This drives the real autograd Functions of cuda_ext with the host-compiled kernel bodies in
place of the compiled extension, so forward AND backward of the kernel math, the
channels-last plane layout and the gradient plumbing are checked without a GPU.
"""

from __future__ import annotations

import pytest
import torch

import cuda_ext.composite as composite_mod
import cuda_ext.triplane as triplane_mod
from cuda_ext.emulation import HostEmulation, compiler
from cuda_ext.testing import composite_case, triplane_case
from talk3d.ops.reference import composite_rays_ref, sample_triplane_ref

pytestmark = pytest.mark.skipif(compiler() is None, reason="needs a C++ compiler")
KEYS = ("weights", "transmittance", "features", "depth", "alpha")


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> HostEmulation:
    return HostEmulation(tmp_path_factory.mktemp("emu"))


@pytest.fixture()
def patched(emu: HostEmulation, monkeypatch: pytest.MonkeyPatch) -> HostEmulation:
    monkeypatch.setattr(triplane_mod, "load_extension", lambda strict=False: emu)
    monkeypatch.setattr(composite_mod, "load_extension", lambda strict=False: emu)
    return emu


def _triplane_both(planes, points, reduce):
    """(kernel out, kernel grads, twin out, twin grads) for a random upstream gradient."""
    results = []
    for fn in ("kernel", "twin"):
        p, x = planes.clone().requires_grad_(True), points.clone().requires_grad_(True)
        if fn == "kernel":
            out = triplane_mod._SampleTriplane.apply(p, x, reduce == "concat")
        else:
            out = sample_triplane_ref(p, x, reduce)
        g = torch.linspace(-1, 1, out.numel()).reshape(out.shape).sin()
        (out * g).sum().backward()
        results.append((out.detach(), p.grad, x.grad))
    return results


@pytest.mark.parametrize("reduce", ["sum", "concat"])
@pytest.mark.parametrize("shape", [(2, 300, 5, 8), (1, 50, 32, 16), (1, 40, 3, 1)])
def test_triplane_matches_twin(patched, reduce: str, shape) -> None:
    b, n, c, r = shape
    planes, points = triplane_case(b, n, c, r)
    (ko, kgp, kgx), (to, tgp, tgx) = _triplane_both(planes, points, reduce)
    assert ko.shape == to.shape
    torch.testing.assert_close(ko, to, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kgp, tgp, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(kgx, tgx, atol=1e-3, rtol=1e-4)
    assert torch.all(ko[:, 1] == 0) and torch.all(kgx[:, 1] == 0)  # far outside: zeros


def test_triplane_empty_and_partial_grads(patched) -> None:
    planes, points = triplane_case(2, 0, 4, 8)
    p = planes.clone().requires_grad_(True)
    out = triplane_mod._SampleTriplane.apply(p, points, False)
    assert out.shape == (2, 0, 4)
    out.sum().backward()
    assert torch.all(p.grad == 0)
    planes, points = triplane_case(1, 30, 4, 8)
    x = points.clone().requires_grad_(True)  # planes frozen: only the point gradient
    triplane_mod._SampleTriplane.apply(planes, x, False).sum().backward()
    ref = points.clone().requires_grad_(True)
    sample_triplane_ref(planes, ref).sum().backward()
    torch.testing.assert_close(x.grad, ref.grad, atol=1e-3, rtol=1e-4)


def _composite_both(case, grads_for=KEYS):
    results = []
    for fn in ("kernel", "twin"):
        ins = [t.clone().requires_grad_(True) for t in case]
        if fn == "kernel":
            out = dict(zip(KEYS, composite_mod._CompositeRays.apply(*ins), strict=True))
        else:
            out = composite_rays_ref(*ins)
        loss = sum((out[k] * torch.linspace(-1, 2, out[k].numel()).reshape(out[k].shape)).sum()
                   for k in grads_for)
        loss.backward()
        results.append(({k: v.detach() for k, v in out.items()}, [t.grad for t in ins]))
    return results


@pytest.mark.parametrize("grads_for", [KEYS, ("features",), ("depth", "alpha")])
def test_composite_matches_twin(patched, grads_for) -> None:
    case = composite_case(r=64, s=24, c=4)
    (kout, kgrads), (tout, tgrads) = _composite_both(case, grads_for)
    for k in KEYS:
        torch.testing.assert_close(kout[k], tout[k], atol=1e-5, rtol=1e-5)
    for name, kg, tg, x in zip(("sigmas", "features", "t_vals", "deltas"), kgrads, tgrads, case, strict=True):
        tg = torch.zeros_like(x) if tg is None else tg  # the twin leaves unused inputs at None
        torch.testing.assert_close(kg, tg, atol=2e-4, rtol=1e-4, msg=f"grad {name}")
    assert torch.all(kout["weights"][0] == 0) and kout["alpha"][1] == pytest.approx(1.0)
    assert torch.all(kout["transmittance"][2] == 1)


@pytest.mark.parametrize("rsc", [(0, 8, 3), (5, 0, 3), (5, 7, 0)])
def test_composite_empty(patched, rsc) -> None:
    case = composite_case(*rsc)
    (kout, kgrads), (tout, tgrads) = _composite_both(case)
    for k in KEYS:
        assert kout[k].shape == tout[k].shape
        torch.testing.assert_close(kout[k], tout[k])
    for kg, tg in zip(kgrads, tgrads, strict=True):
        assert kg.shape == tg.shape
        torch.testing.assert_close(kg, tg)
