"""Triplane sampling on CUDA: autograd Function and the checked wrapper.

Semantics are those of :func:`talk3d.ops.reference.sample_triplane_ref` (bilinear,
``align_corners=False``, zero padding, plane axes ``PLANE_AXES``). The kernels read a
channels-last copy of the planes ``(B, 3, R, R, C)`` so that one thread per point reads the
``C`` features of each corner contiguously; the plane gradient is accumulated there with
atomic adds and permuted back.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from cuda_ext._loader import load_extension


class _SampleTriplane(torch.autograd.Function):
    @staticmethod
    def forward(ctx, planes: torch.Tensor, points: torch.Tensor, concat: bool) -> torch.Tensor:
        ext = load_extension(strict=True)
        planes_cl = planes.permute(0, 1, 3, 4, 2).contiguous()  # (B, 3, H, W, C)
        out = ext.triplane_forward(planes_cl, points, concat)
        ctx.save_for_backward(planes_cl, points)
        ctx.concat = concat
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        planes_cl, points = ctx.saved_tensors
        need_planes, need_points = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_planes or need_points):
            return None, None, None
        ext = load_extension(strict=True)
        g_planes_cl, g_points = ext.triplane_backward(
            planes_cl, points, grad_out.contiguous(), ctx.concat, need_planes, need_points)
        g_planes = g_planes_cl.permute(0, 1, 4, 2, 3) if need_planes else None
        return g_planes, (g_points if need_points else None), None


def sample_triplane_cuda(planes: torch.Tensor, points: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """Sample three feature planes at 3D points with the CUDA kernels.

    Args:
        planes: ``(B, 3, C, H, W)`` CUDA tensor (float32; float16/bfloat16 are computed in
            float32, as is float64).
        points: ``(B, N, 3)`` CUDA tensor on the same device.
        reduce: ``"sum"`` -> ``(B, N, C)`` or ``"concat"`` -> ``(B, N, 3C)``.
    Returns:
        Features in the dtype of ``planes``.
    """
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be (B, 3, C, R, R), got {tuple(planes.shape)}")
    if points.dim() != 3 or points.shape[-1] != 3 or points.shape[0] != planes.shape[0]:
        raise ValueError(f"points must be (B, N, 3) with B={planes.shape[0]}, got {tuple(points.shape)}")
    if reduce not in ("sum", "concat"):
        raise ValueError(f"reduce must be 'sum' or 'concat', got {reduce!r}")
    if not (planes.is_cuda and points.is_cuda) or planes.device != points.device:
        raise ValueError(f"planes ({planes.device}) and points ({points.device}) must be on one CUDA device")
    dtype = planes.dtype
    out = _SampleTriplane.apply(planes.float().contiguous(), points.float().contiguous(), reduce == "concat")
    return out.to(dtype)
