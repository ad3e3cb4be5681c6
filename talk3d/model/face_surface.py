"""The tracked face as a surface: the canonical landmarks triangulated, and points drawn on it.

Prep's 478 canonical landmarks lie on the face; seen from the front (x, y) they triangulate
(Delaunay) into a height field ``z(x, y)`` over the face, eyes and mouth included. Points drawn
area-uniformly on those triangles give the face prior (:func:`talk3d.model.losses.face_prior`)
rays whose true depth is known anywhere on the face, not only at the 478 vertices.
"""

from __future__ import annotations

import torch

_last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
"""The last landmarks triangulated and their triangles and area CDF (one avatar's face per fit)."""


def face_triangles(landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangles of the landmarks' frontal Delaunay triangulation and their cumulative area.

    Computed once per landmark set (the last one is kept, compared on its own device: no copy to
    the host per training step).

    Args:
        landmarks: ``(L, 3)`` canonical landmarks.
    Returns:
        ``triangles (T, 3)`` int64 landmark indices and ``cdf (T,)`` float32, the running sum of
        the triangles' 3D areas over the total (ends at 1), on ``landmarks``' device.
    """
    global _last
    if _last is None or _last[0].shape != landmarks.shape or _last[0].device != landmarks.device \
            or not torch.equal(_last[0], landmarks.detach().to(_last[0].dtype)):
        from scipy.spatial import Delaunay

        pts = landmarks.detach().cpu().double()
        tri = torch.as_tensor(Delaunay(pts[:, :2].numpy()).simplices, dtype=torch.long)
        a, b, c = (pts[tri[:, i]] for i in range(3))
        area = torch.linalg.cross(b - a, c - a, dim=-1).norm(dim=-1)
        cdf = (area.cumsum(0) / area.sum()).float()
        _last = landmarks.detach().clone(), tri.to(landmarks.device), cdf.to(landmarks.device)
    return _last[1], _last[2]


def sample_face(landmarks: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Points on the triangulated face, area-uniform.

    Args:
        landmarks: ``(L, 3)`` canonical landmarks.
        uniforms: ``(..., 3)`` numbers in ``[0, 1)``: the first picks the triangle (by area), the
            other two the point inside it.
    Returns:
        ``(..., 3)`` canonical points.
    """
    tri, cdf = face_triangles(landmarks)
    pick = torch.searchsorted(cdf, uniforms[..., 0].contiguous()).clamp_max(tri.shape[0] - 1)
    corners = landmarks[tri[pick]]  # (..., 3 corners, 3)
    root, v = uniforms[..., 1].sqrt(), uniforms[..., 2]
    weights = torch.stack([1.0 - root, root * (1.0 - v), root * v], -1)  # barycentric, area-uniform
    return (weights[..., None] * corners).sum(-2)
