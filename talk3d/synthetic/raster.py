"""A small z-buffer triangle rasteriser in torch (CPU-friendly, no OpenGL, no GPU).

Triangles are projected with a pinhole camera in the conventions of :mod:`talk3d.camera`
(OpenCV axes, normalised intrinsics, pixel centres at ``(i + 0.5) / W``). Every triangle is
expanded into the pixels of its screen bounding box in one vectorised batch, barycentric
coordinates are evaluated at the pixel centres, and the nearest covering triangle of each
pixel wins a scatter-min depth test. Attributes are interpolated perspective-correctly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

NEAR = 1e-3


@dataclass
class Fragments:
    """Per-pixel result of :func:`rasterize`.

    Attributes:
        face: ``(H, W)`` long index of the visible triangle, ``-1`` where nothing is hit.
        bary: ``(H, W, 3)`` perspective-correct barycentric weights of that triangle's
            vertices (zeros where nothing is hit).
        depth: ``(H, W)`` camera-space depth (``z``) of the visible surface, ``inf`` where empty.
    """

    face: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def hit(self) -> torch.Tensor:
        """``(H, W)`` bool: a triangle covers the pixel."""
        return self.face >= 0


def world_to_camera(points: torch.Tensor, cam2world: torch.Tensor) -> torch.Tensor:
    """Transform world points into camera coordinates.

    Args:
        points: ``(N, 3)`` world points.
        cam2world: ``(4, 4)`` camera-to-world (OpenCV axes).
    Returns:
        ``(N, 3)`` camera-space points (``z`` = depth along the viewing direction).
    """
    rot = cam2world[:3, :3]
    return (points - cam2world[:3, 3]) @ rot


def project_points(cam_points: torch.Tensor, intrinsics: torch.Tensor, width: int,
                   height: int) -> torch.Tensor:
    """Pinhole projection of camera-space points to continuous pixel coordinates.

    Args:
        cam_points: ``(N, 3)`` camera-space points with ``z > 0``.
        intrinsics: ``(3, 3)`` normalised intrinsics.
    Returns:
        ``(N, 2)`` x, y in pixels; pixel ``i`` has its centre at ``i + 0.5``.
    """
    z = cam_points[:, 2].clamp_min(NEAR)
    u = (intrinsics[0, 0] * cam_points[:, 0] / z + intrinsics[0, 2]) * width
    v = (intrinsics[1, 1] * cam_points[:, 1] / z + intrinsics[1, 2]) * height
    return torch.stack([u, v], -1)


def rasterize(cam_points: torch.Tensor, faces: torch.Tensor, intrinsics: torch.Tensor,
              width: int, height: int | None = None) -> Fragments:
    """Z-buffer rasterisation of a triangle mesh given in camera space.

    Args:
        cam_points: ``(V, 3)`` vertices in camera coordinates (``z`` forward).
        faces: ``(F, 3)`` long vertex indices (either winding; no back-face culling).
        intrinsics: ``(3, 3)`` normalised intrinsics.
        width, height: output size in pixels (``height`` defaults to ``width``).
    Returns:
        :class:`Fragments` of size ``(H, W)``. Triangles with a vertex behind the near
        plane are dropped.
    """
    height = width if height is None else height
    dev = cam_points.device
    cam_points = cam_points.float()
    n_pix = height * width
    face_map = torch.full((n_pix,), -1, dtype=torch.long, device=dev)
    bary_map = torch.zeros(n_pix, 3, device=dev)
    depth_map = torch.full((n_pix,), float("inf"), device=dev)

    xy = project_points(cam_points, intrinsics.to(cam_points), width, height)
    tri_xy = xy[faces]  # (F, 3, 2)
    tri_z = cam_points[faces, 2]  # (F, 3)
    # pixel index ranges whose centres (i + 0.5) fall inside the bounding box
    x0 = torch.ceil(tri_xy[..., 0].amin(1) - 0.5).clamp_min(0).long()
    x1 = torch.floor(tri_xy[..., 0].amax(1) - 0.5).clamp_max(width - 1).long()
    y0 = torch.ceil(tri_xy[..., 1].amin(1) - 0.5).clamp_min(0).long()
    y1 = torch.floor(tri_xy[..., 1].amax(1) - 0.5).clamp_max(height - 1).long()
    e1 = tri_xy[:, 1] - tri_xy[:, 0]
    e2 = tri_xy[:, 2] - tri_xy[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    keep = (tri_z.amin(1) > NEAR) & (x1 >= x0) & (y1 >= y0) & (area.abs() > 1e-9)
    ids = keep.nonzero().squeeze(1)
    if ids.numel() == 0:
        return _fragments(face_map, bary_map, depth_map, height, width)

    bw = (x1 - x0 + 1)[ids]
    counts = bw * (y1 - y0 + 1)[ids]
    tri = torch.repeat_interleave(ids, counts)
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(int(counts.sum()), device=dev) - torch.repeat_interleave(starts, counts)
    bw_rep = torch.repeat_interleave(bw, counts)
    px = x0[tri] + local % bw_rep
    py = y0[tri] + local // bw_rep

    # barycentric weights at pixel centres (screen space)
    p = torch.stack([px.float() + 0.5, py.float() + 0.5], -1) - tri_xy[tri, 0]
    a = area[tri]
    w1 = (p[:, 0] * e2[tri, 1] - p[:, 1] * e2[tri, 0]) / a
    w2 = (e1[tri, 0] * p[:, 1] - e1[tri, 1] * p[:, 0]) / a
    w0 = 1.0 - w1 - w2
    eps = -1e-6
    inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
    tri, px, py = tri[inside], px[inside], py[inside]
    w = torch.stack([w0[inside], w1[inside], w2[inside]], -1)

    # perspective-correct weights and depth
    wz = w / tri_z[tri]
    inv_z = wz.sum(1)
    depth = 1.0 / inv_z
    bary = wz / inv_z[:, None]

    pix = py * width + px
    depth_map.scatter_reduce_(0, pix, depth, reduce="amin")
    win = depth <= depth_map[pix]
    cand = win.nonzero().squeeze(1)
    # one winner per pixel even when depths tie exactly
    chosen = torch.full((n_pix,), -1, dtype=torch.long, device=dev)
    chosen.scatter_reduce_(0, pix[cand], cand, reduce="amax")
    hit = chosen >= 0
    sel = chosen[hit]
    face_map[hit] = tri[sel]
    bary_map[hit] = bary[sel]
    return _fragments(face_map, bary_map, depth_map, height, width)


def _fragments(face: torch.Tensor, bary: torch.Tensor, depth: torch.Tensor, h: int, w: int) -> Fragments:
    return Fragments(face.view(h, w), bary.view(h, w, 3), depth.view(h, w))


def interpolate(frags: Fragments, faces: torch.Tensor, attr: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes at the visible surface.

    Args:
        frags: result of :func:`rasterize`, ``(H, W)``.
        faces: ``(F, 3)`` the same faces.
        attr: ``(V, C)`` per-vertex attributes.
    Returns:
        ``(H, W, C)``; zeros where nothing is hit.
    """
    h, w = frags.face.shape
    out = torch.zeros(h * w, attr.shape[1], dtype=attr.dtype, device=attr.device)
    hit = frags.face.reshape(-1) >= 0
    f = frags.face.reshape(-1)[hit]
    b = frags.bary.reshape(-1, 3)[hit].to(attr.dtype)
    out[hit] = (attr[faces[f]] * b[..., None]).sum(1)
    return out.view(h, w, -1)


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear texture lookup.

    Args:
        texture: ``(3, Ht, Wt)`` float image.
        uv: ``(H, W, 2)`` coordinates in [0, 1] (u right, v down).
    Returns:
        ``(H, W, 3)`` colours.
    """
    grid = (uv * 2.0 - 1.0)[None].to(texture)
    out = F.grid_sample(texture[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals ``(V, 3)`` of a mesh (``verts (V, 3)``, ``faces (F, 3)``)."""
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    fn = torch.linalg.cross(v1 - v0, v2 - v0)
    vn = torch.zeros_like(verts).index_add_(0, faces.reshape(-1), fn.repeat_interleave(3, 0))
    return vn / vn.norm(dim=-1, keepdim=True).clamp_min(1e-12)
