"""The torch twin (talk3d.ops.reference) and the dispatch in talk3d.ops (CPU)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cuda_ext.testing import composite_case, triplane_case
from talk3d.errors import UserError
from talk3d.ops import composite_rays, render_impl, sample_triplane, select_impl, set_render_impl
from talk3d.ops.reference import PLANE_AXES, composite_rays_ref, sample_triplane_ref

ROOT = Path(__file__).resolve().parents[1]


def test_transmittance_hand_computed() -> None:
    sigmas = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    deltas = torch.tensor([[0.5, 0.25, 1.0]], dtype=torch.float64)  # tau = 0.5 each
    t_vals = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    feats = torch.tensor([[[1.0], [10.0], [100.0]]], dtype=torch.float64)
    out = composite_rays_ref(sigmas, feats, t_vals, deltas)
    a = 1.0 - math.exp(-0.5)
    trans = [1.0, math.exp(-0.5), math.exp(-1.0)]
    weights = [t * a for t in trans]
    assert torch.allclose(out["transmittance"][0], torch.tensor(trans, dtype=torch.float64))
    assert torch.allclose(out["weights"][0], torch.tensor(weights, dtype=torch.float64))
    assert out["alpha"][0].item() == pytest.approx(1.0 - math.exp(-1.5))
    assert out["depth"][0].item() == pytest.approx(weights[0] + 2 * weights[1] + 3 * weights[2])
    assert out["features"][0, 0].item() == pytest.approx(weights[0] + 10 * weights[1] + 100 * weights[2])


def test_composite_edge_rows() -> None:
    sigmas, feats, t_vals, deltas = composite_case(r=6, s=10, c=3, dtype=torch.float64)
    out = composite_rays_ref(sigmas, feats, t_vals, deltas)
    assert torch.all(out["weights"][0] == 0) and out["alpha"][0] == 0 and torch.all(out["features"][0] == 0)
    assert out["alpha"][1].item() == pytest.approx(1.0)  # opaque first sample
    assert torch.allclose(out["features"][1], feats[1, 0])
    assert out["alpha"][2] == 0 and torch.all(out["transmittance"][2] == 1)  # transparent
    assert torch.all(out["weights"][3, 5:] == 0)  # padded tail carries no weight
    empty = composite_rays_ref(*(t[:, :0] for t in (sigmas, feats, t_vals, deltas)))
    assert empty["features"].shape == (6, 3) and torch.all(empty["alpha"] == 0)


def test_composite_gradcheck() -> None:
    sigmas, feats, t_vals, deltas = composite_case(r=5, s=6, c=2, dtype=torch.float64)
    sigmas[1, 0] = 3.0  # gradcheck's finite differences need moderate values

    def fn(*args):
        out = composite_rays_ref(*args)
        return tuple(out[k] for k in ("weights", "features", "depth", "alpha", "transmittance"))

    inputs = tuple(t.clone().requires_grad_(True) for t in (sigmas, feats, t_vals, deltas))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("reduce", ["sum", "concat"])
def test_triplane_gradcheck(reduce: str) -> None:
    planes, points = triplane_case(b=2, n=20, c=2, r=4, dtype=torch.float64)
    points = points[:, 4:]  # drop the on-the-face / far-outside rows (kinks for finite differences)
    inputs = (planes.requires_grad_(True), points.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(lambda p, x: sample_triplane_ref(p, x, reduce), inputs, eps=1e-6, atol=1e-5)


def test_triplane_texel_centres_and_axes() -> None:
    r, c = 4, 2
    planes = torch.randn(1, 3, c, r, r, dtype=torch.float64)
    i, j, k = 1, 2, 3  # texel indices along x, y, z
    centre = [(idx + 0.5) / r * 2 - 1 for idx in (i, j, k)]
    pts = torch.tensor([[centre]], dtype=torch.float64)
    idx = (i, j, k)
    expected = [planes[0, p, :, idx[a1], idx[a0]] for p, (a0, a1) in enumerate(PLANE_AXES)]
    got = sample_triplane_ref(planes, pts, "concat")[0, 0]
    assert torch.allclose(got, torch.cat(expected))
    assert torch.allclose(sample_triplane_ref(planes, pts, "sum")[0, 0], sum(expected))
    far = sample_triplane_ref(planes, torch.full((1, 1, 3), 3.0, dtype=torch.float64))
    assert torch.all(far == 0)


def test_dispatch_on_cpu(render_impl_env) -> None:
    planes, points = triplane_case(b=1, n=16, c=3, r=4)
    render_impl_env(None)
    assert select_impl(planes) == "torch"
    assert torch.allclose(sample_triplane(planes, points), sample_triplane_ref(planes, points), atol=1e-6)
    case = composite_case(r=4, s=5, c=2)
    assert torch.equal(composite_rays(*case)["features"], composite_rays_ref(*case)["features"])
    render_impl_env("cuda")
    with pytest.raises(UserError, match="needs CUDA tensors"):
        sample_triplane(planes, points)
    assert select_impl(planes, "torch") == "torch"  # the argument wins over the variable
    render_impl_env("bogus")  # one clear line (a UserError), checked once at start
    with pytest.raises(UserError, match=r"^TALK3D_RENDER_IMPL must be one of auto, torch, cuda; got 'bogus'"):
        select_impl(planes)
    with pytest.raises(ValueError, match="one of"):  # a bad argument is the caller's bug
        select_impl(planes, "bogus")


def test_render_impl_setting_overrides_the_variable(render_impl_env, monkeypatch: pytest.MonkeyPatch) -> None:
    planes, points = triplane_case(b=1, n=16, c=3, r=4)
    render_impl_env("cuda")
    assert render_impl() == "cuda"
    monkeypatch.setenv("TALK3D_RENDER_IMPL", "torch")  # read at start only: no effect now
    assert render_impl() == "cuda"
    set_render_impl("torch")
    assert render_impl() == "torch" and select_impl(planes) == "torch"
    assert torch.equal(sample_triplane(planes, points), sample_triplane_ref(planes, points))
    set_render_impl(" AUTO ")
    assert render_impl() == "auto"
    with pytest.raises(UserError, match="must be one of auto, torch, cuda; got 'gpu'"):
        set_render_impl("gpu")
    assert render_impl() == "auto"  # a refused name changes nothing
    render_impl_env("bogus")
    set_render_impl("torch")  # the setting replaces a bad variable
    assert render_impl() == "torch"


def test_render_impl_variable_is_read_once_at_start() -> None:
    code = """
import os
import torch
from cuda_ext.testing import triplane_case
from talk3d.ops import render_impl, sample_triplane, select_impl, set_render_impl
from talk3d.ops.bag import sample_triplane_bag
from talk3d.ops.reference import sample_triplane_ref

planes, points = triplane_case(b=1, n=64, c=3, r=8)
assert render_impl() == "torch", render_impl()
os.environ["TALK3D_RENDER_IMPL"] = "cuda"  # too late: read once, when talk3d.ops was imported
assert render_impl() == "torch" and select_impl(planes) == "torch"
assert torch.equal(sample_triplane(planes, points), sample_triplane_ref(planes, points))
set_render_impl("auto")  # the setting API overrides the variable
assert render_impl() == "auto"
assert torch.equal(sample_triplane(planes, points), sample_triplane_bag(planes, points))
print("ok")
"""
    env = {**os.environ, "TALK3D_RENDER_IMPL": "Torch", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_dispatch_auto_keeps_float64_on_twin() -> None:
    fake = SimpleNamespace(is_cuda=True, dtype=torch.float64)
    assert select_impl(fake, "auto") == "torch"  # type: ignore[arg-type]
