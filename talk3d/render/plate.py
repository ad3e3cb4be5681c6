"""The plate of a full-frame render: the source video's own frames, streamed in any order, and
the rendered crops pasted into them (:class:`FullFrameOutput`).

The source is decoded exactly as prep decoded it (same frame rate resampling, so frame ``i``
of the plate is dataset frame ``i``) but at the source's own resolution. Frames come from one
forward ffmpeg stream; a frame that the sequence needs again later (the tracked pose plays the
clip forward then backward) is kept in a temporary folder as a JPEG (quality 97, far finer
than the output's H.264) until its last use, so memory stays flat however long the source or
the output is; the folder holds at most one copy of each source frame.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from talk3d.console import warn
from talk3d.errors import UserError
from talk3d.video import FrameReader, VideoInfo, decode_size, probe_video

CACHE_QUALITY = 97
"""JPEG quality of the frames kept for reuse."""
CACHE_BYTES = 0.25
"""Generous bytes per raw byte of a cached frame (JPEG at quality 97 of video frames: ~0.1)."""
NO_DOWNSCALE = 1 << 16
"""``probe_video`` max side that keeps the source's own resolution."""


def find_source(manifest, source: str | os.PathLike | None = None) -> VideoInfo:
    """The source video a dataset was prepared from, checked against its SHA-256.

    Args:
        manifest: the dataset's :class:`talk3d.dataset.Manifest`.
        source: a moved copy of the source (``--source``); default the path prep recorded.
    Raises:
        UserError: the file is missing or is not the one prep read (hash mismatch).
    """
    from talk3d.io import sha256_file

    path = Path(source) if source is not None else Path(manifest.source)
    hint = "give the original video with --source FILE"
    if not manifest.source or not manifest.source_sha256:
        raise UserError("this avatar's dataset does not record its source video; re-run 'talk3d prep' to use "
                        "--full-frame")
    if not path.is_file():
        where = "given with --source" if source is not None else "recorded by prep"
        raise UserError(f"the source video '{path}' ({where}) is not found; {hint}")
    if sha256_file(path) != manifest.source_sha256:
        raise UserError(f"'{path}' is not the video this avatar was prepared from (its SHA-256 differs: the file "
                        f"was changed or replaced); {hint}")
    info = probe_video(path, max_side=NO_DOWNSCALE)
    decoded = decode_size(*info.rotated_size, int(manifest.prep_settings.get("max_side", 1280)))  # prep's size
    if list(decoded) != [int(v) for v in manifest.source_size]:
        raise UserError(f"'{path}' decodes to {decoded[0]}x{decoded[1]}, the dataset to "
                        f"{manifest.source_size[0]}x{manifest.source_size[1]}; re-run 'talk3d prep' with --force")
    return info


