"""Pure-torch reference ("twin") of the volume-rendering primitives.

These define the semantics that the CUDA kernels in ``cuda_ext/`` must reproduce, forward
and backward. They run everywhere (CPU, CUDA, float64 for gradcheck).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Which two coordinates index each plane: plane 0 = (x, y), plane 1 = (x, z), plane 2 = (y, z).
# The first coordinate runs along the plane's width (last axis), the second along its height.
PLANE_AXES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))


def sample_triplane_ref(planes: torch.Tensor, points: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """Bilinearly sample three axis-aligned feature planes at 3D points.

    Args:
        planes: ``(B, 3, C, R, R)`` feature planes covering ``[-1, 1]^2`` each
            (``align_corners=False`` convention: texel centres at ``(i + 0.5) / R * 2 - 1``).
        points: ``(B, N, 3)`` points in the canonical box; points outside ``[-1, 1]`` read
            zeros beyond the border (``padding_mode='zeros'``).
        reduce: ``"sum"`` adds the three planes' features -> ``(B, N, C)``;
            ``"concat"`` concatenates them -> ``(B, N, 3 * C)``.
    Returns:
        Features at the points.
    """
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be (B, 3, C, R, R), got {tuple(planes.shape)}")
    if points.dim() != 3 or points.shape[-1] != 3 or points.shape[0] != planes.shape[0]:
        raise ValueError(f"points must be (B, N, 3) with B={planes.shape[0]}, got {tuple(points.shape)}")
    b, _, c, r, _ = planes.shape
    feats = []
    for i, (a0, a1) in enumerate(PLANE_AXES):
        grid = torch.stack([points[..., a0], points[..., a1]], -1).unsqueeze(1)  # (B, 1, N, 2)
        f = F.grid_sample(planes[:, i], grid.to(planes.dtype), mode="bilinear",
                          padding_mode="zeros", align_corners=False)  # (B, C, 1, N)
        feats.append(f[:, :, 0].transpose(1, 2))  # (B, N, C)
    if reduce == "sum":
        return feats[0] + feats[1] + feats[2]
    if reduce == "concat":
        return torch.cat(feats, -1)
    raise ValueError(f"reduce must be 'sum' or 'concat', got {reduce!r}")


def composite_rays_ref(sigmas: torch.Tensor, features: torch.Tensor, t_vals: torch.Tensor,
                       deltas: torch.Tensor) -> dict[str, torch.Tensor]:
    """Alpha-composite samples along rays (emission-absorption model).

    ``alpha_i = 1 - exp(-sigma_i * delta_i)``, ``T_i = exp(-sum_{j<i} sigma_j delta_j)``,
    ``w_i = T_i * alpha_i``. Padded / absent samples are expressed with ``delta = 0``
    (they then carry zero weight); a ray with no samples returns zeros.

    Args:
        sigmas: ``(R, S)`` non-negative densities.
        features: ``(R, S, C)`` per-sample features (or colours).
        t_vals: ``(R, S)`` sample distances along the ray, non-decreasing.
        deltas: ``(R, S)`` segment lengths (``>= 0``).
    Returns:
        dict with ``weights (R, S)``, ``features (R, C)`` = sum w f, ``depth (R,)`` =
        sum w t (unnormalised expected distance; divide by ``alpha`` for the mean),
        ``alpha (R,)`` = sum w, and ``transmittance (R, S)`` = T_i.
    """
    if sigmas.shape != t_vals.shape or sigmas.shape != deltas.shape or features.shape[:2] != sigmas.shape:
        raise ValueError(
            f"shape mismatch: sigmas {tuple(sigmas.shape)}, features {tuple(features.shape)}, "
            f"t_vals {tuple(t_vals.shape)}, deltas {tuple(deltas.shape)}"
        )
    tau = sigmas * deltas  # (R, S) optical depth per segment
    cum = torch.cumsum(tau, dim=-1)
    trans = torch.exp(-(cum - tau))  # exclusive cumulative sum
    alpha_i = 1.0 - torch.exp(-tau)
    weights = trans * alpha_i
    return {
        "weights": weights,
        "features": torch.einsum("rs,rsc->rc", weights, features),
        "depth": (weights * t_vals).sum(-1),
        "alpha": weights.sum(-1),
        "transmittance": trans,
    }
