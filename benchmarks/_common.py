"""Helpers shared by the benchmark runner: machine description, medians of nested figures."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """CPU model, cores, Python/torch versions and the CUDA device (if any)."""
    from talk3d.device import machine_info

    return machine_info()


def flatten(obj: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts/lists as ``{"a.b.0.c": value}`` (booleans skipped)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix[:-1]] = float(obj)
    return out


def median_figures(runs: list[Any]) -> dict[str, dict[str, Any]]:
    """Per numeric leaf over repeated runs: ``{"median": m, "values": [...]}``."""
    flat = [flatten(r) for r in runs]
    keys: list[str] = []
    for f in flat:
        keys += [k for k in f if k not in keys]
    out = {}
    for k in keys:
        vals = [f[k] for f in flat if k in f]
        out[k] = {"median": statistics.median(vals), "values": vals}
    return out


def package_shim(tree: Path, folder: Path) -> Path:
    """``folder`` with ``talk3d_cli`` / ``talk3d_prep`` linked to ``tree``'s ``cli/`` / ``data_prep/``
    (how pyproject.toml installs them), to put first on ``PYTHONPATH``: that tree's CLI and prep
    run, not an installed copy (an editable install's finder comes after ``PYTHONPATH``). Left
    empty for trees older than the rename, which import ``cli`` and ``data_prep`` from their root."""
    folder.mkdir(parents=True, exist_ok=True)
    if "talk3d_prep" in (tree / "pyproject.toml").read_text():
        for name, source in (("talk3d_cli", "cli"), ("talk3d_prep", "data_prep")):
            if not (folder / name).is_symlink():
                (folder / name).symlink_to(tree / source, target_is_directory=True)
    return folder


def held_out_scores(images: list, batches: list[dict]) -> dict[str, float]:
    """Mean PSNR and mouth-box PSNR of rendered ``images`` (one ``(B, 3, H, W)`` tensor per batch)
    against the batches' video frames (``talk3d.fit.data.TrainingData.batch``)."""
    import torch

    from talk3d.image import box_psnr, psnr

    truth = [b["image"] for b in batches]
    return {"psnr": float(torch.cat([psnr(i, t) for i, t in zip(images, truth, strict=True)]).mean()),
            "mouth_psnr": float(torch.cat([box_psnr(i, t, b["mouth_box"])
                                           for i, t, b in zip(images, truth, batches, strict=True)]).mean())}
