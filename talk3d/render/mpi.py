"""Multiplane images (MPIs): export from a radiance field, save/load, and render from new cameras.

An MPI is ``L`` fronto-parallel RGBA planes in the reference camera's frame at depths
``z_0 < ... < z_{L-1}`` (camera z, uniform in disparity between the box's near and far),
plus optionally an opaque background plane at ``far``. Layer ``i`` holds the radiance field
of the depth slab ``[b_i, b_{i+1})`` around ``z_i``, composited along each pixel's ray:
``alpha_i = 1 - exp(-sum sigma delta)`` and colour = (weighted colour sum) / ``alpha_i``.
Over-compositing the layers back to front at the reference camera therefore reproduces the
volume rendering exactly (up to sampling); other cameras warp each plane by its homography.

Folder format (as written by :func:`save_mpi`)::

    mpi.json         {"version", "size", "intrinsics" (3x3 normalised), "cam2world" (4x4),
                      "depths" [L] (near -> far), "near", "far", "layers": ["layer_000.png", ...]}
    layer_000.png    RGBA, nearest plane first
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talk3d.checks import checked_number
from talk3d.errors import UserError
from talk3d.io import atomic_dir, confined, read_json_object, write_json
from talk3d.ops import composite_rays

MPI_VERSION = 1
FieldFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``points (1, N, 3) -> (sigma (1, N), rgb (1, N, 3))`` in world (canonical) space."""


@dataclass
class MPI:
    """A multiplane image."""

    rgba: torch.Tensor
    """``(L, 4, H, W)`` straight (not premultiplied) RGBA in [0, 1], nearest plane first."""
    depths: torch.Tensor
    """``(L,)`` plane depths along the reference camera's z axis, increasing."""
    cam2world: torch.Tensor
    """``(4, 4)`` reference camera."""
    intrinsics: torch.Tensor
    """``(3, 3)`` normalised intrinsics of the reference camera."""
    near: float
    """Depth of the first slab boundary."""
    far: float
    """Depth of the last slab boundary."""


def slab_bounds(near: float, far: float, layers: int) -> torch.Tensor:
    """``(L + 1,)`` slab boundaries uniform in disparity from ``near`` to ``far`` (increasing depth)."""
    disp = torch.linspace(1.0 / near, 1.0 / far, layers + 1, dtype=torch.float64)
    return (1.0 / disp).float()


def plane_depths(near: float, far: float, layers: int) -> torch.Tensor:
    """``(L,)`` plane depths: the disparity midpoints of :func:`slab_bounds` (uniform in disparity)."""
    disp = torch.linspace(1.0 / near, 1.0 / far, layers + 1, dtype=torch.float64)
    return (1.0 / (0.5 * (disp[:-1] + disp[1:]))).float()


def box_near_far(cam2world: torch.Tensor, radius: float = 3.0 ** 0.5) -> tuple[float, float]:
    """Near/far camera depths enclosing a sphere of ``radius`` around the head centre."""
    dist = float(cam2world[:3, 3].norm())
    return max(dist - radius, 0.05 * dist, 1e-2), dist + radius


