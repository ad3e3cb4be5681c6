"""Volume-rendering primitives with one dispatch point.

The renderer calls :func:`sample_triplane` and :func:`composite_rays` only. Which
implementation runs is decided here, in :func:`select_impl`:

* ``"torch"``: the pure-torch twin in :mod:`talk3d.ops.reference` (CPU and GPU).
* ``"cuda"``: fused kernels from ``cuda_ext`` (built lazily on first CUDA use).
* ``"auto"`` (default): CUDA kernels for CUDA tensors when they build, else the twin;
  triplane sampling of float32 CPU tensors takes the embedding-bag path of
  :mod:`talk3d.ops.bag` (same semantics, a faster forward; tested against the twin).

The environment variable ``TALK3D_RENDER_IMPL`` (``auto|torch|cuda``) overrides the default;
an explicit ``impl=`` argument overrides the variable. ``cuda`` that cannot be honoured (CPU
tensors, no GPU, no compiler, failed build) raises a one-line :class:`UserError`; ``auto``
falls back to the twin with a one-line warning (once). See docs/cuda.md.
"""

from __future__ import annotations

import os

import torch

from talk3d.errors import UserError
from talk3d.ops.bag import sample_triplane_bag
from talk3d.ops.reference import PLANE_AXES, composite_rays_ref, sample_triplane_ref

__all__ = ["PLANE_AXES", "composite_rays", "sample_triplane", "select_impl"]

_VALID = ("auto", "torch", "cuda")


def _requested(impl: str | None) -> str:
    """The implementation asked for: the argument, else ``TALK3D_RENDER_IMPL``, else ``auto``."""
    return (impl or os.environ.get("TALK3D_RENDER_IMPL", "auto")).lower()


def select_impl(tensor: torch.Tensor, impl: str | None = None) -> str:
    """Return ``"torch"`` or ``"cuda"`` for an input tensor and a requested implementation.

    * ``"torch"``: always the twin.
    * ``"auto"``: the CUDA kernels for float32/float16/bfloat16 CUDA tensors when they build
      (a failed build warns once and falls back); the twin for CPU or float64 tensors.
    * ``"cuda"``: the CUDA kernels or a :class:`~talk3d.errors.UserError` saying why not
      (CPU tensors, no CUDA, no compiler, failed build); float64 is computed in float32.
    """
    impl = _requested(impl)
    if impl not in _VALID:
        raise ValueError(f"render implementation must be one of {_VALID}, got {impl!r}")
    if impl == "torch":
        return "torch"
    if impl == "cuda" and not tensor.is_cuda:
        raise UserError(
            f"TALK3D_RENDER_IMPL=cuda needs CUDA tensors, got a {tensor.device.type} tensor; "
            "run on a GPU (--device cuda) or set TALK3D_RENDER_IMPL=auto"
        )
    if not tensor.is_cuda or (impl == "auto" and tensor.dtype == torch.float64):
        return "torch"
    try:
        from cuda_ext import kernels_available
    except ImportError as exc:
        if impl == "cuda":
            raise UserError(f"TALK3D_RENDER_IMPL=cuda but cuda_ext cannot be imported ({exc}); "
                            "reinstall talk3d or set TALK3D_RENDER_IMPL=auto") from exc
        return "torch"
    return "cuda" if kernels_available(strict=(impl == "cuda")) else "torch"


def sample_triplane(planes: torch.Tensor, points: torch.Tensor, reduce: str = "sum",
                    impl: str | None = None) -> torch.Tensor:
    """Sample triplane features at points; see :func:`sample_triplane_ref` for shapes.

    Under ``auto``, float32 CPU tensors use :func:`~talk3d.ops.bag.sample_triplane_bag`;
    ``torch`` always runs the twin.
    """
    chosen = select_impl(planes, impl)
    if chosen == "cuda":
        from cuda_ext import sample_triplane_cuda

        return sample_triplane_cuda(planes, points, reduce)
    if _requested(impl) == "auto" and not planes.is_cuda and planes.dtype == torch.float32:
        return sample_triplane_bag(planes, points, reduce)
    return sample_triplane_ref(planes, points, reduce)


def composite_rays(sigmas: torch.Tensor, features: torch.Tensor, t_vals: torch.Tensor,
                   deltas: torch.Tensor, impl: str | None = None) -> dict[str, torch.Tensor]:
    """Alpha-composite ray samples; see :func:`composite_rays_ref` for shapes."""
    if select_impl(sigmas, impl) == "cuda":
        from cuda_ext import composite_rays_cuda

        return composite_rays_cuda(sigmas, features, t_vals, deltas)
    return composite_rays_ref(sigmas, features, t_vals, deltas)
