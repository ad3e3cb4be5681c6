"""Turning model outputs into frames: RGB, colour-mapped depth, RGBA and side-by-side stereo."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from talk3d.errors import UserError
from talk3d.image import resize


def depth_path(out_path: Path) -> Path:
    """``OUT.mp4`` -> ``OUT.depth.mp4``."""
    return out_path.with_name(f"{out_path.stem}.depth{out_path.suffix or '.mp4'}")


def alpha_dir(out_path: Path) -> Path:
    """``OUT.mp4`` -> ``OUT.alpha/``."""
    return out_path.with_name(f"{out_path.stem}.alpha")


# What talk3d writes inside its output folders (RGBA frames, MPI layers): --force replaces only these.
_OWN_FILES = re.compile(r"^(\d{6}\.png|layer_\d{3}\.png|mpi\.json)$")


def check_outputs(paths: list[Path], force: bool) -> None:
    """Refuse to overwrite any existing output unless ``force``; never replace a special file
    (device, FIFO, socket) or a folder holding files talk3d did not write; refuse outputs that
    overlap each other."""
    for i, p in enumerate(paths):
        for q in paths[i + 1:]:
            a, b = p.resolve(), q.resolve()
            if a == b or a in b.parents or b in a.parents:
                raise UserError(f"outputs '{p}' and '{q}' overlap: choose separate paths")
        if not (p.exists() or p.is_symlink()):
            continue
        if not force:
            raise UserError(f"'{p}' already exists: choose another output path or pass --force to overwrite")
        if p.is_dir() and not p.is_symlink():
            foreign = [c.name for c in p.iterdir() if not _OWN_FILES.match(c.name)]
            if foreign:
                raise UserError(f"'{p}' holds files talk3d did not write (e.g. '{foreign[0]}'): --force replaces "
                                f"only talk3d's outputs; choose another output path")
        elif not p.is_symlink() and not p.is_file():
            raise UserError(f"'{p}' is not a regular file (a device, FIFO or socket): choose another output path")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` float in [0, 1] -> ``(B, H, W, C)`` uint8."""
    return (images.detach().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


_TURBO: np.ndarray | None = None


def _turbo() -> np.ndarray:
    global _TURBO
    if _TURBO is None:
        from matplotlib import colormaps

        _TURBO = (colormaps["turbo"](np.linspace(0, 1, 256))[:, :3]).astype(np.float32)
    return _TURBO


def colorize_depth(depth: torch.Tensor, alpha: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """Colour-map expected ray distance with a fixed range, so colours are stable over a video.

    Args:
        depth: ``(B, 1, h, w)`` expected ray distance (the avatar's ``depth`` output).
        alpha: ``(B, 1, h, w)`` accumulated opacity.
        near, far: distances mapped to the two ends of the colour map (near = red, far = blue).
    Returns:
        ``(B, 3, h, w)`` in [0, 1]; transparent pixels (alpha < 0.5) are black.
    """
    x = ((far - depth) / max(far - near, 1e-6)).clamp(0, 1)  # 1 = near
    lut = torch.from_numpy(_turbo()).to(depth.device)
    idx = (x * 255.0 + 0.5).long().clamp(0, 255)[:, 0]  # (B, h, w)
    rgb = lut[idx].permute(0, 3, 1, 2)
    return rgb * (alpha > 0.5).to(rgb.dtype)


def straight_rgba(fg: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """RGBA with straight (un-premultiplied) colour from a premultiplied foreground.

    Args:
        fg: ``(B, 3, H, W)`` premultiplied foreground; alpha: ``(B, 1, H, W)`` (resized to fg).
    Returns:
        ``(B, 4, H, W)`` in [0, 1]; fully transparent pixels get colour 0.
    """
    a = resize(alpha, fg.shape[-1]).clamp(0, 1)
    col = fg / a.clamp_min(1e-3)
    col = torch.where(a > 1e-3, col, torch.zeros_like(col)).clamp(0, 1)
    return torch.cat([col, a], 1)


def write_rgba_frames(folder: Path, start: int, rgba: np.ndarray) -> None:
    """Write ``(B, H, W, 4)`` uint8 RGBA frames as ``folder/%06d.png`` starting at index ``start``."""
    from PIL import Image

    for i, frame in enumerate(rgba):
        Image.fromarray(frame, mode="RGBA").save(folder / f"{start + i:06d}.png")


def side_by_side(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Stereo frame ``(B, C, H, 2W)`` with the left eye's view on the left."""
    return torch.cat([left, right], -1)


def remove_if_exists(path: str | os.PathLike) -> None:
    """Remove a previous output file or folder (used only with ``force``)."""
    import shutil

    p = Path(path)
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()
