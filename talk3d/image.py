"""Image operations shared by the model, the fit, rendering and evaluation: one resize and one
implementation of each image metric (PSNR, SSIM, PSNR inside boxes).

Images are float tensors ``(B, C, H, W)`` (or ``(C, H, W)`` for the metrics) in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(B, C, h, w)`` to ``(B, C, size, size)``: area average when shrinking, bilinear
    otherwise (no-op at the same size)."""
    if img.shape[-1] == size and img.shape[-2] == size:
        return img
    if img.shape[-1] > size:
        return F.interpolate(img, size=(size, size), mode="area")
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)


def _as_batch(img: torch.Tensor) -> torch.Tensor:
    if img.ndim == 3:
        img = img[None]
    if img.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W) or (C, H, W), got {tuple(img.shape)}")
    return img.float()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB.

    Args:
        pred, target: ``(B, C, H, W)`` or ``(C, H, W)``.
    Returns:
        ``(B,)`` PSNR; ``inf`` where the images are identical.
    """
    pred, target = _as_batch(pred), _as_batch(target)
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(pred.shape)} vs {tuple(target.shape)}")
    mse = ((pred - target) ** 2).flatten(1).mean(1)
    return torch.where(mse > 0, -10.0 * torch.log10(mse.clamp_min(1e-30)), torch.full_like(mse, math.inf))


def masked_psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR over the pixels where ``mask`` is true (e.g. the person or the head).

    Args:
        pred, target: ``(B, C, H, W)`` or ``(C, H, W)``.
        mask: ``(B, H, W)`` or ``(H, W)`` bool (every image needs at least one pixel).
    Returns:
        ``(B,)`` PSNR over the masked pixels' mean squared error (all channels); ``inf`` where equal.
    """
    pred, target = _as_batch(pred), _as_batch(target)
    keep = mask.expand(pred.shape[0], *pred.shape[-2:])[:, None].to(pred.dtype)
    mse = ((pred - target) ** 2 * keep).flatten(1).sum(1) / (keep.flatten(1).sum(1) * pred.shape[1])
    return torch.where(mse > 0, -10.0 * torch.log10(mse.clamp_min(1e-30)), torch.full_like(mse, math.inf))


def ssim(pred: torch.Tensor, target: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Per-image mean SSIM (kornia, Gaussian window sigma 1.5).

    Args:
        pred, target: ``(B, C, H, W)`` or ``(C, H, W)``.
        window_size: odd number of Gaussian taps (shrunk for images smaller than the window).
    Returns:
        ``(B,)`` SSIM in [-1, 1]; 1 for identical images.
    """
    import kornia

    pred, target = _as_batch(pred), _as_batch(target)
    side = min(pred.shape[-2:])
    ws = min(window_size, side - 1 if side % 2 == 0 else side)
    ws = max(3, ws if ws % 2 == 1 else ws - 1)
    return kornia.metrics.ssim(pred, target, ws).flatten(1).mean(1)


def box_crop(img: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Crop ``(..., H, W)`` to ``box = (x0, y0, x1, y1)`` (clipped to the image, at least 1 px)."""
    h, w = img.shape[-2:]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
    x1, y1 = min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
    return img[..., y0:y1, x0:x1]


def box_psnr(pred: torch.Tensor, target: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """PSNR inside one box per image: ``(B, C, H, W)`` x2, ``boxes (B, 4)`` x0, y0, x1, y1 -> ``(B,)``."""
    return torch.stack([psnr(box_crop(p, b), box_crop(t, b))[0]
                        for p, t, b in zip(pred, target, boxes.tolist(), strict=True)])
