"""Torch device selection and a description of the machine, shared by every stage."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from talk3d.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; other names are checked.

    Raises:
        UserError: the name is not a torch device, or CUDA was asked for but is absent.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device '{name}' is not a torch device: use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device '{name}' is not supported: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} requested but CUDA is not available here: use --device auto or cpu")
    return dev


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where available)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str | torch.device | None = None) -> dict[str, Any]:
    """CPU model, cores, Python/torch versions, torch threads and the CUDA device (if any)."""
    dev = torch.device(device) if device is not None else None
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(dev) if dev is not None else None,
        "cuda_device": None,
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(dev if dev is not None and dev.type == "cuda" else 0)
    return info
