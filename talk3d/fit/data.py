"""Training batches from a prepared dataset (contract "Training batch" in docs/architecture.md).

Frames stream from disk through :class:`talk3d.dataset.TalkingHeadDataset`; resized images
and masks are kept in a bounded LRU cache of uint8 arrays, so peak memory does not grow
with the length of the video. Training batches are drawn from the train split only
(``Manifest.train_frames``), validation batches from the held-out split only.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from talk3d.dataset import TalkingHeadDataset
from talk3d.errors import UserError
from talk3d.face.landmarks import MOUTH
from talk3d.fit.lipsync import lip_codes
from talk3d.image import resize
from talk3d.model.config import ModelConfig
from talk3d.model.drive import DrivingClip

# mediapipe FaceMesh lip contour indices (outer + inner; FACEMESH_LIPS).
LIP_INDICES = tuple(int(k) for k in MOUTH)
"""Lip contour landmarks (the mouth box is built around them)."""


def mouth_boxes(landmarks: np.ndarray, size: int, margin: float = 0.3, min_side: int = 8) -> np.ndarray:
    """Mouth boxes from lip landmarks.

    Args:
        landmarks: ``(B, 478, 3)`` x, y in pixels at resolution ``size``.
        size: image side in pixels.
        margin: extra border on each side, as a fraction of the lip box width.
        min_side: minimum box side in pixels (clipped to the image).
    Returns:
        ``(B, 4)`` int64 boxes ``x0, y0, x1, y1`` (exclusive end), inside ``[0, size]``,
        each at least one pixel wide and high.
    """
    lips = landmarks[:, list(LIP_INDICES), :2]
    lo, hi = lips.min(1), lips.max(1)
    width = hi[:, 0] - lo[:, 0]
    pad = margin * width[:, None]
    lo, hi = lo - pad, hi + pad
    centre, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, min_side / 2)
    lo, hi = np.floor(centre - half), np.ceil(centre + half)
    lo = np.clip(lo, 0, size - 1)
    hi = np.clip(hi, lo + 1, size)
    return np.concatenate([lo, hi], 1).astype(np.int64)


def resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(size, size, 3)`` uint8 through :func:`talk3d.image.resize`."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    img = torch.tensor(image).permute(2, 0, 1)[None].float()  # (a copy: frames may be read-only)
    out = (resize(img, size)[0].permute(1, 2, 0) + 0.5).floor().clamp(0, 255)
    return out.to(torch.uint8).numpy()


def resize_labels(mask: np.ndarray, size: int) -> np.ndarray:
    """``(H, W)`` uint8 labels -> ``(size, size)`` uint8, nearest neighbour."""
    if mask.shape[0] == size and mask.shape[1] == size:
        return mask
    return np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))


class TrainingData:
    """Batches at the model's output resolution for training and validation.

    Args:
        dataset_dir: prepared dataset folder (validated on open).
        model_config: the :class:`talk3d.model.config.ModelConfig` (output resolution ``H = W``
            and audio window sizes come from it).
        cache_frames: most resized frames kept in memory (bounded; 0 disables the cache).
        mouth_margin: mouth box border as a fraction of the lip width.
    """

    def __init__(self, dataset_dir: str | os.PathLike, model_config: ModelConfig, cache_frames: int = 256,
                 mouth_margin: float = 0.3):
        self.dataset = TalkingHeadDataset(dataset_dir, cache_frames=2)
        self.manifest = self.dataset.manifest
        self.model_config = model_config
        self.out_res = int(model_config.out_res)
        self.scale = self.out_res / self.manifest.size
        self.cache_frames = int(cache_frames)
        self.mouth_margin = mouth_margin
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.poses = np.asarray(self.dataset.poses, dtype=np.float32)
        self.blink = np.asarray(self.dataset.blink, dtype=np.float32)
        self.torso_offsets = self.dataset.torso_offsets
        self.intrinsics = self.dataset.intrinsics
        # the clip's (T, D) audio features, normalised once (float32 in memory: 32 KB per second)
        self.clip = DrivingClip.from_arrays(model_config, np.array(self.dataset.audio_feats),
                                            self.manifest.audio_feature_rate, self.manifest.fps, self.blink,
                                            self.poses, self.torso_offsets)
        # (N, K) lip-motion codes from the tracked lips (models with a lip-motion code only).
        self.mouth_codes: np.ndarray | None = None
        if model_config.mouth_code > 0:
            self.mouth_codes = lip_codes(self.dataset.landmarks, self.dataset.canonical_landmarks,
                                         np.asarray(self.train_indices), model_config.mouth_code)

    @property
    def train_indices(self) -> np.ndarray:
        return self.manifest.train_frames

    @property
    def val_indices(self) -> np.ndarray:
        return self.manifest.val_frames

    def background(self) -> torch.Tensor:
        """``(3, H, W)`` float background plate in [0, 1] at the output resolution."""
        bg = resize_rgb(np.ascontiguousarray(self.dataset.background()[..., :3]), self.out_res)
        return torch.from_numpy(bg.copy()).permute(2, 0, 1).float() / 255.0

    def _frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(index)
        if hit is not None:
            self._cache.move_to_end(index)
            return hit
        rgb = resize_rgb(np.ascontiguousarray(self.dataset.frame(index)[..., :3]), self.out_res)
        mask = resize_labels(self.dataset.mask(index), self.out_res)
        item = (rgb, mask)
        if self.cache_frames > 0:
            self._cache[index] = item
            while len(self._cache) > self.cache_frames:
                self._cache.popitem(last=False)
        return item

    def batch(self, indices: Sequence[int], device: torch.device | str = "cpu") -> dict:
        """The training batch of the given frames (shapes in docs/architecture.md)."""
        idx = np.asarray(list(indices), dtype=np.int64)
        out = self._images(idx)
        b = len(idx)
        out.update({
            "cam2world": torch.from_numpy(self.poses[idx]),
            "intrinsics": torch.from_numpy(self.intrinsics).expand(b, 3, 3).clone(),
            "cond": self.clip.conditioning(idx),
            "frame_index": torch.from_numpy(idx),
        })
        if self.mouth_codes is not None:
            out["mouth_code"] = torch.from_numpy(self.mouth_codes[idx])
        return to_device(out, device)

    def _images(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """``image (B, 3, H, W)`` in [0, 1], ``mask (B, 1, H, W)`` labels, ``landmarks (B, 478, 3)``
        at the output resolution and ``mouth_box (B, 4)`` of frames ``idx (B,)``."""
        if idx.size == 0:
            raise ValueError("batch needs at least one frame index")
        rgb, mask = zip(*(self._frame(int(i)) for i in idx), strict=True)
        landmarks = np.asarray(self.dataset.landmarks[idx], dtype=np.float32) * self.scale
        return {"image": torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float() / 255.0,
                "mask": torch.from_numpy(np.stack(mask)).long()[:, None],
                "landmarks": torch.from_numpy(landmarks),
                "mouth_box": torch.from_numpy(mouth_boxes(landmarks, self.out_res, self.mouth_margin))}

    def conditioning(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """The model's conditioning of dataset frames ``indices (B,)`` (self-driven), CPU."""
        return self.clip.conditioning(indices)

    def targets(self, indices: Sequence[int] | np.ndarray, device: torch.device | str = "cpu") -> dict:
        """What a render of frames ``indices (B,)`` is measured against: ``image (B, 3, H, W)``
        in [0, 1] and ``mouth_box (B, 4)`` (as in :meth:`batch`)."""
        images = self._images(np.asarray(list(indices), dtype=np.int64))
        return to_device({"image": images["image"], "mouth_box": images["mouth_box"]}, device)

    def set_model_config(self, model_config: ModelConfig) -> None:
        """Use ``model_config`` from now on (its window sizes shape the conditioning)."""
        self.model_config = self.clip.cfg = model_config

    def train_index_batches(self, batch_size: int, seed: int, start_step: int = 0) -> Iterator[dict]:
        """Endless arrays of training frame indices (reshuffled every epoch, deterministic in ``seed``).

        ``start_step`` skips the batches already consumed, so a resumed fit sees the same
        sequence of frames as an uninterrupted one.
        """
        train = np.asarray(self.train_indices)
        if train.size == 0:
            raise UserError("the dataset has no training frames; re-run 'talk3d prep' on a longer video")
        b = min(batch_size, train.size)
        per_epoch = max(1, train.size // b)
        epoch, pos = divmod(start_step, per_epoch)
        while True:
            order = np.random.default_rng([seed, epoch]).permutation(train)
            for k in range(pos, per_epoch):
                yield order[k * b:(k + 1) * b]
            epoch, pos = epoch + 1, 0

    def val_subset(self, count: int) -> list[int]:
        """Up to ``count`` held-out frames spread evenly over the validation split."""
        val = np.asarray(self.val_indices)
        if val.size <= count:
            return val.tolist()
        return val[np.linspace(0, val.size - 1, count).round().astype(int)].tolist()


def to_device(obj, device: torch.device | str):
    """Move a (nested dict of) tensors to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj
