"""Photometric refinement of head poses: direct alignment of the textured rigid upper face.

Landmark poses (:mod:`talk3d.face.pose`) inherit the detector's bias: FaceMesh regresses
landmarks towards a frontal face and under-reports pitch by 20-40 % on the synthetic head
(``docs/synthetic.md``). This module polishes each frame's pose against the pixels instead:

1. points are sampled on the rigid triangles of the canonical FaceMesh surface (forehead,
   nose, upper cheeks; no eyes, eyelids, brows, lips, jaw or face outline);
2. each point gets a colour, the weighted mean over reference frames (weights: visible x
   facing^4), re-estimated in ``rounds`` while the reference poses are refined (a small
   photometric bundle adjustment);
3. every frame's pose (rotation about the head centre + translation, 6 numbers) is solved by
   Levenberg-Marquardt on the Huber-weighted colour difference, with a per-frame, per-channel
   gain and bias for exposure changes, coarse to fine over Gaussian-blurred images.

Frames whose photometric error does not drop, or whose rotation would move by more than
``max_change_deg``, keep their landmark pose. Everything runs on the CPU in batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from talk3d.face.landmarks import tessellation_triangles

FrameLoader = Callable[[Sequence[int]], np.ndarray]
"""``loader(indices) -> (B, H, W, 3)`` uint8 RGB frames of the dataset (any square size)."""


@dataclass
class PhotometricConfig:
    """Settings of :func:`refine_poses_photometric`."""

    points: int = 5000
    """Surface points sampled on the rigid face triangles."""
    work_size: int = 256
    """Frames are resized to this square side for the alignment."""
    sigmas: tuple[float, ...] = (2.0, 1.0, 0.5)
    """Gaussian blur (pixels at ``work_size``) of each coarse-to-fine level."""
    iterations: int = 6
    """Levenberg-Marquardt iterations per frame and level."""
    reference_frames: int = 150
    """Frames (evenly spaced) whose colours define the face texture."""
    rounds: int = 1
    """Texture / reference-pose alternations per level."""
    min_facing: float = 0.5
    """Points whose normal makes a cosine below this with the view direction are ignored."""
    huber: float = 0.1
    """Huber threshold of the colour residual (colours in [0, 1])."""
    max_change_deg: float = 10.0
    """Frames whose refined rotation differs more than this from the landmark pose keep the latter."""
    batch: int = 32
    """Frames aligned together."""
    seed: int = 0
    """Seed of the surface-point sampling."""


@dataclass
class RigidSurface:
    """Points on the rigid part of the canonical face surface (world space)."""

    points: torch.Tensor
    """``(P, 3)``."""
    normals: torch.Tensor
    """``(P, 3)`` unit outward normals."""


def rigid_vertices(canonical: np.ndarray) -> np.ndarray:
    """``(468,)`` bool: FaceMesh vertices that move with the skull.

    Excludes lips, eye contours and the ring of eyelid skin around them, eyebrows, the face
    outline (it slides with the silhouette) and everything below the base of the nose.
    """
    from mediapipe.python.solutions import face_mesh_connections as conn

    def vertices(edges: frozenset) -> set[int]:
        return {v for e in edges for v in e}

    eyes = vertices(conn.FACEMESH_LEFT_EYE) | vertices(conn.FACEMESH_RIGHT_EYE)
    ring: set[int] = set()
    for a, b in conn.FACEMESH_TESSELATION:
        if a in eyes:
            ring.add(b)
        if b in eyes:
            ring.add(a)
    excluded = (eyes | ring | vertices(conn.FACEMESH_LIPS) | vertices(conn.FACEMESH_LEFT_EYEBROW)
                | vertices(conn.FACEMESH_RIGHT_EYEBROW) | vertices(conn.FACEMESH_FACE_OVAL))
    nose_base_y = float(canonical[2, 1])  # landmark 2: where the nose meets the upper lip
    keep = np.array([v not in excluded for v in range(468)])
    return keep & (np.asarray(canonical)[:468, 1] >= nose_base_y)


def rigid_surface(canonical: np.ndarray, count: int = 5000, seed: int = 0) -> RigidSurface:
    """Sample ``~count`` points uniformly by area on the rigid FaceMesh triangles.

    Args:
        canonical: ``(478, 3)`` world-space canonical landmarks (+z out of the face).
    """
    can = np.asarray(canonical, np.float64)
    tris = tessellation_triangles()
    tris = tris[rigid_vertices(can)[tris].all(1)]
    a, b, c = can[tris[:, 0]], can[tris[:, 1]], can[tris[:, 2]]
    cross = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(cross, axis=1)
    normal = cross / np.maximum(2 * area[:, None], 1e-12)
    normal *= np.where(normal[:, 2:] < 0, -1.0, 1.0)  # the rigid face looks towards +z
    per_tri = np.maximum(1, np.round(area / area.sum() * count)).astype(int)
    rng = np.random.default_rng(seed)
    uv = rng.random((int(per_tri.sum()), 2))
    flip = uv.sum(1) > 1
    uv[flip] = 1 - uv[flip]
    tri = np.repeat(np.arange(len(tris)), per_tri)
    pts = a[tri] + uv[:, :1] * (b - a)[tri] + uv[:, 1:] * (c - a)[tri]
    return RigidSurface(torch.from_numpy(pts).float(), torch.from_numpy(normal[tri]).float())


def _hat(w: torch.Tensor) -> torch.Tensor:
    """``(B, 3)`` -> ``(B, 3, 3)`` cross-product matrices."""
    z = torch.zeros_like(w[:, 0])
    return torch.stack([z, -w[:, 2], w[:, 1], w[:, 2], z, -w[:, 0], -w[:, 1], w[:, 0], z], 1).view(-1, 3, 3)


class _Aligner:
    """Shared geometry and image sampling for one dataset (intrinsics, surface, work size)."""

    def __init__(self, surface: RigidSurface, intrinsics: np.ndarray, config: PhotometricConfig) -> None:
        self.x = surface.points
        self.n = surface.normals
        k = np.asarray(intrinsics, np.float64)
        self.f = (float(k[0, 0]), float(k[1, 1]))
        self.c = (float(k[0, 2]), float(k[1, 2]))
        self.cfg = config
        self.size = config.work_size

    def project(self, rot: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """World-to-camera ``rot (B, 3, 3)``, ``t (B, 3)`` -> rotated points ``q (B, P, 3)``,
        camera points ``p = q + t`` and pixels ``uv (B, P, 2)`` at the work size."""
        q = torch.einsum("bij,pj->bpi", rot, self.x)
        p = q + t[:, None]
        z = p[..., 2].clamp(min=1e-6)
        uv = torch.stack([(self.f[0] * p[..., 0] / z + self.c[0]) * self.size,
                          (self.f[1] * p[..., 1] / z + self.c[1]) * self.size], -1)
        return q, p, uv

    def visibility(self, rot: torch.Tensor, t: torch.Tensor, cell: float = 2.0,
                   tol: float = 0.05) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, P)`` bool visible (in the image, facing the camera, in front on a coarse point
        z-buffer), ``(B, P)`` cosine between the normals and the direction to the camera, and
        the pixels ``uv (B, P, 2)``."""
        _, p, uv = self.project(rot, t)
        normals = torch.einsum("bij,pj->bpi", rot, self.n)
        facing = (-(normals * p).sum(-1) / (p * p).sum(-1).sqrt()).clamp(min=0.0)
        side = int(math.ceil(self.size / cell))
        cells = (uv / cell).floor().long().clamp(0, side - 1)
        idx = cells[..., 1] * side + cells[..., 0]
        zbuf = torch.full((p.shape[0], side * side), float("inf")).scatter_reduce(1, idx, p[..., 2], reduce="amin")
        front = p[..., 2] <= zbuf.gather(1, idx) + tol
        inside = ((uv > 2) & (uv < self.size - 2)).all(-1)
        return front & inside & (facing > self.cfg.min_facing), facing, uv

    def sample(self, images: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        """Bilinear lookup: images ``(B, C, H, W)``, pixels ``(B, P, 2)`` -> ``(B, P, C)``."""
        grid = (uv / self.size * 2 - 1)[:, :, None]
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0].transpose(1, 2)

    def texture(self, images: torch.Tensor, rot: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted sums of colour ``(P, 3)`` and weight ``(P,)`` over a batch of frames."""
        visible, facing, uv = self.visibility(rot, t)
        w = visible.float() * facing ** 4
        col = self.sample(images, uv)
        return (col * w[..., None]).sum(0), w.sum(0)

    def residual(self, images: torch.Tensor, grads: torch.Tensor | None, rot: torch.Tensor, t: torch.Tensor,
                 tex: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Gain/bias-compensated colour residual ``(B, P, 3)``, per-frame Huber cost ``(B,)`` and,
        with ``grads`` ``(B, 6, H, W)``, the Jacobian ``(B, P, 3, 6)`` w.r.t. (rotation, translation)."""
        q, p, uv = self.project(rot, t)
        col = self.sample(images, uv)
        m = mask.float()[..., None]
        cnt = m.sum(1).clamp(min=1.0)
        mc, mt = (col * m).sum(1) / cnt, (tex * m).sum(1) / cnt
        dc, dt = (col - mc[:, None]) * m, (tex - mt[:, None]) * m
        gain = ((dc * dt).sum(1) / (dc * dc).sum(1).clamp(min=1e-8)).clamp(0.5, 2.0)  # (B, 3)
        res = gain[:, None] * (col - mc[:, None]) + mt[:, None] - tex
        hub = self.cfg.huber
        absr = res.abs()
        cost_el = torch.where(absr < hub, 0.5 * res ** 2, hub * (absr - 0.5 * hub))
        cost = (cost_el * m).sum((1, 2)) / cnt[:, 0]
        if grads is None:
            return res, cost, None
        g = self.sample(grads, uv).view(*uv.shape[:2], 3, 2)  # (B, P, 3 channels, d/du d/dv)
        z = p[..., 2].clamp(min=1e-6)
        zero = torch.zeros_like(z)
        du = torch.stack([self.f[0] / z, zero, -self.f[0] * p[..., 0] / z ** 2], -1) * self.size  # (B, P, 3)
        dv = torch.stack([zero, self.f[1] / z, -self.f[1] * p[..., 1] / z ** 2], -1) * self.size
        # d p / d(omega) = -[q]x, so d u / d(omega) = q x (d u / d p); d p / d(translation) = I
        du_dxi = torch.cat([torch.cross(q, du, dim=-1), du], -1)  # (B, P, 6)
        dv_dxi = torch.cat([torch.cross(q, dv, dim=-1), dv], -1)
        jac = gain[:, None, :, None] * (g[..., :1] * du_dxi[:, :, None] + g[..., 1:] * dv_dxi[:, :, None])
        return res, cost, jac

    def align(self, images: torch.Tensor, grads: torch.Tensor, rot: torch.Tensor, t: torch.Tensor,
              tex: torch.Tensor, tex_ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Levenberg-Marquardt on a batch; returns refined ``rot``, ``t`` and the final cost ``(B,)``."""
        mask = self.visibility(rot, t)[0] & tex_ok[None]
        lam = torch.full((rot.shape[0],), 1e-2)
        hub = self.cfg.huber
        for _ in range(self.cfg.iterations):
            res, cost, jac = self.residual(images, grads, rot, t, tex, mask)
            w = torch.where(res.abs() < hub, torch.ones_like(res), hub / res.abs().clamp(min=1e-12)) * mask[..., None]
            jac = jac.flatten(1, 2)  # (B, 3P, 6)
            jw = jac * w.flatten(1, 2)[..., None]
            h = jw.transpose(1, 2) @ jac
            g = (jw.transpose(1, 2) @ res.flatten(1, 2)[..., None])[..., 0]
            damp = h + lam[:, None, None] * torch.diag_embed(h.diagonal(dim1=1, dim2=2) + 1e-9)
            step = -torch.linalg.solve(damp, g[..., None])[..., 0]
            rot_new = torch.matrix_exp(_hat(step[:, :3])) @ rot
            t_new = t + step[:, 3:]
            _, cost_new, _ = self.residual(images, None, rot_new, t_new, tex, mask)
            better = cost_new < cost
            rot = torch.where(better[:, None, None], rot_new, rot)
            t = torch.where(better[:, None], t_new, t)
            cost = torch.where(better, cost_new, cost)
            lam = torch.where(better, lam / 3, lam * 4).clamp(1e-6, 1e6)
        return rot, t, cost


def _prepare(frames: np.ndarray, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``(B, S, S, 3)`` -> blurred float images ``(B, 3, S, S)`` and gradients ``(B, 6, S, S)``."""
    import kornia

    img = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    if sigma > 0:
        k = 2 * int(math.ceil(3 * sigma)) + 1
        img = kornia.filters.gaussian_blur2d(img, (k, k), (sigma, sigma))
    grad = torch.zeros(img.shape[0], 3, 2, *img.shape[2:])  # central differences, per pixel
    grad[:, :, 0, :, 1:-1] = 0.5 * (img[..., 2:] - img[..., :-2])
    grad[:, :, 1, 1:-1, :] = 0.5 * (img[..., 2:, :] - img[..., :-2, :])
    return img, grad.flatten(1, 2)


def _rotation_change_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cos = ((a.transpose(1, 2) @ b).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def refine_poses_photometric(load_frames: FrameLoader, num_frames: int, cam2world: np.ndarray,
                             canonical: np.ndarray, intrinsics: np.ndarray,
                             config: PhotometricConfig | None = None,
                             progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """Refine head poses by aligning the textured rigid face to every frame.

    Args:
        load_frames: loader of dataset frames by index (see :data:`FrameLoader`).
        num_frames: N.
        cam2world: ``(N, 4, 4)`` initial (landmark) camera-to-world poses.
        canonical: ``(478, 3)`` world-space canonical landmarks.
        intrinsics: ``(3, 3)`` normalised intrinsics of the frames.
        progress: called as ``progress(done, total)`` (frame alignments) after each batch.
    Returns:
        refined ``(N, 4, 4)`` float32 camera-to-world, and figures: mean per-frame photometric
        RMS at the landmark and at the refined pose (0-255 colour units, gain/bias compensated,
        rigid face points visible at the landmark pose, finest level), frames that kept their
        landmark pose, median / p95 / max rotation change in degrees.
    """
    cfg = config or PhotometricConfig()
    al = _Aligner(rigid_surface(canonical, cfg.points, cfg.seed), intrinsics, cfg)
    w2c = torch.linalg.inv(torch.as_tensor(np.asarray(cam2world), dtype=torch.float64)).float()
    rot0, t0 = w2c[:, :3, :3].contiguous(), w2c[:, :3, 3].contiguous()

    ref_idx = np.unique(np.linspace(0, num_frames - 1, min(cfg.reference_frames, num_frames)).round().astype(int))
    total, done = len(cfg.sigmas) * cfg.rounds * len(ref_idx) + num_frames, 0

    def tick(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    with torch.no_grad():
        ref_frames = np.stack([_resize_u8(f, cfg.work_size) for f in load_frames(ref_idx)])
        textures = _reference_textures(al, ref_frames, rot0[ref_idx].clone(), t0[ref_idx].clone(), cfg, tick)
        rot, t = rot0.clone(), t0.clone()
        cost = torch.zeros(2, num_frames)  # Huber cost at the landmark / refined pose, finest level
        rms = torch.zeros(2, num_frames)
        for a in range(0, num_frames, cfg.batch):
            idx = list(range(a, min(a + cfg.batch, num_frames)))
            frames = np.stack([_resize_u8(f, cfg.work_size) for f in load_frames(idx)])
            for level, sigma in enumerate(cfg.sigmas):
                img, grad = _prepare(frames, sigma)
                tex, ok = textures[level]
                rot[idx], t[idx], _ = al.align(img, grad, rot[idx], t[idx], tex, ok)
            mask = al.visibility(rot0[idx], t0[idx])[0] & ok[None]  # the same points judge both poses
            for j, (r_, t_) in enumerate(((rot0[idx], t0[idx]), (rot[idx], t[idx]))):
                res, cost[j, idx], _ = al.residual(img, None, r_, t_, tex, mask)
                rms[j, idx] = ((res ** 2).sum(-1) * mask).sum(1).div(3 * mask.sum(1).clamp(min=1)).sqrt()
            tick(len(idx))

        change = _rotation_change_deg(rot0, rot)
        keep_landmark = (cost[1] >= cost[0]) | (change > cfg.max_change_deg) | ~torch.isfinite(cost[1])
        rot[keep_landmark], t[keep_landmark] = rot0[keep_landmark], t0[keep_landmark]
        rms[1, keep_landmark] = rms[0, keep_landmark]
    out = torch.eye(4).repeat(num_frames, 1, 1)
    out[:, :3, :3], out[:, :3, 3] = rot, t
    c2w = torch.linalg.inv(out.double()).float().numpy()
    stats = {
        "photometric_rms_before": float(255 * rms[0].mean()),
        "photometric_rms_after": float(255 * rms[1].mean()),
        "photometric_frames_kept_landmark_pose": int(keep_landmark.sum()),
        "photometric_rotation_change_median_deg": float(change.median()),
        "photometric_rotation_change_p95_deg": float(torch.quantile(change, 0.95)),
        "photometric_rotation_change_max_deg": float(change.max()),
    }
    return c2w, stats


def _reference_textures(al: _Aligner, frames: np.ndarray, rot: torch.Tensor, t: torch.Tensor,
                        cfg: PhotometricConfig, tick: Callable[[int], None]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per level: texture ``(P, 3)`` and its validity ``(P,)`` from the reference frames
    ``(R, S, S, 3)``, alternating with the refinement of their poses ``rot (R, 3, 3)``, ``t (R, 3)``."""
    textures = []
    for sigma in cfg.sigmas:
        img, grad = _prepare(frames, sigma)
        for rnd in range(cfg.rounds + 1):
            col, wsum = _batched_texture(al, img, rot, t, cfg.batch)
            tex, ok = col / wsum.clamp(min=1e-6)[:, None], wsum > 0.5
            if rnd == cfg.rounds:
                break
            for a in range(0, len(frames), cfg.batch):
                sl = slice(a, a + cfg.batch)
                rot[sl], t[sl], _ = al.align(img[sl], grad[sl], rot[sl], t[sl], tex, ok)
                tick(img[sl].shape[0])
        textures.append((tex, ok))
    return textures


def _batched_texture(al: _Aligner, img: torch.Tensor, rot: torch.Tensor, t: torch.Tensor,
                     batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    col = torch.zeros(al.x.shape[0], 3)
    wsum = torch.zeros(al.x.shape[0])
    for a in range(0, img.shape[0], batch):
        c, w = al.texture(img[a:a + batch], rot[a:a + batch], t[a:a + batch])
        col += c
        wsum += w
    return col, wsum


def _resize_u8(frame: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if frame.shape[0] == size and frame.shape[1] == size:
        return frame
    interp = cv2.INTER_AREA if frame.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(frame, (size, size), interpolation=interp)
