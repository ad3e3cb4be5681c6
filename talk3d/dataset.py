"""The prepared-dataset format: one module owns reading, writing and validating it.

A dataset is a folder::

    manifest.json      Manifest below (format version, source, fps, sizes, intrinsics, split...)
    frames/000000.jpg  cropped square RGB frames at ``size`` (JPEG quality 95)
    masks/000000.png   uint8 labels: 0 background, 1 torso/neck/clothes, 2 head (face + hair)
    background.png     static background plate at ``size`` (inpainted where never seen)
    landmarks.npy      (N, 478, 3) float32: x, y in pixels at ``size``, z in pixels (mediapipe
                       relative depth scaled like x; smaller = closer to the camera)
    landmark_valid.npy (N,) bool: the face was detected in that frame (else interpolated)
    poses.npy          (N, 4, 4) float32 camera-to-world in canonical head space
                       (conventions in :mod:`talk3d.camera`)
    canonical_landmarks.npy (478, 3) float32 the video's canonical shape in world units
    audio.wav          16 kHz mono PCM16
    audio_feats.npy    (T, 80) float16 log-mel at ``audio_feature_rate`` Hz (100 Hz)
    phonemes.npy       optional (T, P) float16 one-hot phone rows at the same rate (talk3d.phonemes)
    blink.npy          (N,) float32 eye closure in [0, 1]
    torso_offsets.npy  optional (N, 2) float32 torso shift in image widths (x right, y down)
                       relative to its median position (datasets before it: zeros)
    preview.png        contact sheet; poses.png yaw/pitch/roll plot
    .talk3d.json       marker: this folder is a talk3d dataset, and the entries prep wrote
                       (what ``prep --force`` replaces; see docs/safety.md)

Held out (never trained on): frames ``[train_end, N)`` (``--holdout tail``, the default) and the
``val_runs`` (``--holdout turned``: the most turned head poses, with ``train_end = N``); the
``margin_runs`` around them are neither trained on nor evaluated; every other frame trains.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talk3d.checks import check_fields
from talk3d.errors import DatasetError, UserError
from talk3d.io import read_json_dict, read_json_object, read_npy, write_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
NUM_LANDMARKS = 478
MASK_BACKGROUND, MASK_TORSO, MASK_HEAD = 0, 1, 2

TORSO_OFFSETS = "torso_offsets.npy"
# Files every complete dataset has (phonemes.npy and torso_offsets.npy are optional).
REQUIRED_FILES = (
    "background.png", "landmarks.npy", "landmark_valid.npy", "poses.npy",
    "canonical_landmarks.npy", "audio.wav", "audio_feats.npy", "blink.npy",
)
# Every entry prep writes into a dataset folder (what `prep --force` replaces; nothing else).
DATASET_ENTRIES = (
    "frames", "masks", *REQUIRED_FILES, "phonemes.npy", TORSO_OFFSETS, "preview.png", "poses.png", "prep.log",
    MANIFEST,
)
MANIFEST_BOUNDS = {
    "num_frames": (1, 10**8), "fps": (1, 240), "size": (8, 8192), "train_end": (0, 10**8),
    "source_size": (0, 10**6), "crop_box": (-1e6, 1e6), "audio_sample_rate": (1000, 384000),
    "audio_feature_rate": (1, 10000), "audio_feature_dim": (1, 4096), "scene_scale": (0, 1e9),
    "camera_distance": (0, 1e6), "format_version": (0, 10**6),
}
FIX_DATASET = "re-run 'talk3d prep' on the source video (it resumes) or with --force"


@dataclass
class Manifest:
    """Metadata of a prepared dataset (``manifest.json``)."""

    num_frames: int
    """Number of frames ``N`` after frame-rate normalisation."""
    fps: float
    """Frame rate of the dataset (frames are resampled to it)."""
    size: int
    """Side of the square working resolution in pixels."""
    intrinsics: list[list[float]]
    """Normalised 3x3 intrinsics shared by all frames (see :mod:`talk3d.camera`)."""
    train_end: int
    """Frames ``[train_end, num_frames)`` are held out (``num_frames``: only the ``val_runs`` are)."""
    source: str = ""
    """Path of the source video as given to prep."""
    source_sha256: str = ""
    """SHA-256 of the source video file."""
    source_size: list[int] = field(default_factory=lambda: [0, 0])
    """Width, height of the decoded source (after rotation metadata and downscaling)."""
    crop_box: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    """Square crop ``[x0, y0, side]`` in source pixels, fixed for the whole video."""
    crop_exact: bool = False
    """The frames are cut exactly at ``crop_box``. False in datasets prepared before it: without
    padding, ffmpeg cut 4:2:0 video at ``x0``/``y0`` rounded down to even (:meth:`crop_origin`)."""
    audio_sample_rate: int = 16000
    """Sample rate of ``audio.wav``."""
    audio_feature_rate: float = 100.0
    """Rows per second of ``audio_feats.npy`` (and ``phonemes.npy``)."""
    audio_feature_dim: int = 80
    """Columns of ``audio_feats.npy``."""
    has_phonemes: bool = False
    """Whether ``phonemes.npy`` exists."""
    scene_scale: float = 1.0
    """Pixels (at ``size``) per canonical unit at the mean camera distance (for reference)."""
    camera_distance: float = 0.0
    """Mean camera distance from the head centre, canonical units."""
    frames_format: str = "jpg"
    """Extension of the files in ``frames/``."""
    prep_settings: dict[str, Any] = field(default_factory=dict)
    """The settings prep ran with (for reproducibility)."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Figures measured by prep (tracking rate, reprojection error, jitter...)."""
    format_version: int = FORMAT_VERSION
    """Version of this format; readers refuse other versions."""
    holdout: str = "tail"
    """How the held-out frames were chosen: ``tail`` (the clip's end) or ``turned`` (the head
    poses furthest from the median yaw, :mod:`talk3d_prep.split`)."""
    val_runs: list[list[int]] = field(default_factory=list)
    """Held-out ``[start, stop)`` frame runs besides ``[train_end, num_frames)``."""
    margin_runs: list[list[int]] = field(default_factory=list)
    """``[start, stop)`` frame runs neither trained on nor evaluated (around the ``val_runs``)."""
    train_angles: dict[str, list[float]] = field(default_factory=dict)
    """``{"yaw": [lo, hi], "pitch": [lo, hi]}``: the training frames' camera angles in degrees
    (:func:`talk3d.camera.camera_angles`); empty in datasets written before it."""

    def crop_origin(self) -> tuple[float, float]:
        """Where the frames' crop really starts in decoded source pixels (see ``crop_exact``)."""
        x0, y0, side = self.crop_box
        w, h = self.source_size
        padded = x0 < 0 or y0 < 0 or x0 + side > w or y0 + side > h  # padding always cut exactly
        if self.crop_exact or padded:
            return float(x0), float(y0)
        return float(2 * (int(x0) // 2)), float(2 * (int(y0) // 2))

    @property
    def val_frames(self) -> np.ndarray:
        """``(V,)`` int64 held-out frame numbers, ascending."""
        return split_frames(self.num_frames, self.train_end, self.val_runs, self.margin_runs)[1]

    @property
    def train_frames(self) -> np.ndarray:
        """``(T,)`` int64 training frame numbers, ascending."""
        return split_frames(self.num_frames, self.train_end, self.val_runs, self.margin_runs)[0]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Build from JSON; raise ``ValueError``/``TypeError`` for missing, mistyped or out-of-range values."""
        names = {f.name for f in dataclasses.fields(cls)}
        manifest = cls(**{k: v for k, v in data.items() if k in names})
        manifest.check()
        return manifest

    def check(self) -> None:
        """Raise ``ValueError`` unless every value has its type, is finite and in range."""
        check_fields(self, MANIFEST_BOUNDS)
        try:
            k = np.asarray(self.intrinsics, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("intrinsics must be a 3x3 list of numbers") from None
        if k.shape != (3, 3) or not np.isfinite(k).all() or not (k[0, 0] > 0 and k[1, 1] > 0):
            raise ValueError("intrinsics must be a 3x3 list of finite numbers with positive focal lengths")
        if self.frames_format not in ("jpg", "png"):
            raise ValueError(f"frames_format must be jpg or png, got {self.frames_format!r}")
        if not isinstance(self.stats, dict) or not isinstance(self.prep_settings, dict):
            raise ValueError("stats and prep_settings must be JSON objects")
        if self.holdout not in ("tail", "turned"):
            raise ValueError(f"holdout must be tail or turned, got {self.holdout!r}")
        for runs in (self.val_runs, self.margin_runs):
            if not isinstance(runs, list) or not all(
                    isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) for v in r)
                    and 0 <= r[0] < r[1] <= self.num_frames for r in runs):
                raise ValueError("val_runs and margin_runs must be lists of [start, stop) frame pairs within the video")


def split_frames(num_frames: int, train_end: int, val_runs: list[list[int]],
                 margin_runs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out frame numbers ``(T,)``, ``(V,)`` int64 of a split (see :class:`Manifest`)."""
    held = np.zeros(num_frames, bool)
    margin = np.zeros(num_frames, bool)
    for a, b in val_runs:
        held[a:b] = True
    for a, b in margin_runs:
        margin[a:b] = True
    held[train_end:] = True
    return np.flatnonzero(~(held | margin)), np.flatnonzero(held)


def frames_audio(samples: np.ndarray, rate: int, fps: float, frames: np.ndarray) -> np.ndarray:
    """The sound of ``frames`` (ascending frame numbers): each run of consecutive frames' samples,
    one run after the other, like the frames themselves. ``samples (S,)`` at ``rate`` Hz."""
    parts = [samples[int(round(a / fps * rate)):int(round(b / fps * rate))] for a, b in runs_of(frames)]
    return np.concatenate(parts) if parts else samples[:0]


def runs_of(frames: np.ndarray) -> list[list[int]]:
    """``[start, stop)`` runs of consecutive numbers in ascending ``frames``, or of True in a bool mask."""
    f = np.asarray(frames)
    if f.dtype == bool:
        f = np.flatnonzero(f)
    if f.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(f) != 1) + 1
    return [[int(p[0]), int(p[-1]) + 1] for p in np.split(f, breaks)]


def frame_name(index: int, ext: str = "jpg") -> str:
    """File name of frame ``index`` (``000123.jpg``)."""
    return f"{index:06d}.{ext}"


def write_manifest(root: str | os.PathLike, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically."""
    write_json(Path(root) / MANIFEST, manifest.to_dict())


def prepared_with(root: str | os.PathLike, settings: dict[str, Any] | None) -> bool:
    """True when ``root`` holds a finished dataset whose prep settings equal ``settings``
    (a dataset from other settings, e.g. an older talk3d's defaults, must be prepped again)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return False
    data = read_json_dict(path)  # None when unreadable: prep again
    return data is not None and data.get("prep_settings") == settings


def read_manifest(root: str | os.PathLike) -> Manifest:
    """Read and version-check ``manifest.json``; raise :class:`DatasetError` with a fix."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder '{root}' does not exist: run 'talk3d prep VIDEO -o {root}' first")
    path = root / MANIFEST
    if not path.is_file():
        raise DatasetError(f"'{root}' is not a prepared dataset (no {MANIFEST}): run 'talk3d prep VIDEO -o {root}'")
    try:
        data = read_json_object(path, "re-run 'talk3d prep' with --force")
    except UserError as exc:
        raise DatasetError(str(exc)) from None
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetError(
            f"dataset '{root}' has format version {version}, this talk3d reads version {FORMAT_VERSION}: "
            f"re-run 'talk3d prep' with --force to rebuild it"
        )
    try:
        return Manifest.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"'{path}' has missing or invalid fields ({exc}); re-run 'talk3d prep' with --force") from None


def _image_file_ok(path: Path, ext: str) -> bool:
    """Cheap integrity check: the file starts with its format's signature and a JPEG ends with EOI."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if ext == "png":
                return head == b"\x89PNG\r\n\x1a\n"
            f.seek(-2, os.SEEK_END)
            return head[:2] == b"\xff\xd8" and f.read(2) == b"\xff\xd9"
    except OSError:
        return False


def _check_images(root: Path, manifest: Manifest) -> None:
    for sub, ext in (("frames", manifest.frames_format), ("masks", "png")):
        for i in range(manifest.num_frames):
            rel = f"{sub}/{frame_name(i, ext)}"
            path = root / rel
            if not path.is_file():
                raise DatasetError(f"dataset '{root}' is incomplete: {rel} is missing; {FIX_DATASET}")
            if not _image_file_ok(path, ext):
                raise DatasetError(f"dataset '{root}': {rel} is damaged (not a complete {ext.upper()} file); "
                                   f"re-run 'talk3d prep' with --force")


def _array(root: Path, name: str, mmap: bool = False, finite: bool = True) -> np.ndarray:
    """A dataset array, checked readable (and finite) (DatasetError naming the file otherwise)."""
    try:
        return read_npy(root / name, mmap=mmap, finite=finite, fix="re-run 'talk3d prep' with --force")
    except UserError as exc:
        raise DatasetError(f"dataset {exc}") from None


def validate(root: str | os.PathLike, manifest: Manifest | None = None) -> Manifest:
    """Check that a dataset is complete and consistent; return its manifest.

    Every frame and mask is checked present and complete (file signature), every array
    readable, finite and of its shape.

    Raises:
        DatasetError: naming the first missing, damaged or inconsistent file.
    """
    root = Path(root)
    manifest = manifest or read_manifest(root)
    for name in REQUIRED_FILES:
        if not (root / name).is_file():
            raise DatasetError(f"dataset '{root}' is incomplete: {name} is missing; {FIX_DATASET}")
    n = manifest.num_frames
    expected = {
        "landmarks.npy": (n, NUM_LANDMARKS, 3),
        "landmark_valid.npy": (n,),
        "poses.npy": (n, 4, 4),
        "blink.npy": (n,),
        "canonical_landmarks.npy": (NUM_LANDMARKS, 3),
    }
    if (root / TORSO_OFFSETS).is_file():
        expected[TORSO_OFFSETS] = (n, 2)
    for name, shape in expected.items():
        got = _array(root, name, mmap=True).shape
        if tuple(got) != shape:
            raise DatasetError(f"dataset '{root}': {name} has shape {tuple(got)}, expected {shape}; {FIX_DATASET}")
    feats = _array(root, "audio_feats.npy", mmap=True)
    if feats.ndim != 2 or feats.shape[1] != manifest.audio_feature_dim or feats.shape[0] < 1:
        raise DatasetError(f"dataset '{root}': audio_feats.npy has shape {feats.shape}; {FIX_DATASET}")
    if (root / "phonemes.npy").is_file():
        from talk3d.phonemes import PHONES

        got = _array(root, "phonemes.npy", mmap=True).shape
        if tuple(got) != (feats.shape[0], len(PHONES)):
            raise DatasetError(f"dataset '{root}': phonemes.npy has shape {tuple(got)}, expected "
                               f"{(feats.shape[0], len(PHONES))}; {FIX_DATASET}")
    if not 0 < manifest.train_end <= n or manifest.val_frames.size == 0 or manifest.train_frames.size == 0:
        raise DatasetError(f"dataset '{root}' has no validation split (train_end={manifest.train_end}, N={n}, "
                           f"{len(manifest.val_runs)} held-out runs); {FIX_DATASET}")
    _check_images(root, manifest)
    return manifest


class TalkingHeadDataset:
    """Read access to a validated dataset; per-frame images are loaded lazily.

    Arrays (landmarks, poses, audio features) are memory-mapped, images are read on demand
    with a small LRU cache, so memory does not grow with video length.
    """

    def __init__(self, root: str | os.PathLike, cache_frames: int = 64):
        self.root = Path(root)
        self.manifest = validate(self.root)
        self._read_image = functools.lru_cache(maxsize=cache_frames)(self._read_image_uncached)

    def __len__(self) -> int:
        return self.manifest.num_frames

    # --- per-frame images -------------------------------------------------------------
    def frame(self, index: int) -> np.ndarray:
        """RGB frame ``(H, W, 3)`` uint8."""
        return self._read_image(f"frames/{frame_name(index, self.manifest.frames_format)}")

    def mask(self, index: int) -> np.ndarray:
        """Label mask ``(H, W)`` uint8 (0 background, 1 torso, 2 head)."""
        return self._read_image(f"masks/{frame_name(index, 'png')}")

    def background(self) -> np.ndarray:
        """Background plate ``(H, W, 3)`` uint8."""
        return self._read_image("background.png")

    def _read_image_uncached(self, rel: str) -> np.ndarray:
        from PIL import Image

        path = self.root / rel
        if not path.is_file():
            raise DatasetError(f"dataset '{self.root}' is incomplete: {rel} is missing; {FIX_DATASET}")
        try:
            with Image.open(path) as im:
                return np.asarray(im)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's decoding errors
            raise DatasetError(f"dataset '{self.root}': {rel} cannot be decoded ({exc}); "
                               f"re-run 'talk3d prep' with --force") from None

    # --- arrays ---------------------------------------------------------------------
    @functools.cached_property
    def landmarks(self) -> np.ndarray:
        """``(N, 478, 3)`` float32 image-space landmarks."""
        return _array(self.root, "landmarks.npy", mmap=True, finite=False)

    @functools.cached_property
    def landmark_valid(self) -> np.ndarray:
        """``(N,)`` bool: landmarks were detected (not interpolated)."""
        return _array(self.root, "landmark_valid.npy", finite=False)

    @functools.cached_property
    def poses(self) -> np.ndarray:
        """``(N, 4, 4)`` float32 camera-to-world."""
        return _array(self.root, "poses.npy", finite=False)

    @functools.cached_property
    def canonical_landmarks(self) -> np.ndarray:
        """``(478, 3)`` float32 canonical landmark shape in world units."""
        return _array(self.root, "canonical_landmarks.npy", finite=False)

    @functools.cached_property
    def blink(self) -> np.ndarray:
        """``(N,)`` float32 eye closure in [0, 1]."""
        return _array(self.root, "blink.npy", finite=False)

    @functools.cached_property
    def audio_feats(self) -> np.ndarray:
        """``(T, D)`` float16 log-mel features at ``manifest.audio_feature_rate`` Hz."""
        return _array(self.root, "audio_feats.npy", mmap=True, finite=False)

    @functools.cached_property
    def torso_offsets(self) -> np.ndarray:
        """``(N, 2)`` float32 torso shift in image widths (zeros for datasets prepared without it)."""
        path = self.root / TORSO_OFFSETS
        if path.is_file():
            return np.asarray(_array(self.root, TORSO_OFFSETS, finite=False), dtype=np.float32)
        return np.zeros((self.manifest.num_frames, 2), np.float32)

    @functools.cached_property
    def phonemes(self) -> np.ndarray | None:
        """``(T, P)`` one-hot phone rows (:mod:`talk3d.phonemes`), or ``None`` for datasets prepared
        before prep wrote them."""
        path = self.root / "phonemes.npy"
        return _array(self.root, "phonemes.npy", mmap=True, finite=False) if path.is_file() else None

    @property
    def intrinsics(self) -> np.ndarray:
        """``(3, 3)`` float32 normalised intrinsics."""
        return np.asarray(self.manifest.intrinsics, dtype=np.float32)