class PlateFrames:
    """Source frames in the order a render needs them.

    Args:
        info: the source (:func:`find_source`).
        fps: the dataset's frame rate (the source is resampled to it, as in prep).
        order: ``(F,)`` source frame per output frame.
        cache_dir: where the temporary folder of reused frames goes (default the system's
            temporary folder, which may be in memory: ``talk3d render`` uses the output's folder).
        threads: decoder threads (``None``: ffmpeg's choice; a CPU render passes 1).
    """

    def __init__(self, info: VideoInfo, fps: float, order: np.ndarray, cache_dir: str | os.PathLike | None = None,
                 threads: int | None = None):
        self.info = info
        self.threads = threads
        self.cache_dir = cache_dir
        self.fps = float(fps)
        self.order = np.asarray(order, dtype=np.int64)
        if self.order.size and self.order.min() < 0:
            raise ValueError("plate frame numbers must be non-negative")
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for k, i in enumerate(self.order.tolist()):
            first.setdefault(i, k)
            last[i] = k
        self._last_use = last
        self.reused = sum(last[i] > first[i] for i in first)
        """Source frames the order needs more than once (at most this many are kept on disk)."""
        self.decoder_starts = 0
        """How many times the source was decoded from its start (1 for forward sequences)."""
        self.cached_peak = 0
        """The most frames held in the temporary folder at once."""

    def __iter__(self) -> Iterator[np.ndarray]:
        """``(H, W, 3)`` uint8 frames, one per entry of ``order``."""
        from talk3d.io import need_free_space

        folder = str(self.cache_dir) if self.cache_dir is not None else tempfile.gettempdir()
        need_free_space(folder, self.reused * self.info.width * self.info.height * 3 * CACHE_BYTES,
                        "the full-frame plate's reused frames (a temporary folder there)")
        with tempfile.TemporaryDirectory(prefix=".talk3d_plate_", dir=folder) as tmp:
            cache: dict[int, Path] = {}
            stream, position = None, -1
            last: tuple[int, np.ndarray] | None = None  # a still plate is repeated from memory
            try:
                for k, i in enumerate(self.order.tolist()):
                    if last is not None and last[0] == i:
                        frame = last[1]
                    elif i in cache:
                        frame = _read_image(cache[i])
                    else:
                        if stream is None or i <= position:
                            stream, position = self._restart(stream, i), i - 1
                        frame, position = self._advance(stream, position, i)
                        if self._last_use[i] > k:
                            cache[i] = Path(tmp) / f"{i:08d}.jpg"
                            _write_image(cache[i], frame)
                            self.cached_peak = max(self.cached_peak, len(cache))
                    if self._last_use[i] == k and i in cache:
                        cache.pop(i).unlink()
                    last = (i, frame)
                    yield frame
            finally:
                if stream is not None:
                    stream.close()

    def _restart(self, stream, start: int) -> Iterator[np.ndarray]:
        """A new decode whose first frame is ``start``."""
        if stream is not None:
            stream.close()
        self.decoder_starts += 1
        return iter(FrameReader(self.info, self.fps, start=start, threads=self.threads))

    def _advance(self, stream, position: int, target: int) -> tuple[np.ndarray, int]:
        """Read up to source frame ``target``; returns it and the new position."""
        frame = None
        while position < target:
            frame = next(stream, None)
            if frame is None:
                raise UserError(f"the source video '{self.info.path}' ended before frame {target}; re-run "
                                f"'talk3d prep' on it with --force")
            position += 1
        return frame, position


def _write_image(path: Path, frame: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, CACHE_QUALITY]):
        raise UserError(f"could not write a plate frame to the temporary folder '{path.parent}' (disk full?)")


def _read_image(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"a cached plate frame '{path}' could not be read back")
    return np.ascontiguousarray(img[..., ::-1])


class FullFrameOutput:
    """Rendered crops pasted into the source's frames (:mod:`talk3d.render.full_frame`), in the
    order ``plate_order`` gives (``talk3d render --full-frame``; the plate's person masks come from
    the run's dataset when it is the one the run was fitted on)."""

    def __init__(self, stack: contextlib.ExitStack, run, plate_order: np.ndarray, info, cache_dir: Path,
                 codec_threads: int | None):
        import cv2

        from talk3d.render.full_frame import Compositor, Placement

        cv2.setNumThreads(1)  # the paste runs on the writer thread beside torch's threads
        m = run.manifest
        self.placement = Placement.from_manifest(m, (info.width, info.height))
        self.compositor = Compositor(self.placement)
        self.order = iter(np.asarray(plate_order).tolist())
        plates = PlateFrames(info, m.fps, plate_order, cache_dir=cache_dir, threads=codec_threads)
        self.plates = stack.enter_context(contextlib.closing(iter(plates)))
        self.masks = person_masks(run)

    def frames(self, rgb: np.ndarray, person: np.ndarray) -> list[np.ndarray]:
        """Full frames ``(H, W, 3)`` uint8 of a batch: ``rgb (B, S, S, 3)`` uint8, ``person (B, S, S)``."""
        out = []
        for img, alpha in zip(rgb, person, strict=True):
            index = next(self.order)
            plate_person = self.masks(index) if self.masks is not None else None
            out.append(self.compositor.compose(next(self.plates), img, alpha, plate_person))
        return out


def person_masks(run) -> Callable[[int], np.ndarray] | None:
    """``index -> (M, M)`` float person mask of a source frame from the run's dataset, or ``None``
    (with a warning) when that dataset is not at hand or is not the one the run was fitted on."""
    from talk3d.dataset import TalkingHeadDataset
    from talk3d.errors import DatasetError

    try:
        dataset = TalkingHeadDataset(run.dataset_dir)
        same = all(getattr(dataset.manifest, k) == getattr(run.manifest, k)
                   for k in ("source_sha256", "crop_box", "num_frames", "fps"))
    except (DatasetError, OSError):
        same = False
    if not same:
        warn(f"the run's dataset '{run.dataset_dir}' is not at hand (or was prepared again): the full-frame "
             f"paste covers only the rendered person (with --yaw/--pitch the recorded head may show beside it)")
        return None
    return lambda index: (dataset.mask(index) > 0).astype(np.float32)
