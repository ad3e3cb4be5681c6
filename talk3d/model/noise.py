"""Training randomness keyed by frame: the same frame at the same step draws the same numbers.

A training step needs random numbers per frame: ray jitter (stratified and importance
sampling), the landmark rays of the depth prior, audio augmentation, teacher-forcing noise.
Drawing them from one global generator ties them to how the step's frames are grouped: a batch
of two frames on one process would draw other numbers than the same two frames split over two
processes. :class:`FrameNoise` gives every frame its own generator, seeded by
``(seed, step, frame index)``, so a fit is the same whatever the split (data-parallel ranks,
see :mod:`talk3d.fit.distributed`) and a resumed fit repeats exactly what an uninterrupted one
would have drawn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch


def _seed(*key: int) -> int:
    """A 63-bit seed mixed from integers (independent streams for neighbouring keys)."""
    digest = hashlib.blake2b(",".join(str(int(k)) for k in key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class FrameNoise:
    """Per-frame random numbers for a batch of ``B`` frames.

    Every draw takes the same per-frame shape from each frame's generator, in order, and
    stacks them: ``(B, *shape)``. Generators live on the CPU (identical streams on any
    device); the result is moved to ``device``.
    """

    def __init__(self, seed: int, step: int, frames: Sequence[int], device: torch.device | str = "cpu"):
        self.frames = [int(f) for f in frames]
        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(_seed(seed, step, f)) for f in self.frames]

    def __len__(self) -> int:
        return len(self.generators)

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniform ``[0, 1)`` numbers ``(B, *shape)``."""
        return torch.stack([torch.rand(*shape, generator=g) for g in self.generators]).to(self.device)

    def randn(self, *shape: int) -> torch.Tensor:
        """Standard normal numbers ``(B, *shape)``."""
        return torch.stack([torch.randn(*shape, generator=g) for g in self.generators]).to(self.device)

    def randperm(self, n: int) -> torch.Tensor:
        """One permutation of ``range(n)`` per frame: ``(B, n)`` int64."""
        return torch.stack([torch.randperm(n, generator=g) for g in self.generators]).to(self.device)

    def ray_uniform(self, rays: int, n: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(R, n)`` uniform numbers for ``R = B * rays_per_frame`` frame-major rays, or for the
        subset ``rows`` of them (drawn for every ray and then selected, so a ray's numbers do not
        depend on which other rays are kept)."""
        if rays % len(self) != 0:
            raise ValueError(f"{rays} rays do not split evenly over {len(self)} frames")
        u = self.rand(rays // len(self), n).reshape(rays, n)
        return u if rows is None else u[rows.to(u.device)]
