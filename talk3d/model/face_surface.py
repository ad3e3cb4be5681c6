"""The tracked face as a surface: the canonical landmarks triangulated, and points drawn on it.

Prep's 478 canonical landmarks lie on the face; seen from the front (x, y) they triangulate
(Delaunay) into a height field ``z(x, y)`` over the face, eyes and mouth included. Points drawn
area-uniformly on those triangles give the face prior (:func:`talk3d.model.losses.face_prior`)
rays whose true depth is known anywhere on the face, not only at the 478 vertices.
"""

from __future__ import annotations

import torch

_CACHE: dict[tuple[float, ...], tuple[torch.Tensor, torch.Tensor]] = {}


def face_triangles(landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangles of the landmarks' frontal Delaunay triangulation and their cumulative area.

    Args:
        landmarks: ``(L, 3)`` canonical landmarks.
    Returns:
        ``triangles (T, 3)`` int64 landmark indices and ``cdf (T,)`` float32, the running sum of
        the triangles' 3D areas over the total (ends at 1), on ``landmarks``' device.
    """
    from scipy.spatial import Delaunay

    key = tuple(landmarks.detach().cpu().reshape(-1).tolist())
    if key not in _CACHE:
        pts = landmarks.detach().cpu().double()
        tri = torch.as_tensor(Delaunay(pts[:, :2].numpy()).simplices, dtype=torch.long)
        a, b, c = (pts[tri[:, i]] for i in range(3))
        area = torch.linalg.cross(b - a, c - a, dim=-1).norm(dim=-1)
        _CACHE.clear()  # one avatar's landmarks at a time
        _CACHE[key] = tri, (area.cumsum(0) / area.sum()).float()
    tri, cdf = _CACHE[key]
    return tri.to(landmarks.device), cdf.to(landmarks.device)


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
