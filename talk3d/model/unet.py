"""Deltaplane U-Net: identity triplane + conditioning tokens -> per-frame deltaplane.

Split convolutions: the three planes are processed as a batch of three images with shared
weights (plus a learned per-plane embedding), so pixels of unrelated planes never mix.
At the coarse levels the plane features cross-attend to the conditioning tokens. The last
conv is zero-initialised, so the deltaplane is exactly 0 before training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from talk3d.model.config import ModelConfig
from talk3d.model.precision import channels_last


class ResBlock(nn.Module):
    """``x + conv(silu(conv(silu(x))))`` at constant width ``(N, c, h, w)``."""

    def __init__(self, c: int):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.silu(self.c1(F.silu(x))))


class CrossAttention(nn.Module):
    """Plane pixels ``(B*3, c, h, w)`` attend to tokens ``(B, K, d)`` (residual)."""

    def __init__(self, c: int, res: int, token_dim: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.pos = nn.Parameter(torch.randn(3, res * res, c) * 0.02)
        self.attn = nn.MultiheadAttention(c, heads, kdim=token_dim, vdim=token_dim, batch_first=True)
        self.proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        b = n // 3
        q = x.flatten(2).transpose(1, 2)  # (B*3, hw, c)
        q = self.norm(q) + self.pos.repeat(b, 1, 1)
        kv = tokens.repeat_interleave(3, dim=0)  # (B*3, K, d), plane-major within each batch entry
        out, _ = self.attn(q, kv, kv, need_weights=False)
        return x + self.proj(out).transpose(1, 2).reshape(n, c, h, w)


class DeltaplaneUNet(nn.Module):
    """``(3, C, R, R)`` identity planes + tokens ``(B, K, d)`` -> deltaplane ``(B, 3, C, R, R)``.

    Level ``i`` runs at ``R / 2**(i+1)`` with ``unet_widths[i]`` channels; the output is
    predicted at ``R / 2`` and bilinearly upsampled to ``R`` (smooth deltaplanes, cheap).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, widths = cfg.triplane_channels, cfg.unet_widths
        self.plane_emb = nn.Parameter(torch.zeros(3, c, 1, 1))
        self.downs = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        prev = c
        res = cfg.triplane_res
        self.res = []
        for w in widths:
            res //= 2
            self.res.append(res)
            self.downs.append(nn.Sequential(nn.Conv2d(prev, w, 3, stride=2, padding=1), ResBlock(w)))
            self.down_attn.append(CrossAttention(w, res, cfg.token_dim, cfg.attn_heads)
                                  if res <= cfg.unet_attn_res else nn.Identity())
            prev = w
        self.ups = nn.ModuleList()
        for i in range(len(widths) - 2, -1, -1):
            self.ups.append(nn.Sequential(nn.Conv2d(widths[i + 1] + widths[i], widths[i], 3, padding=1),
                                          nn.SiLU(), ResBlock(widths[i])))
        self.out = nn.Conv2d(widths[0], c, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.triplane_res = cfg.triplane_res
        self._first_cache: tuple[tuple, torch.Tensor] | None = None

    def _shared_first_level(self, planes: torch.Tensor) -> torch.Tensor:
        """First down level of shared planes ``(3, C, R, R)`` -> ``(3, w0, R/2, R/2)``.

        Without gradients (rendering) the result is kept until the planes, the level's weights
        (tensor versions, storage) or the autocast type change, so a render computes it once, not
        per frame. Writes through ``.data`` do not change versions: call with gradients enabled,
        or set ``_first_cache = None``, after such writes.
        """
        cacheable = not torch.is_grad_enabled()
        device = planes.device.type
        tensors = [planes, self.plane_emb, *self.downs[0].parameters()]
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        key = (autocast, *((t.data_ptr(), t._version, t.dtype) for t in tensors))
        if cacheable and self._first_cache is not None and self._first_cache[0] == key:
            return self._first_cache[1]
        x = self.downs[0](channels_last(planes + self.plane_emb))
        self._first_cache = (key, x) if cacheable else None
        return x

    def forward(self, planes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Predict deltaplanes.

        Args:
            planes: ``(3, C, R, R)`` identity planes (shared) or ``(B, 3, C, R, R)``.
            tokens: ``(B, K, token_dim)``.
        Returns:
            ``(B, 3, C, R, R)``.
        """
        return self.upsample(self.half_res(planes, tokens))

    def half_res(self, planes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The deltaplanes as predicted, at half the plane side: ``(B * 3, C, R/2, R/2)``, float32
        without gradients (plane-major within each batch entry). Shapes of the arguments as in :meth:`forward`."""
        b = tokens.shape[0]
        if planes.dim() == 4:  # shared identity planes: the first level is the same for every frame
            x = channels_last(self._shared_first_level(planes).repeat(b, 1, 1, 1))
            first = 1
        else:
            _, _, c, r, _ = planes.shape
            x = channels_last((planes + self.plane_emb).reshape(b * 3, c, r, r))
            first = 0
        skips = []
        for i, (down, attn) in enumerate(zip(self.downs, self.down_attn, strict=True)):
            if i >= first:
                x = down(x)
            if isinstance(attn, CrossAttention):
                x = attn(x, tokens)
            skips.append(x)
        for j, up in enumerate(self.ups):
            skip = skips[len(skips) - 2 - j]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = up(torch.cat([x, skip], 1))
        out = self.out(F.silu(x))
        return out if torch.is_grad_enabled() else out.float()  # (training keeps its autocast type)

    def upsample(self, half: torch.Tensor) -> torch.Tensor:
        """Half-side deltaplanes ``(B * 3, C, R/2, R/2)`` -> ``(B, 3, C, R, R)`` (bilinear; the
        memory layout of ``half`` is kept, so channels-last stays channels-last)."""
        n, c = half.shape[:2]
        r = self.triplane_res
        x = F.interpolate(half, size=(r, r), mode="bilinear", align_corners=False)
        return x.reshape(n // 3, 3, c, r, r)
