"""Occupancy grid of the identity field: where along a ray there can be anything to render.

Most of the scene box is empty (air around the head; with the image-space torso the shoulders
are not in the volume either), yet every ray spent its samples over the whole box. The grid
marks the cells whose density (identity triplane) is above a small threshold, dilated by a few
cells so that the per-frame motion of the deltaplanes (a jaw opening, a blink) stays inside it.
The renderer then

* skips rays that cross no occupied cell (they render transparent), and
* places each remaining ray's samples between its first occupied cell and the point where the
  grid's densities make it opaque (or its last occupied cell), so the samples land near the
  surface instead of being spread through the head and the air behind it.

The grid is a persistent buffer of the avatar, refreshed by the trainer every few steps from the
current weights (and once more before the avatar is saved), so a render uses the grid the fit
ended with. Avatars saved before the grid existed get one computed from their identity when
they are loaded (:meth:`Avatar.ensure_occupancy`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

CELL_OPACITY = 1e-3
"""A cell is occupied when the densest of its probe points would give this opacity over one cell
(``1 - exp(-sigma * cell) > CELL_OPACITY``): far below what a pixel can show."""
DILATION = 2
"""Occupied cells are grown by this many cells in every direction (deltaplane motion, sub-cell detail)."""
PROBES = 2
"""Probe points per cell and axis (``PROBES ** 3`` per cell, evenly spread, no randomness)."""
MARCH_PER_CELL = 2
"""Points per cell length used to find a ray's first and last occupied cell."""
OPAQUE_DEPTH = 12.0
"""A ray ends where the optical depth summed from the grid's densities passes this (transmittance
``e^-12``, 6e-6); the cell densities are maxima over their probe points, so this comes early only
where a ray grazes the dense corner of a cell, which :data:`OPAQUE_MARGIN` covers."""
OPAQUE_MARGIN = 2
"""Cells added after the point a ray becomes opaque."""
CHUNK = 1 << 18
"""Points per field evaluation while refreshing, and rays per march in :meth:`OccupancyGrid.ray_bounds`
(bounds memory at any grid or image size)."""


def grid_shape(box_min: tuple[float, ...], box_max: tuple[float, ...], res: int) -> tuple[int, int, int]:
    """Cells along x, y, z: ``res`` along the longest box side, the others in proportion (cubic cells)."""
    extent = [hi - lo for lo, hi in zip(box_min, box_max, strict=True)]
    longest = max(extent)
    return tuple(max(1, round(res * e / longest)) for e in extent)  # type: ignore[return-value]


