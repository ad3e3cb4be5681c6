"""Random inputs with edge cases for comparing the kernels with the torch twin.

Shared by the tests (GPU and CPU emulation) and ``benchmarks/bench_cuda.py``.
"""

from __future__ import annotations

import torch


def triplane_case(b: int = 2, n: int = 300, c: int = 5, r: int = 8, *, device: str = "cpu",
                  dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Planes ``(b, 3, c, r, r)`` and points ``(b, n, 3)``: mostly inside ``[-1, 1]^3``, with
    points just outside the border, far outside, and exactly on the box faces (n >= 12)."""
    g = torch.Generator().manual_seed(seed)
    planes = torch.randn(b, 3, c, r, r, generator=g, dtype=torch.float64)
    points = torch.rand(b, n, 3, generator=g, dtype=torch.float64) * 2.4 - 1.2
    if n >= 12:
        points[:, 0] = torch.tensor([1.05, -1.04, 0.3], dtype=torch.float64)   # just outside
        points[:, 1] = torch.tensor([5.0, -7.0, 1e6], dtype=torch.float64)      # far outside
        points[:, 2] = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)      # on the faces
        points[:, 3] = torch.tensor([-1e9, 0.2, float(3)], dtype=torch.float64)
    return planes.to(device, dtype), points.to(device, dtype)


def composite_case(r: int = 64, s: int = 24, c: int = 4, *, device: str = "cpu",
                   dtype: torch.dtype = torch.float32, seed: int = 0):
    """``(sigmas, features, t_vals, deltas)`` for ``r`` rays of ``s`` samples, rows 0..3 being
    edge cases (r >= 4, s >= 1): no samples (all deltas 0), fully opaque (first sample),
    fully transparent (sigma 0), and padded tail (last half deltas 0)."""
    g = torch.Generator().manual_seed(seed)
    sigmas = torch.rand(r, s, generator=g, dtype=torch.float64) * 3.0
    features = torch.randn(r, s, c, generator=g, dtype=torch.float64)
    steps = torch.rand(r, s, generator=g, dtype=torch.float64) * 0.2 + 0.01
    t_vals = 1.0 + torch.cumsum(steps, -1)
    deltas = torch.cat([steps[:, 1:], torch.full((r, 1), 0.05, dtype=torch.float64)], -1)[:, :s]
    if r >= 4 and s >= 1:
        deltas[0] = 0.0
        sigmas[1, 0] = 1e4
        sigmas[2] = 0.0
        deltas[3, s // 2:] = 0.0
    return tuple(t.to(device, dtype) for t in (sigmas, features, t_vals, deltas))
