"""Ray compositing on CUDA: autograd Function and the checked wrapper.

Semantics are those of :func:`talk3d.ops.reference.composite_rays_ref`. Gradients flow to
sigmas, features, t_vals and deltas (each only when required) from all five outputs.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from cuda_ext._loader import load_extension

_KEYS = ("weights", "transmittance", "features", "depth", "alpha")


class _CompositeRays(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sigmas: torch.Tensor, features: torch.Tensor, t_vals: torch.Tensor,
                deltas: torch.Tensor):
        ext = load_extension(strict=True)
        weights, trans, feats, depth, alpha = ext.composite_forward(sigmas, features, t_vals, deltas)
        ctx.save_for_backward(sigmas, features, t_vals, deltas, weights, trans)
        return weights, trans, feats, depth, alpha

    @staticmethod
    @once_differentiable
    def backward(ctx, g_weights, g_trans, g_feats, g_depth, g_alpha):
        sigmas, features, t_vals, deltas, weights, trans = ctx.saved_tensors
        needs = list(ctx.needs_input_grad[:4])
        if not any(needs):
            return None, None, None, None
        ext = load_extension(strict=True)
        grads = ext.composite_backward(
            sigmas, features, t_vals, deltas, weights, trans,
            g_weights.contiguous(), g_trans.contiguous(), g_feats.contiguous(),
            g_depth.contiguous(), g_alpha.contiguous(), needs)
        return tuple(g if need else None for g, need in zip(grads, needs, strict=True))


def composite_rays_cuda(sigmas: torch.Tensor, features: torch.Tensor, t_vals: torch.Tensor,
                        deltas: torch.Tensor) -> dict[str, torch.Tensor]:
    """Alpha-composite ray samples with the CUDA kernels.

    Args:
        sigmas, t_vals, deltas: ``(R, S)`` CUDA tensors; features ``(R, S, C)``.
            float32 (float16/bfloat16/float64 are computed in float32).
    Returns:
        dict with ``weights (R, S)``, ``transmittance (R, S)``, ``features (R, C)``,
        ``depth (R,)``, ``alpha (R,)`` in the dtype of ``features``.
    """
    if (sigmas.dim() != 2 or features.dim() != 3 or sigmas.shape != t_vals.shape
            or sigmas.shape != deltas.shape or features.shape[:2] != sigmas.shape):
        raise ValueError(
            f"shape mismatch: sigmas {tuple(sigmas.shape)}, features {tuple(features.shape)}, "
            f"t_vals {tuple(t_vals.shape)}, deltas {tuple(deltas.shape)}"
        )
    tensors = (sigmas, features, t_vals, deltas)
    if not all(t.is_cuda and t.device == sigmas.device for t in tensors):
        raise ValueError("sigmas, features, t_vals and deltas must be on one CUDA device")
    dtype = features.dtype
    outs = _CompositeRays.apply(*(t.float().contiguous() for t in tensors))
    return {k: v.to(dtype) for k, v in zip(_KEYS, outs, strict=True)}