class OccupancyGrid(nn.Module):
    """Boolean occupancy ``(X, Y, Z)`` over the scene box (uint8 buffers, saved with the avatar).

    Buffers: ``density (X, Y, Z)`` float32 (the highest density of each cell's probe points),
    ``occupied (X, Y, Z)`` uint8 (density above :data:`CELL_OPACITY`, dilated) and ``ready ()``
    uint8 (0 until the first refresh: then nothing is skipped).
    """

    def __init__(self, box_min: tuple[float, float, float], box_max: tuple[float, float, float], res: int):
        super().__init__()
        self.shape = grid_shape(box_min, box_max, res)
        self.register_buffer("box_min", torch.tensor(box_min, dtype=torch.float32), persistent=False)
        self.register_buffer("box_max", torch.tensor(box_max, dtype=torch.float32), persistent=False)
        self.register_buffer("density", torch.zeros(self.shape, dtype=torch.float32))
        self.register_buffer("occupied", torch.ones(self.shape, dtype=torch.uint8))
        self.register_buffer("ready", torch.zeros((), dtype=torch.uint8))
        self._last: tuple | None = None  # the last ray_bounds call: (grid versions, rays, bounds)

    @property
    def is_ready(self) -> bool:
        return bool(self.ready)

    def strides(self) -> tuple[int, int, int]:
        """Flat-index strides of the cells ``(X, Y, Z)`` (row-major)."""
        return (self.shape[1] * self.shape[2], self.shape[2], 1)

    def signed_density(self) -> torch.Tensor:
        """``(X, Y, Z)``: each cell's density, negated (and moved below zero) where the cell is not
        occupied: one lookup gives both the occupancy and the density of a cell."""
        return torch.where(self.occupied.bool(), self.density, -self.density - 1e-30)

    def cell_size(self) -> float:
        """Side of a cell in world units (cells are near-cubic: :func:`grid_shape` rounds; the longest side)."""
        return float(((self.box_max - self.box_min) / torch.tensor(self.shape).to(self.box_max)).max())

    @torch.no_grad()
    def refresh(self, density: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """Recompute the grid from ``density``: world points ``(1, N, 3)`` -> sigma ``(1, N)``.

        Returns:
            The occupied fraction of the box (after dilation).
        """
        device = self.occupied.device
        nx, ny, nz = self.shape
        sub = (torch.arange(PROBES, device=device, dtype=torch.float32) + 0.5) / PROBES
        y_axis, z_axis = ((torch.arange(n, device=device, dtype=torch.float32)[:, None] + sub).reshape(-1) / n
                          for n in (ny, nz))
        per_x = max(1, CHUNK // (ny * nz * PROBES ** 3))  # x cells evaluated at a time
        slabs = []
        for x0 in range(0, nx, per_x):
            cells = torch.arange(x0, min(nx, x0 + per_x), device=device, dtype=torch.float32)
            x_axis = ((cells[:, None] + sub).reshape(-1)) / nx
            u = torch.stack(torch.meshgrid(x_axis, y_axis, z_axis, indexing="ij"), -1).reshape(-1, 3)
            sigma = density((self.box_min + u * (self.box_max - self.box_min))[None])[0].float()
            slabs.append(sigma.reshape(len(cells), PROBES, ny, PROBES, nz, PROBES).amax((1, 3, 5)))
        sigma = torch.cat(slabs)
        occupied = (-torch.expm1(-sigma * self.cell_size())) > CELL_OPACITY
        if DILATION > 0:
            k = 2 * DILATION + 1
            occupied = F.max_pool3d(occupied[None, None].float(), k, stride=1, padding=DILATION)[0, 0] > 0
        self.density.copy_(sigma)
        self.occupied.copy_(occupied.to(torch.uint8))
        self.ready.fill_(1)
        return float(occupied.float().mean())

    @torch.no_grad()
    def ray_bounds(self, origins: torch.Tensor, dirs: torch.Tensor, t_near: torch.Tensor, t_far: torch.Tensor,
                   hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shrink box segments to their occupied part, :data:`CHUNK` // 64 rays at a time (see :meth:`_span`).

        On CPU the last call's rays and bounds are kept: the same rays through the same grid (a
        fixed camera, frame after frame) are not marched again.
        """
        rays = (origins, dirs, t_near, t_far, hit)
        key = tuple((b.data_ptr(), b._version) for b in (self.occupied, self.density))
        cpu = origins.device.type == "cpu"  # (on CUDA the comparison would wait for the GPU)
        if cpu and self._last is not None and self._last[0] == key and all(
                old.shape == new.shape and torch.equal(old, new) for old, new in zip(self._last[1], rays, strict=True)):
            return self._last[2]
        step = max(1, CHUNK // 64)
        parts = [self._span(origins[i:i + step], dirs[i:i + step], t_near[i:i + step], t_far[i:i + step],
                            hit[i:i + step]) for i in range(0, origins.shape[0], step)]
        bounds = parts[0] if len(parts) == 1 else tuple(torch.cat(p) for p in zip(*parts, strict=True))
        self._last = (key, tuple(r.clone() for r in rays), bounds) if cpu else None
        return bounds  # type: ignore[return-value]

    def _cells(self, origins: torch.Tensor, dirs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Flat indices ``(R, M)`` of the cells holding the points ``origins + t dirs`` (``t (R, M)``),
        clamped into the grid; computed one axis at a time on contiguous ``(R, M)`` tensors (float
        arithmetic is exact: the flat indices are far below 2^24)."""
        lo, hi = self.box_min.to(origins), self.box_max.to(origins)
        flat = torch.zeros_like(t)
        for axis, (cells, stride) in enumerate(zip(self.shape, self.strides(), strict=True)):
            per_unit = cells / float(hi[axis] - lo[axis])
            pos = torch.addcmul(((origins[:, axis] - lo[axis]) * per_unit)[:, None], t,
                                (dirs[:, axis] * per_unit)[:, None])
            flat.add_(pos.floor_().clamp_(0, cells - 1), alpha=stride)
        return flat.long()

    def _span(self, origins: torch.Tensor, dirs: torch.Tensor, t_near: torch.Tensor, t_far: torch.Tensor,
              hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shrink box segments ``[t_near, t_far]`` to their occupied part.

        Args:
            origins, dirs: ``(R, 3)`` world rays; t_near, t_far, hit: ``(R,)`` from the box test.
        Returns:
            ``t_near (R,)``, ``t_far (R,)`` of the span from the first occupied cell met to the
            last one or, sooner, :data:`OPAQUE_MARGIN` cells after the ray turns opaque (rounded
            outwards to the march step), and ``hit (R,)``, false for rays that meet no occupied cell.
        """
        steps = MARCH_PER_CELL * max(self.shape)
        frac = (torch.arange(steps, device=origins.device, dtype=origins.dtype) + 0.5) / steps
        length = t_far - t_near
        t = t_near[:, None] + length[:, None] * frac  # (R, M)
        signed = self.signed_density().reshape(-1)[self._cells(origins, dirs, t)]  # (R, M): >= 0 in occupied cells
        occ = signed >= 0
        depth = torch.cumsum(signed.abs() * (length / steps)[:, None].to(signed), -1)
        found = occ.any(-1) & hit
        first = occ.to(torch.uint8).argmax(-1)
        last = steps - 1 - occ.flip(-1).to(torch.uint8).argmax(-1)
        opaque = depth > OPAQUE_DEPTH
        ends = torch.where(opaque.any(-1), opaque.to(torch.uint8).argmax(-1) + OPAQUE_MARGIN * MARCH_PER_CELL, last)
        last = torch.minimum(last, ends)
        lo = t_near + length * first.to(length.dtype) / steps
        hi = t_near + length * (last + 1).to(length.dtype) / steps
        zero = torch.zeros_like(t_near)
        return torch.where(found, lo, zero), torch.where(found, hi, zero), found
