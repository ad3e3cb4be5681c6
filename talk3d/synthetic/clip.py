"""Synthetic talking-head clips with ground truth: configuration, generation, cache, loading.

A clip folder::

    clip.json          config, config hash, generator version, intrinsics, frame count (written last)
    video.mp4          H.264 + AAC, ``size`` x ``size`` at ``fps``
    audio.wav          16 kHz mono PCM16 speech-like signal
    poses.npy          (N, 4, 4) float32 main-camera cam2world in head space (talk3d.camera)
    angles.npy         (N, 3) float32 yaw, pitch, roll (degrees) of the main camera
    mouth.npy          (N,) float32 jaw opening in [0, 1] (= loudness envelope per frame)
    blink.npy          (N,) float32 eye closure in [0, 1]
    landmarks.npy      (N, 478, 2) float32 FaceMesh landmark pixels in the main view
    masks/000000.png   uint8 labels 0 background, 1 torso/neck, 2 head (main view)
    views/yaw30/000000.png   the same instants seen by the camera orbited by +30 deg yaw
    views/yaw30/poses.npy    (M, 4, 4) their cam2world; views/yaw30/frames.npy (M,) indices
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from talk3d.camera import focal_35mm_from_pixels, intrinsics_matrix, orbit
from talk3d.console import info, make_progress
from talk3d.errors import UserError
from talk3d.io import atomic_dir, read_json, read_npy, write_json, write_npy
from talk3d.media import AUDIO_RATE, VideoWriter, write_wav
from talk3d.synthetic.mesh import build_head
from talk3d.synthetic.motion import blink_track, frame_envelope, smooth_angle, speech_like_audio
from talk3d.synthetic.scene import FrameState, Rendered, background_plate, main_cam2world, render_state

GENERATOR_VERSION = 2
CLIP_META = "clip.json"
TRUTH_FILES = ("video.mp4", "audio.wav", "poses.npy", "angles.npy", "mouth.npy", "blink.npy", "landmarks.npy")


@dataclass
class SyntheticConfig:
    """Settings of a synthetic clip (all deterministic for a seed)."""

    seconds: float = 16.0
    """Clip length in seconds."""
    fps: float = 25.0
    """Frame rate of the video and of the ground-truth tracks."""
    size: int = 256
    """Side of the square frames in pixels."""
    seed: int = 0
    """Random seed of audio, blinks, head motion and textures."""
    yaw_amplitude: float = 20.0
    """Largest |yaw| of the head motion in degrees (keep within 25)."""
    pitch_amplitude: float = 8.0
    """Largest |pitch| in degrees."""
    roll_amplitude: float = 4.0
    """Largest |roll| in degrees."""
    extra_yaws: tuple[float, ...] = (30.0,)
    """Extra cameras (orbited about the head centre by these yaws) rendered as PNG frames."""
    view_stride: int = 1
    """Render the extra views for every ``view_stride``-th frame."""
    focal: float = 1.8
    """Normalised focal length (in image widths) of every camera."""
    distance: float = 6.5
    """Camera distance from the head centre (head half-width is about 0.6)."""
    supersample: int = 2
    """Anti-aliasing factor of the rasteriser."""
    write_masks: bool = True
    """Write ground-truth label masks of the main view."""

    def __post_init__(self) -> None:
        self.extra_yaws = tuple(float(y) for y in self.extra_yaws)
        if self.seconds <= 0 or self.fps <= 0 or self.size < 16:
            raise UserError("synthetic clip needs seconds > 0, fps > 0 and size >= 16")
        if self.view_stride < 1 or self.supersample < 1:
            raise UserError("synthetic clip needs view_stride >= 1 and supersample >= 1")

    @property
    def num_frames(self) -> int:
        return int(round(self.seconds * self.fps))

    @property
    def focal_35mm(self) -> float:
        """The camera's 35 mm-equivalent focal length (what ``talk3d prep --focal-35mm`` takes)."""
        return focal_35mm_from_pixels(self.focal * self.size, self.size, self.size)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["extra_yaws"] = list(self.extra_yaws)
        return d

    def digest(self) -> str:
        """Hash of the settings and the generator version (the cache key)."""
        text = json.dumps({"v": GENERATOR_VERSION, **self.to_json()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class GroundTruth:
    """Per-frame truth of a clip.

    Attributes:
        audio: ``(S,)`` float32 at 16 kHz.
        angles: ``(N, 3)`` float32 yaw, pitch, roll in degrees.
        mouth: ``(N,)`` float32 jaw opening in [0, 1].
        blink: ``(N,)`` float32 eye closure in [0, 1].
        cam2world: ``(N, 4, 4)`` float32 main cameras.
        intrinsics: ``(3, 3)`` float32 normalised.
    """

    audio: np.ndarray
    angles: np.ndarray
    mouth: np.ndarray
    blink: np.ndarray
    cam2world: np.ndarray
    intrinsics: np.ndarray


def view_name(yaw: float) -> str:
    """Folder name of an extra view: ``yaw30``, ``yaw-15``, ``yaw7.5``."""
    return f"yaw{yaw:g}"


def ground_truth(config: SyntheticConfig) -> GroundTruth:
    """Generate audio and all per-frame tracks for ``config`` (no rendering)."""
    rng = np.random.default_rng(config.seed)
    n = config.num_frames
    audio, env = speech_like_audio(config.seconds, AUDIO_RATE, rng)
    mouth = frame_envelope(env, AUDIO_RATE, config.fps, n)
    blink = blink_track(n, config.fps, rng)
    angles = np.stack([smooth_angle(n, config.fps, a, rng)
                       for a in (config.yaw_amplitude, config.pitch_amplitude, config.roll_amplitude)], -1)
    c2w = main_cam2world(torch.tensor(angles, dtype=torch.float32), config.distance)
    return GroundTruth(audio=audio, angles=angles.astype(np.float32), mouth=mouth.astype(np.float32),
                       blink=blink.astype(np.float32), cam2world=c2w.numpy(),
                       intrinsics=intrinsics_matrix(config.focal).numpy())


class SyntheticScene:
    """Renders any frame of a synthetic clip from any camera (novel-view ground truth)."""

    def __init__(self, config: SyntheticConfig, truth: GroundTruth | None = None):
        self.config = config
        self.truth = truth if truth is not None else ground_truth(config)
        self.head = build_head(config.seed)
        self._plates: dict[int, torch.Tensor] = {}

    @property
    def num_frames(self) -> int:
        return len(self.truth.angles)

    def cam2world(self, frame: int, yaw: float = 0.0, pitch: float = 0.0) -> torch.Tensor:
        """``(4, 4)`` main camera of ``frame`` orbited about the head centre by ``yaw``/``pitch``."""
        c2w = torch.from_numpy(self.truth.cam2world[frame])
        return orbit(c2w, yaw, pitch) if (yaw or pitch) else c2w

    def render(self, frame: int, cam2world: torch.Tensor | None = None, yaw: float = 0.0,
               pitch: float = 0.0, size: int | None = None) -> Rendered:
        """Render ``frame`` (its mouth, blink and body placement).

        Args:
            frame: frame index in ``[0, N)``.
            cam2world: ``(4, 4)`` camera; default the main camera of the frame orbited by
                ``yaw``/``pitch`` degrees (via :func:`talk3d.camera.orbit`).
            size: output side; default the clip size.
        """
        if not 0 <= frame < self.num_frames:
            raise UserError(f"frame {frame} is outside the clip (0..{self.num_frames - 1})")
        size = size or self.config.size
        if size not in self._plates:
            self._plates[size] = background_plate(size, self.config.seed)
        cam = self.cam2world(frame, yaw, pitch) if cam2world is None else cam2world
        t = self.truth
        state = FrameState(tuple(float(a) for a in t.angles[frame]), float(t.mouth[frame]), float(t.blink[frame]))
        return render_state(self.head, state, cam, torch.from_numpy(t.intrinsics), size,
                            self._plates[size], supersample=self.config.supersample)


@dataclass
class SyntheticClip:
    """A generated clip on disk (see the module docstring for the files)."""

    path: Path
    config: SyntheticConfig
    num_frames: int
    intrinsics: np.ndarray = field(repr=False)

    @property
    def video(self) -> Path:
        return self.path / "video.mp4"

    @property
    def audio(self) -> Path:
        return self.path / "audio.wav"

    def poses(self) -> np.ndarray:
        """``(N, 4, 4)`` main-camera cam2world."""
        return read_npy(self.path / "poses.npy")

    def angles(self) -> np.ndarray:
        """``(N, 3)`` yaw, pitch, roll in degrees."""
        return read_npy(self.path / "angles.npy")

    def mouth(self) -> np.ndarray:
        return read_npy(self.path / "mouth.npy")

    def blink(self) -> np.ndarray:
        return read_npy(self.path / "blink.npy")

    def landmarks(self) -> np.ndarray:
        """``(N, 478, 2)`` landmark pixels in the main view."""
        return read_npy(self.path / "landmarks.npy")

    def view_dir(self, yaw: float) -> Path:
        return self.path / "views" / view_name(yaw)

    def view_frame(self, yaw: float, frame: int) -> Path:
        """PNG of the extra view ``yaw`` at ``frame`` (exists for every ``view_stride``-th frame)."""
        return self.view_dir(yaw) / f"{frame:06d}.png"

    def scene(self) -> SyntheticScene:
        """A renderer for arbitrary frames and cameras of this clip."""
        return SyntheticScene(self.config)


def load_clip(path: str | os.PathLike) -> SyntheticClip:
    """Open a generated clip folder."""
    path = Path(path)
    meta_path = path / CLIP_META
    if not meta_path.is_file():
        raise UserError(f"'{path}' is not a synthetic clip (no {CLIP_META}); create it with make_clip")
    meta = read_json(meta_path)
    cfg = meta["config"]
    cfg["extra_yaws"] = tuple(cfg.get("extra_yaws", ()))
    config = SyntheticConfig(**cfg)
    return SyntheticClip(path=path, config=config, num_frames=int(meta["num_frames"]),
                         intrinsics=np.array(meta["intrinsics"], dtype=np.float32))


def _is_complete(path: Path, config: SyntheticConfig) -> bool:
    meta_path = path / CLIP_META
    if not meta_path.is_file():
        return False
    meta = read_json(meta_path)
    if meta.get("hash") != config.digest():
        return False
    if not all((path / f).is_file() for f in TRUTH_FILES):
        return False
    last = ((config.num_frames - 1) // config.view_stride) * config.view_stride
    return all((path / "views" / view_name(y) / f"{last:06d}.png").is_file() for y in config.extra_yaws)


def make_clip(out_dir: str | os.PathLike, config: SyntheticConfig | None = None, force: bool = False,
              replace_stale: bool = False) -> SyntheticClip:
    """Generate a synthetic clip with ground truth, or reuse a complete one with the same config.

    Args:
        out_dir: clip folder (created; written atomically as a whole).
        config: settings; default :class:`SyntheticConfig()`.
        force: regenerate even when a matching clip exists, and replace any folder content.
        replace_stale: replace a clip made with other settings (for cache folders).
    Returns:
        :class:`SyntheticClip`.
    Raises:
        UserError: ``out_dir`` holds other content (or a clip with other settings and
            ``replace_stale`` is off) and ``force`` is off.
    """
    config = config or SyntheticConfig()
    out = Path(out_dir).expanduser()
    if not force and _is_complete(out, config):
        info(f"reusing the synthetic clip in {out}")
        return load_clip(out)
    if out.exists() and not force and any(out.iterdir()):
        is_clip = (out / CLIP_META).is_file()
        if not (is_clip and replace_stale):
            what = "a synthetic clip made with other settings" if is_clip else "other files"
            raise UserError(f"'{out}' holds {what}; pass --force to replace it or choose another folder")

    truth = ground_truth(config)
    scene = SyntheticScene(config, truth)
    n = config.num_frames
    view_frames = np.arange(0, n, config.view_stride)
    with atomic_dir(out) as tmp:
        write_wav(tmp / "audio.wav", truth.audio)
        write_npy(tmp / "poses.npy", truth.cam2world)
        write_npy(tmp / "angles.npy", truth.angles)
        write_npy(tmp / "mouth.npy", truth.mouth)
        write_npy(tmp / "blink.npy", truth.blink)
        landmarks = np.zeros((n, 478, 2), dtype=np.float32)
        for yaw in config.extra_yaws:
            vdir = tmp / "views" / view_name(yaw)
            vdir.mkdir(parents=True)
            write_npy(vdir / "frames.npy", view_frames.astype(np.int64))
            write_npy(vdir / "poses.npy", np.stack([scene.cam2world(int(i), yaw).numpy() for i in view_frames]))
        if config.write_masks:
            (tmp / "masks").mkdir()
        with make_progress() as bar, VideoWriter(tmp / "video.mp4", fps=config.fps, audio=tmp / "audio.wav") as vw:
            task = bar.add_task("synthetic clip", total=n, status="")
            for i in range(n):
                r = scene.render(i)
                vw.write(r.rgb)
                landmarks[i] = r.landmarks
                if config.write_masks:
                    _write_png(tmp / "masks" / f"{i:06d}.png", r.mask)
                if i % config.view_stride == 0:
                    for yaw in config.extra_yaws:
                        _write_png(tmp / "views" / view_name(yaw) / f"{i:06d}.png", scene.render(i, yaw=yaw).rgb)
                bar.advance(task)
        write_npy(tmp / "landmarks.npy", landmarks)
        write_json(tmp / CLIP_META, {
            "generator_version": GENERATOR_VERSION, "hash": config.digest(), "config": config.to_json(),
            "num_frames": n, "fps": config.fps, "size": config.size,
            "intrinsics": truth.intrinsics.tolist(), "audio_sample_rate": AUDIO_RATE,
            "conventions": "talk3d.camera (head-centred world, OpenCV cameras, normalised intrinsics)",
        })
    info(f"synthetic clip written to {out} ({n} frames, {config.size}x{config.size}, {config.fps:g} fps)")
    return load_clip(out)


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    img = image if image.ndim == 2 else image[..., ::-1]
    if not cv2.imwrite(str(path), np.ascontiguousarray(img)):
        raise UserError(f"cannot write '{path}'; check the folder is writable")
