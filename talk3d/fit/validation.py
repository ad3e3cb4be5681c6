"""Pictures of a fit: held-out preview grids and training curves."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from talk3d.io import atomic_path


def _depth_image(depth: torch.Tensor, alpha: torch.Tensor | None, size: int) -> np.ndarray:
    """``(1, h, w)`` depth -> ``(size, size, 3)`` uint8 (near bright, background black)."""
    d = depth[0].float()
    a = alpha[0].float() if alpha is not None else torch.ones_like(d)
    fg = a > 0.5
    if fg.any():
        lo, hi = d[fg].min(), d[fg].max()
        v = 1.0 - (d - lo) / (hi - lo).clamp_min(1e-6)
        v = torch.where(fg, 0.15 + 0.85 * v.clamp(0, 1), torch.zeros_like(v))
    else:
        v = torch.zeros_like(d)
    img = (v.cpu().numpy() * 255).astype(np.uint8)
    rgb = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.NEAREST))
    return np.repeat(rgb[..., None], 3, -1)


def _rgb(img: torch.Tensor) -> np.ndarray:
    return (img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def save_preview(path: str | os.PathLike, target: torch.Tensor, outputs: dict[str, torch.Tensor]) -> None:
    """PNG grid, one row per frame: ground truth | render | depth.

    Args:
        target: ``(B, 3, H, W)`` ground truth in [0, 1].
        outputs: model outputs with ``rgb (B, 3, H, W)``, ``depth (B, 1, h, w)``, ``alpha``.
    """
    rows = []
    size = target.shape[-1]
    for i in range(target.shape[0]):
        depth = _depth_image(outputs["depth"][i], outputs.get("alpha", [None] * (i + 1))[i], size)
        rows.append(np.concatenate([_rgb(target[i]), _rgb(outputs["rgb"][i]), depth], 1))
    grid = np.concatenate(rows, 0)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


def plot_curves(path: str | os.PathLike, records: list[dict[str, Any]], val_records: list[dict[str, Any]]) -> None:
    """``curves.png``: training loss (log scale) and train/validation PSNR against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    steps = [r["step"] for r in records]
    if records:
        axes[0].plot(steps, [r["loss"] for r in records], lw=1, label="total loss")
        axes[0].set_yscale("log")
        axes[1].plot(steps, [r.get("psnr", math.nan) for r in records], lw=1, label="train PSNR")
    if val_records:
        axes[1].plot([r["step"] for r in val_records], [r["val_psnr"] for r in val_records], "o-",
                     label="held-out PSNR")
    stage_start: dict[str, int] = {}
    for r in records:
        stage_start.setdefault(r["stage"], r["step"])
    for ax in axes:
        for name, s in stage_start.items():
            ax.axvline(s, color="grey", lw=0.5, ls="--")
            ax.text(s, 1.0, f" {name}", transform=ax.get_xaxis_transform(), fontsize=7, va="top")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("loss")
    axes[1].set_ylabel("PSNR (dB)")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
