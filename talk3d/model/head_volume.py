"""Where the head can be: an ellipsoidal volume around skull and hair in canonical space.

Training cameras look at the head from the front, so nothing in the photographs says how deep
the sides of the head are: the field fills whole columns along z behind the ears and hair, which
every training view hides and every turned view shows as a smear beside the head. The head
volume is the ellipsoid a head and its hair fit in, sized from the dataset (its head masks'
width and height, its landmarks' depth); the field's density is faded to zero outside it.

Shape (canonical units): ``(x / ax)^2 + ((z - zc) / az)^2 + (max(y - yc, 0) / (ytop - yc))^2 <= 1``:
an elliptic cylinder in y below ``yc`` (the box's floor and the head mask bound it there) with
a half-ellipsoid cap above.
"""

from __future__ import annotations

import torch

FADE = 0.08
"""Width of the fade from full density to none, in units of the ellipsoid's radius."""


def head_volume_radius(points: torch.Tensor, volume: tuple[float, ...]) -> torch.Tensor:
    """Ellipsoidal radius ``(...)`` of canonical ``points (..., 3)``: 1 on the volume's surface, below 1 inside.

    Args:
        volume: ``(ax, ytop, zc, az, yc)`` (see the module docstring).
    """
    ax, ytop, zc, az, yc = volume
    x, y, z = points.unbind(-1)
    return ((x / ax).square() + ((z - zc) / az).square() + ((y - yc).clamp_min(0.0) / (ytop - yc)).square()).sqrt()


def head_volume_weight(points: torch.Tensor, volume: tuple[float, ...]) -> torch.Tensor:
    """Density multiplier ``(...)`` in [0, 1] at canonical ``points (..., 3)``.

    Args:
        volume: ``(ax, ytop, zc, az, yc)`` (see the module docstring).
    """
    return ((1.0 + FADE - head_volume_radius(points, volume)) / FADE).clamp(0.0, 1.0)


def entry_distance(origins: torch.Tensor, dirs: torch.Tensor, volume: tuple[float, ...], t_near: torch.Tensor,
                   t_far: torch.Tensor, level: float = 1.0, steps: int = 128) -> torch.Tensor:
    """Distance along each ray to where it first enters the volume's level set ``radius <= level``.

    Marched in ``steps`` equal steps over ``[t_near, t_far]`` and interpolated linearly between the two
    samples around the crossing (the shape is convex: the first crossing is the entry).

    Args:
        origins, dirs: ``(..., 3)`` rays (unit directions).
        t_near, t_far: ``(...)`` the stretch of each ray searched (e.g. the scene box's).
        level: which level set (1: the volume's surface; below 1: a shell inside it).
    Returns:
        ``(...)`` distances; ``inf`` where the ray does not enter the level set within ``[t_near, t_far]``.
    """
    frac = torch.linspace(0.0, 1.0, steps + 1, device=origins.device, dtype=origins.dtype)
    t = t_near[..., None] + (t_far - t_near)[..., None] * frac  # (..., S+1)
    radius = head_volume_radius(origins[..., None, :] + t[..., None] * dirs[..., None, :], volume)
    inside = radius <= level
    first = inside.to(torch.uint8).argmax(-1, keepdim=True)  # first sample inside (0 if none)
    before = (first - 1).clamp_min(0)
    r0, r1 = radius.gather(-1, before), radius.gather(-1, first)
    t0, t1 = t.gather(-1, before), t.gather(-1, first)
    share = ((r0 - level) / (r0 - r1).clamp_min(1e-9)).clamp(0.0, 1.0)
    entry = (t0 + share * (t1 - t0))[..., 0]
    return torch.where(inside.any(-1), entry, torch.full_like(entry, float("inf")))
