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


def head_volume_weight(points: torch.Tensor, volume: tuple[float, ...]) -> torch.Tensor:
    """Density multiplier ``(...)`` in [0, 1] at canonical ``points (..., 3)``.

    Args:
        volume: ``(ax, ytop, zc, az, yc)`` (see the module docstring).
    """
    ax, ytop, zc, az, yc = volume
    x, y, z = points.unbind(-1)
    r2 = (x / ax).square() + ((z - zc) / az).square() + ((y - yc).clamp_min(0.0) / (ytop - yc)).square()
    return ((1.0 + FADE - r2.sqrt()) / FADE).clamp(0.0, 1.0)
