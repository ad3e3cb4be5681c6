"""How the avatar's convolution networks (deltaplane U-Net, super-resolution) run at inference.

Training always runs them in float32 (CUDA fits add their own mixed precision). Without
gradients, they take channels-last inputs, where oneDNN's convolutions are faster on CPU, and,
where the CPU has bfloat16 arithmetic in hardware (AVX512-BF16 or AMX), they run in bfloat16
under autocast. Measured on 2 AMD EPYC cores (docs/render.md "Inference precision"): U-Net + SR
30.7 -> 12.0 ms per frame; held-out frames differ from float32 ones by about 0.01 dB PSNR.
The volume rendering (triplane sampling, decoder, compositing) stays float32 everywhere.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

PRECISIONS = ("auto", "float32", "bfloat16")
"""``auto``: bfloat16 convolutions on CPUs that compute bfloat16 natively, float32 elsewhere
(CUDA included, until a GPU run has measured it); the others force a type."""


@functools.cache
def native_bf16_cpu() -> bool:
    """Whether this CPU has bfloat16 arithmetic in hardware (AVX512-BF16 or AMX). oneDNN's own
    ``_is_mkldnn_bf16_supported`` also answers yes on AVX-512 CPUs that only emulate it (slower
    than float32 there). Asked once per process: :func:`conv_dtype` runs for every batch."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()))
    except (AttributeError, RuntimeError):
        return False


def conv_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The inference type of the convolution networks for a ``precision`` setting on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cpu" and native_bf16_cpu():
        return torch.bfloat16
    return torch.float32


@contextlib.contextmanager
def inference_convs(dtype: torch.dtype, device: torch.device) -> Iterator[None]:
    """Autocast to ``dtype`` (a no-op for float32) for the convolution networks' forward."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x (N, C, H, W)`` in channels-last memory (same values and shape); gradients disabled only.

    With gradients enabled the tensor is returned as it is: training keeps the layout (and so the
    exact arithmetic) it has always had.
    """
    if torch.is_grad_enabled() or x.dim() != 4:
        return x
    return x.contiguous(memory_format=torch.channels_last)
