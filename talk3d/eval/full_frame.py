"""The full-frame figures of ``talk3d eval``: held-out renders pasted into the source frames.

The self-driven renders of the held-out frames are pasted exactly as ``talk3d render
--full-frame`` pastes them (:class:`talk3d.render.full_frame.Compositor`) into their own source
frames, decoded at the source's resolution. Reported: PSNR over the full frame and over the
crop's area at source resolution against those source frames, and the seam
(:func:`talk3d.render.full_frame.seam_step`) of the output next to the source's own, measured
where the person crosses the crop's sides.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from talk3d.dataset import TalkingHeadDataset
from talk3d.errors import UserError
from talk3d.eval import metrics
from talk3d.eval.suites import SuiteResult, _to_tensor


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two ``(H, W, 3)`` uint8 images."""
    return float(metrics.psnr(_to_tensor(a[None]), _to_tensor(b[None]))[0])


def full_frame(dataset: TalkingHeadDataset, arrays: dict[str, np.ndarray],
               source: str | os.PathLike | None = None, colour_match: bool = True) -> SuiteResult:
    """Paste the self-driven suite's renders into their source frames and measure.

    Args:
        dataset: the run's dataset (manifest, person masks of the plates).
        arrays: the self-driven suite's ``indices (F,)``, ``rgb (F, S, S, 3)`` uint8 and
            ``person (F, S, S)``.
        source: a moved copy of the source video (default: the path prep recorded).
        colour_match: the compositor's colour match (off only for its ablation in
            ``benchmarks/full_frame.py``).
    Returns:
        figures (``available`` False with the ``reason`` when the source cannot be used) and
        arrays ``example`` (output and source frame of the middle held-out frame).
    """
    from talk3d.render.full_frame import Compositor, Placement, seam_step
    from talk3d.render.plate import PlateFrames, find_source

    m = dataset.manifest
    idx = np.asarray(arrays["indices"])
    full, region, seam_out, seam_src = [], [], [], []
    example = {}
    try:
        info = find_source(m, source)
        place = Placement.from_manifest(m, (info.width, info.height))
        comp = Compositor(place, colour_match=colour_match)
        x_lo, y_lo, x_hi, y_hi = place.roi
        with contextlib.closing(iter(PlateFrames(info, m.fps, idx))) as plates:
            for k, plate in enumerate(plates):
                plate_person = (dataset.mask(int(idx[k])) > 0).astype(np.float32)
                out = comp.compose(plate, arrays["rgb"][k], arrays["person"][k], plate_person)
                full.append(_psnr(out, plate))
                region.append(_psnr(out[y_lo:y_hi, x_lo:x_hi], plate[y_lo:y_hi, x_lo:x_hi]))
                crossing = comp.person_union(arrays["person"][k], plate_person) > 0.5
                seam_out.append(seam_step(out, place, crossing))
                seam_src.append(seam_step(plate, place, crossing))
                if k == len(idx) // 2:
                    example = {"output": out, "source": plate, "frame": int(idx[k])}
    except UserError as exc:  # the source is missing, changed or unreadable: the rest of eval stands
        return SuiteResult({"available": False, "reason": str(exc)})
    figures: dict[str, Any] = {
        "available": True, "source": str(info.path), "frame_size": [info.width, info.height],
        "crop_box": [round(v, 2) for v in place.box], "frames": int(len(idx)),
        "psnr_full_frame": float(np.mean(full)), "psnr_crop_area": float(np.mean(region)),
        "seam_step": _nanmean(seam_out), "seam_step_source": _nanmean(seam_src),
        "feather_px": round(place.feather_width(), 1),
    }
    return SuiteResult(figures, example)


def _nanmean(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def write_picture(example: dict[str, Any], box: list[float], path: str | os.PathLike) -> Path:
    """``source | output`` of one held-out frame at full size, the crop's outline drawn on the
    source, and below them 3x zooms of both around the middle of one crop side inside the frame."""
    import cv2
    from PIL import Image

    src, out = example["source"].copy(), example["output"]
    h, w = src.shape[:2]
    x0, y0, side = box
    cv2.rectangle(src, (int(round(x0)), int(round(y0))), (int(round(x0 + side)) - 1, int(round(y0 + side)) - 1),
                  (255, 220, 0), 1)
    rows = [np.concatenate([src, out], 1)]
    zoom = _zoom_window(box, w, h)
    if zoom is not None:
        ys, xs = zoom
        strip = np.concatenate([cv2.resize(img[ys, xs], None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
                                for img in (example["source"], out)], 1)[:, :2 * w]
        rows.append(np.pad(strip, ((0, 0), (0, 2 * w - strip.shape[1]), (0, 0))))
    path = Path(path)
    Image.fromarray(np.concatenate(rows, 0)).save(path)
    return path


def _zoom_window(box: list[float], w: int, h: int) -> tuple[slice, slice] | None:
    """A square around the middle of the crop's bottom side (where the torso crosses it), else
    of its top, left or right side: the first that lies inside the frame; shifted into the frame."""
    x0, y0, side = box
    half = max(8, int(side * 0.12))
    cx, cy = int(x0 + side / 2), int(y0 + side / 2)
    bottom, top, left, right = int(y0 + side), int(y0), int(x0), int(x0 + side)
    for x, y, inside in ((cx, bottom, bottom < h - 1), (cx, top, top > 0), (left, cy, left > 0), (right, cy, right < w - 1)):
        if inside:
            xs = int(np.clip(x - half, 0, max(0, w - 2 * half)))
            ys = int(np.clip(y - half, 0, max(0, h - 2 * half)))
            return slice(ys, ys + 2 * half), slice(xs, xs + 2 * half)
    return None