def pixel_intrinsics(k: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Normalised ``(3, 3)`` -> pixel-index intrinsics (pixel ``i`` centred at ``i``, as kornia uses)."""
    kp = k.clone().double()
    kp[0] = kp[0] * width
    kp[1] = kp[1] * height
    kp[0, 2] -= 0.5
    kp[1, 2] -= 0.5
    return kp


@torch.no_grad()
def export_mpi(field: FieldFn, cam2world: torch.Tensor, intrinsics: torch.Tensor, size: int,
               near: float, far: float, layers: int = 32, samples: int = 4,
               background: torch.Tensor | None = None, chunk: int = 1 << 16,
               extra_layers: Sequence[tuple[float, torch.Tensor]] = ()) -> MPI:
    """Build an MPI by compositing the field's samples inside each depth slab.

    Args:
        field: radiance field, see :data:`FieldFn`.
        cam2world: ``(4, 4)`` reference camera; intrinsics: ``(3, 3)`` normalised.
        size: side of the layers in pixels.
        near, far: camera depths of the first and last slab boundary.
        layers: number of planes ``L``; samples: field samples per slab (midpoints).
        background: optional ``(3, size, size)`` plate, added as an opaque plane at ``far``.
        extra_layers: ``(depth, rgba (4, size, size))`` straight-RGBA planes inserted at their
            camera depth (e.g. the avatar's image-space torso layer just behind the head).
    Returns:
        The MPI (on CPU), ``L + len(extra_layers)`` (+1 with a background) layers.
    """
    dev = cam2world.device
    bounds = slab_bounds(near, far, layers).to(dev)
    k = intrinsics.to(dev).float()
    ys, xs = torch.meshgrid((torch.arange(size, device=dev) + 0.5) / size,
                            (torch.arange(size, device=dev) + 0.5) / size, indexing="ij")
    d_cam = torch.stack([(xs - k[0, 2]) / k[0, 0], (ys - k[1, 2]) / k[1, 1], torch.ones_like(xs)], -1).reshape(-1, 3)
    scale = d_cam.norm(dim=-1)  # ray distance per unit of camera depth
    d_world = d_cam @ cam2world[:3, :3].float().T  # (P, 3), camera z = 1
    origin = cam2world[:3, 3].float()
    frac = (torch.arange(samples, device=dev, dtype=torch.float32) + 0.5) / samples
    num_px = d_cam.shape[0]
    rgba = torch.zeros(layers, 4, num_px)
    for i in range(layers):
        z0, z1 = bounds[i], bounds[i + 1]
        z = z0 + (z1 - z0) * frac  # (S,)
        for s in range(0, num_px, chunk):
            dw = d_world[s:s + chunk]
            pts = origin + dw[:, None, :] * z[None, :, None]  # (p, S, 3)
            sigma, rgb = field(pts.reshape(1, -1, 3))
            sigma = sigma.reshape(-1, samples).float()
            rgb = rgb.reshape(-1, samples, 3).float()
            t = z[None, :] * scale[s:s + chunk, None]
            delta = ((z1 - z0) / samples) * scale[s:s + chunk, None].expand_as(t)
            out = composite_rays(sigma, rgb, t, delta)
            a = out["alpha"]
            col = out["features"] / a.clamp_min(1e-6)[:, None]
            col = torch.where(a[:, None] > 1e-6, col, torch.zeros_like(col))
            rgba[i, :3, s:s + chunk] = col.T.clamp(0, 1).cpu()
            rgba[i, 3, s:s + chunk] = a.clamp(0, 1).cpu()
    rgba = rgba.reshape(layers, 4, size, size)
    depths = plane_depths(near, far, layers)
    for depth, layer in extra_layers:
        if layer.shape != (4, size, size):
            raise ValueError(f"extra MPI layer must be (4, {size}, {size}), got {tuple(layer.shape)}")
        pos = int(torch.searchsorted(depths, torch.tensor([float(depth)], dtype=depths.dtype)))
        rgba = torch.cat([rgba[:pos], layer.detach().float().cpu()[None], rgba[pos:]], 0)
        depths = torch.cat([depths[:pos], torch.tensor([float(depth)], dtype=depths.dtype), depths[pos:]])
    if background is not None:
        bg = torch.cat([background.float().cpu(), torch.ones(1, size, size)], 0)
        rgba = torch.cat([rgba, bg[None]], 0)
        depths = torch.cat([depths, torch.tensor([far], dtype=depths.dtype)])
    return MPI(rgba=rgba, depths=depths, cam2world=cam2world.detach().float().cpu(),
               intrinsics=intrinsics.detach().float().cpu(), near=float(near), far=float(far))


def save_mpi(folder: str | os.PathLike, mpi: MPI) -> Path:
    """Write the MPI as RGBA PNG layers + ``mpi.json`` (atomically, the whole folder)."""
    from PIL import Image

    folder = Path(folder)
    names = [f"layer_{i:03d}.png" for i in range(mpi.rgba.shape[0])]
    arr = (mpi.rgba.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    with atomic_dir(folder) as tmp:
        for name, layer in zip(names, arr, strict=True):
            Image.fromarray(layer, mode="RGBA").save(tmp / name)
        write_json(tmp / "mpi.json", {
            "version": MPI_VERSION,
            "size": [int(mpi.rgba.shape[-1]), int(mpi.rgba.shape[-2])],
            "intrinsics": mpi.intrinsics.tolist(),
            "intrinsics_convention": "normalised by image size (fx = fx_px / width), pixel centres at (i + 0.5) / width",
            "cam2world": mpi.cam2world.tolist(),
            "cam2world_convention": "OpenCV camera axes (x right, y down, z forward), canonical head space",
            "depths": [float(d) for d in mpi.depths],
            "depth_convention": "camera z of each fronto-parallel plane, nearest first",
            "near": mpi.near,
            "far": mpi.far,
            "layers": names,
        })
    return folder


def load_mpi(folder: str | os.PathLike) -> MPI:
    """Read an MPI folder written by :func:`save_mpi`.

    Raises:
        UserError: no/unreadable ``mpi.json``, other version, missing or malformed fields, NaN or
            non-increasing depths, layer names outside the folder, missing or mismatched layers.
    """
    folder = Path(folder)
    meta_path = folder / "mpi.json"
    fix = "re-export it with 'talk3d render --mpi DIR'"
    if not meta_path.is_file():
        raise UserError(f"'{folder}' is not an MPI folder (no mpi.json): export one with 'talk3d render --mpi DIR'")
    meta = read_json_object(meta_path, fix)
    if meta.get("version") != MPI_VERSION:
        raise UserError(f"MPI '{folder}' has version {meta.get('version')}, this talk3d reads {MPI_VERSION}: re-export it")
    try:
        geometry = _mpi_geometry(meta)
    except (TypeError, ValueError) as exc:
        raise UserError(f"'{meta_path}' is malformed ({exc}); {fix}") from None
    names = meta.get("layers")
    if not isinstance(names, list) or len(names) != len(geometry["depths"]):
        raise UserError(f"'{meta_path}' must list one layer per depth ({len(geometry['depths'])}); {fix}")
    layers = [_read_layer(confined(folder, name, f"'{meta_path}'", fix), folder, fix) for name in names]
    if len({layer.shape for layer in layers}) != 1:
        raise UserError(f"MPI '{folder}' has layers of different sizes; {fix}")
    rgba = torch.from_numpy(np.stack(layers)).permute(0, 3, 1, 2).float() / 255.0
    return MPI(rgba=rgba, **geometry)


def _mpi_geometry(meta: dict) -> dict:
    """Depths, cameras and near/far of an ``mpi.json``, checked finite and consistent."""
    depths = np.asarray(meta.get("depths"), dtype=np.float64)
    if depths.ndim != 1 or depths.size < 1 or not np.isfinite(depths).all() or (depths <= 0).any():
        raise ValueError("depths must be a non-empty list of positive numbers")
    if (np.diff(depths) < 0).any():
        raise ValueError("depths must be in increasing order (nearest first)")
    cam = np.asarray(meta.get("cam2world"), dtype=np.float64)
    k = np.asarray(meta.get("intrinsics"), dtype=np.float64)
    if cam.shape != (4, 4) or k.shape != (3, 3) or not (np.isfinite(cam).all() and np.isfinite(k).all()):
        raise ValueError("cam2world must be 4x4 and intrinsics 3x3, of finite numbers")
    if abs(np.linalg.det(cam[:3, :3]) - 1.0) > 1e-2 or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError("cam2world must hold a rotation and intrinsics positive focal lengths")
    near = checked_number(meta.get("near"), "near", 1e-9, 1e9)
    far = checked_number(meta.get("far"), "far", near, 1e9)
    return {"depths": torch.tensor(depths, dtype=torch.float32), "cam2world": torch.tensor(cam, dtype=torch.float32),
            "intrinsics": torch.tensor(k, dtype=torch.float32), "near": float(near), "far": float(far)}


def _read_layer(path: Path, folder: Path, fix: str) -> np.ndarray:
    """One RGBA layer ``(H, W, 4)`` uint8 (at most 4096 pixels a side)."""
    from PIL import Image

    if not path.is_file():
        raise UserError(f"MPI '{folder}' is incomplete: {path.name} is missing; {fix}")
    try:
        with Image.open(path) as im:
            if max(im.size) > 4096:
                raise UserError(f"MPI layer '{path}' is {im.size[0]}x{im.size[1]}, larger than 4096; {fix}")
            return np.asarray(im.convert("RGBA"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UserError(f"MPI layer '{path}' cannot be decoded ({exc}); {fix}") from None


def plane_homographies(mpi: MPI, cam2world: torch.Tensor, intrinsics: torch.Tensor,
                       width: int, height: int) -> torch.Tensor:
    """Homographies mapping reference pixels to target pixels for each plane.

    For the plane ``n^T X = d`` (``n = (0, 0, 1)`` in the reference camera) and the relative
    pose ``X_t = R X_s + t``: ``H = K_t (R + t n^T / d) K_s^-1``.

    Returns:
        ``(L, 3, 3)`` float64, pixel-index coordinates (kornia convention).
    """
    src_h, src_w = mpi.rgba.shape[-2:]
    ks = pixel_intrinsics(mpi.intrinsics, src_w, src_h)
    kt = pixel_intrinsics(intrinsics, width, height)
    rel = torch.linalg.inv(cam2world.double()) @ mpi.cam2world.double()
    r, t = rel[:3, :3], rel[:3, 3:4]
    n = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    hs = [kt @ (r + t @ n / float(d)) @ torch.linalg.inv(ks) for d in mpi.depths]
    return torch.stack(hs)


def render_mpi(mpi: MPI, cam2world: torch.Tensor | None = None, intrinsics: torch.Tensor | None = None,
               size: int | None = None) -> torch.Tensor:
    """Render an MPI from a camera by warping each plane and over-compositing back to front.

    Args:
        cam2world: ``(4, 4)`` target camera (default: the reference camera).
        intrinsics: ``(3, 3)`` normalised (default: the reference intrinsics).
        size: output side (default: the layer size).
    Returns:
        ``(4, H, W)``: RGB and accumulated alpha in [0, 1].
    """
    from kornia.geometry.transform import warp_perspective

    cam2world = mpi.cam2world if cam2world is None else cam2world.float().cpu()
    intrinsics = mpi.intrinsics if intrinsics is None else intrinsics.float().cpu()
    height = width = int(size or mpi.rgba.shape[-1])
    hom = plane_homographies(mpi, cam2world, intrinsics, width, height).float()
    rgba = mpi.rgba.clone()
    rgba[:, :3] = rgba[:, :3] * rgba[:, 3:4]  # premultiply so bilinear warping blends correctly
    warped = warp_perspective(rgba, hom, (height, width), mode="bilinear", padding_mode="zeros",
                              align_corners=True)
    out = torch.zeros(4, height, width)
    for i in range(warped.shape[0] - 1, -1, -1):  # farthest first
        layer = warped[i]
        out = layer + (1.0 - layer[3:4]) * out
    return out.clamp(0, 1)


def view_mpi(mpi_dir: str | os.PathLike, out_path: str | os.PathLike, yaw: float = 0.0, pitch: float = 0.0,
             dx: float = 0.0, size: int | None = None, force: bool = False) -> Path:
    """``talk3d mpi-view``: render an MPI folder from the reference camera moved by yaw/pitch/dx; write a PNG.

    Returns:
        The image path (RGB, over black where nothing is).
    """
    from PIL import Image

    from talk3d.camera import orbit
    from talk3d.console import info
    from talk3d.folders import check_separate
    from talk3d.io import atomic_path
    from talk3d.render.outputs import check_outputs

    out_path = Path(out_path)
    if out_path.suffix.lower() != ".png":
        raise UserError(f"output '{out_path}' must end in .png")
    check_outputs([out_path], force)
    try:
        for name, value in (("--yaw", yaw), ("--pitch", pitch)):
            checked_number(value, name, -90.0, 90.0)
        checked_number(dx, "--dx", -100.0, 100.0)
        if size is not None:
            checked_number(size, "--size", 8, 4096, integer=True)
    except ValueError as exc:
        raise UserError(f"{exc}; an MPI only covers views near its own (yaw/pitch within +-90 degrees)") from None
    mpi = load_mpi(mpi_dir)
    check_separate(out_path, [("MPI folder", mpi_dir)])
    cam = orbit(mpi.cam2world, yaw, pitch)
    cam[:3, 3] += dx * cam[:3, 0]
    img = render_mpi(mpi, cam, mpi.intrinsics, size)
    arr = (img[:3].clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    with atomic_path(out_path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    info(f"wrote {out_path} ({arr.shape[1]}x{arr.shape[0]}, yaw {yaw:g}, pitch {pitch:g}, dx {dx:g})")
    return out_path
