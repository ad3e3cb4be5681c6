"""Configuration of the avatar model (sizes, sampling, scene box, conditioning)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from talk3d.checks import ANY, check_fields, drop_retired
from talk3d.errors import CheckpointError

# Sensible bounds of every numeric field (anything outside is a typo or a damaged file).
MODEL_BOUNDS = {
    "triplane_res": (4, 2048), "triplane_channels": (1, 512), "triplane_init_std": (0, 10),
    "decoder_hidden": (1, 4096), "feature_channels": (3, 512),
    "density_bias": (-100, 100), "neural_res": (4, 2048), "out_res": (8, 8192), "coarse_samples": (1, 1024),
    "importance_samples": (0, 1024), "fine_cull_alpha": (0, 1), "occupancy_res": (0, 256), "box_min": (-100, 100), "box_max": (-100, 100), "head_volume": (-100, 100),
    "audio_dim": (1, 4096), "audio_window": (0, 256), "mel_per_frame": (1, 64),
    "mouth_code": (0, 256), "token_dim": (1, 4096), "attn_heads": (1, 64), "unet_widths": (1, 4096),
    "unet_attn_res": (1, 4096), "sr_widths": (1, 4096), "torso_res": (0, 8192), "torso_warp_hidden": (1, 4096),
}


RETIRED_MODEL: dict[str, Any] = {"extra": ANY, "pose_dim": 10, "decoder_layers": 1, "decoder_activation": "relu"}
"""Fields removed because they no longer chose anything, with the value every supported avatar
had: a saved config's field with that value is dropped on load, another value is refused
(see docs/model.md, "Retired settings")."""


HEAD_BOX = ((-1.4, -2.4, -1.2), (1.4, 1.6, 1.2))
"""Default scene box (min, max corners) in canonical space: the head and hair (the head masks of the
shared clips reach |x| <= 1.12 at the head plane) with a margin; no wider, because space that no
training camera sees (|x| > ~1.5 beside the head) filled with copies of the ears that showed at
the image edges of turned views (docs/model.md, issue 15)."""
PERSON_BOX = ((-2.0, -2.4, -1.2), (2.0, 1.6, 1.2))
"""Scene box of volume torso mode: the shoulders span the whole crop (x ~ +-2 at the head plane)."""


@dataclass
class ModelConfig:
    """Hyper-parameters of :class:`talk3d.model.avatar.Avatar`.

    The defaults are the CPU "quick" size (256^2 output); :meth:`full` gives the GPU size.
    """

    triplane_res: int = 128
    """Side ``R`` of each identity-triplane plane (texels)."""
    triplane_channels: int = 32
    """Channels ``C`` per plane."""
    triplane_init_std: float = 0.1
    """Standard deviation of the identity triplane's noise initialisation."""
    decoder_hidden: int = 64
    """Width of the decoder MLP's one (ReLU) hidden layer."""
    feature_channels: int = 16
    """Channels ``F`` of the rendered feature image; the first 3 are RGB in [0, 1]."""
    density_bias: float = -1.0
    """Added to the raw density before softplus (start semi-transparent, not opaque)."""
    neural_res: int = 64
    """Side of the volume-rendered (neural) image in pixels."""
    out_res: int = 256
    """Side of the super-resolved output image; ``out_res / neural_res`` must be a power of 2."""
    coarse_samples: int = 12
    """Stratified samples per ray inside the scene box (within the occupancy grid's span of the ray)."""
    importance_samples: int = 12
    """Extra samples per ray drawn from the coarse weights (inverse CDF)."""
    fine_cull_alpha: float = 0.01
    """Rays whose coarse opacity is below this skip importance sampling (0 = never skip)."""
    occupancy_res: int = 64
    """Cells along the longest side of the scene box in the occupancy grid
    (:mod:`talk3d.model.occupancy`): rays that meet no occupied cell are skipped, the others
    sampled only where the grid is occupied. 0 samples the whole box on every ray."""
    box_min: tuple[float, float, float] = HEAD_BOX[0]
    """Lower corner of the scene box in canonical space; the box maps to the triplane's [-1, 1]^3.
    The default :data:`HEAD_BOX` holds the head and hair (image torso mode); in volume torso mode
    it stands for :data:`PERSON_BOX`, which holds the shoulders too."""
    box_max: tuple[float, float, float] = HEAD_BOX[1]
    """Upper corner of the scene box (hair reaches y ~ 1.3)."""
    audio_dim: int = 80
    """Columns of the audio features (80 log-mel bins; more with phoneme posteriors)."""
    audio_window: int = 8
    """Video frames on each side of the current frame in the audio window (2W+1 in all)."""
    mel_per_frame: int = 4
    """Audio-feature rows resampled per video frame (feature_rate / fps = 4 at 100 Hz, 25 fps)."""
    audio_norm: str = "floor"
    """How a clip's audio features are normalised before the token MLP (the whole clip's
    statistics, same for the training video and any driving audio). ``floor``: subtract each
    mel bin's noise floor (5th percentile) and divide by the speech-to-floor distance, so
    pauses are ~0 for every microphone and gain. ``layer``: a LayerNorm per audio token, which
    removes the level so a pause looks like speech (configs saved before this field default to
    it; kept so those avatars still render)."""
    pose_token: bool = False
    """Give the head pose to the U-Net as a token. Off by default: a 10-number pose is unique
    per frame, so the U-Net used it to look up each training frame's mouth and ignored the
    audio (measured on Obama: identical mouth tracks for two different driving audios). The
    image-space torso warp still reads the pose. Configs saved before this field default to on."""
    mouth_code: int = 8
    """Size of the lip-motion code (0 = off). The token encoder predicts it from the audio
    window (trained against the tracked lip landmarks, :mod:`talk3d.fit.lipsync`) and hands it
    to the U-Net as one more token and, with :attr:`mouth_basis`, to a linear deltaplane basis.
    Without the code the fitted mouth did not follow the audio at all (Obama: rendered mouth
    opening 0.090 vs 0.089 for the audio of the most open vs the most closed frames; see
    docs/model.md)."""
    mouth_basis: bool = True
    """With a lip-motion code, add a linear deltaplane basis: ``dP_t += sum_k code_k B_k`` with
    ``B`` ``(K, 3, C, R/2, R/2)`` learned (zero at start, bilinearly upsampled to ``R``). A
    direct path from the lips to the planes that the U-Net's attention cannot average away;
    during the fit the tracked code drives it (teacher forcing), at render time the code
    predicted from the audio."""
    token_dim: int = 64
    """Width of the conditioning tokens."""
    attn_heads: int = 4
    """Attention heads in the token encoder and the U-Net cross-attention."""
    unet_widths: tuple[int, ...] = (32, 64, 96)
    """U-Net channels per level; level i runs at ``triplane_res / 2**(i+1)``."""
    unet_attn_res: int = 32
    """Cross-attention to the tokens at every U-Net level with resolution <= this."""
    sr_widths: tuple[int, ...] = (64, 32, 16)
    """Super-resolution channels at neural_res, then after each x2 upsampling."""
    torso_mode: str = "image"
    """How the torso is rendered: ``image`` (default: a learned RGBA texture in image space,
    placed by prep's tracked torso offset plus a pose-driven 2D affine warp, composited between
    the head and the background; the torso stays in image space for novel views) or ``volume``
    (by the head's triplane, like the head: the body then follows every head turn, and its
    sway blurs it; held-out PSNR on Obama 24.4 vs 29.6 dB after 250 steps). Configs saved
    before the field existed default to ``volume``."""
    head_volume: tuple[float, ...] | None = None
    """The ellipsoid the head and hair fit in, ``(ax, ytop, zc, az, yc)`` in canonical units
    (:mod:`talk3d.model.head_volume`); density fades to zero outside it. None: the whole scene box (a fit
    in image torso mode measures one from its dataset, :mod:`talk3d.fit.head_volume`)."""
    torso_res: int = 0
    """Side of the image-mode torso texture in pixels (0: ``out_res``)."""
    torso_warp_hidden: int = 32
    """Hidden width of the image-mode torso's warp MLP (pose -> 6 affine numbers)."""

    def __post_init__(self) -> None:
        check_fields(self, MODEL_BOUNDS, "model.")
        if self.mouth_code == 0:
            self.mouth_basis = False
        ratio = self.out_res // self.neural_res
        if self.out_res % self.neural_res or ratio & (ratio - 1):
            raise ValueError(f"out_res/neural_res must be a power of 2, got {self.out_res}/{self.neural_res}")
        if len(self.sr_widths) < 1 + (ratio.bit_length() - 1):
            raise ValueError(f"sr_widths needs {ratio.bit_length()} entries for x{ratio} super-resolution")
        if self.feature_channels < 3:
            raise ValueError("feature_channels must be >= 3 (the first 3 are RGB)")
        if self.triplane_res % (2 ** len(self.unet_widths)):
            raise ValueError("triplane_res must be divisible by 2**len(unet_widths)")
        if self.audio_norm not in ("floor", "layer"):
            raise ValueError(f"audio_norm must be 'floor' or 'layer', got {self.audio_norm!r} (the 'loudness' "
                             "normalisation was retired: refit such an avatar with --force)")
        if self.mouth_code < 0:
            raise ValueError(f"mouth_code must be >= 0, got {self.mouth_code}")
        if self.torso_mode not in ("volume", "image"):
            raise ValueError(f"torso_mode must be 'volume' or 'image', got {self.torso_mode!r}")
        self.box_min = tuple(float(v) for v in self.box_min)  # type: ignore[assignment]
        self.box_max = tuple(float(v) for v in self.box_max)  # type: ignore[assignment]
        if self.torso_mode == "volume" and (self.box_min, self.box_max) == HEAD_BOX:
            self.box_min, self.box_max = PERSON_BOX  # the default box, widened for the torso in the volume
        self.unet_widths = tuple(int(v) for v in self.unet_widths)
        self.sr_widths = tuple(int(v) for v in self.sr_widths)
        if self.head_volume is not None:
            self.head_volume = tuple(float(v) for v in self.head_volume)
        if self.head_volume is not None:
            if len(self.head_volume) != 5:
                raise ValueError(f"head_volume needs 5 numbers (ax, ytop, zc, az, yc), got {len(self.head_volume)}")
            ax, ytop, _, az, yc = self.head_volume
            if ax <= 0 or az <= 0 or ytop <= yc:
                raise ValueError(f"head_volume needs ax > 0, az > 0 and ytop > yc, got {list(self.head_volume)}")
            if self.torso_mode != "image":
                raise ValueError("head_volume bounds the head alone: it needs torso_mode 'image'")
        if any(lo >= hi for lo, hi in zip(self.box_min, self.box_max, strict=True)):
            raise ValueError(f"box_min must be below box_max, got {self.box_min} / {self.box_max}")

    @property
    def sr_factor(self) -> int:
        """Upsampling factor of the super-resolution network."""
        return self.out_res // self.neural_res

    @property
    def torso_size(self) -> int:
        """Side of the image-mode torso texture (``torso_res``, or ``out_res`` when 0)."""
        return self.torso_res if self.torso_res > 0 else max(1, self.out_res)

    @property
    def audio_frames(self) -> int:
        """Video frames in an audio window (``2 * audio_window + 1``)."""
        return 2 * self.audio_window + 1

    @property
    def audio_token_input(self) -> int:
        """Size ``D`` of one audio-window entry: ``mel_per_frame * audio_dim``."""
        return self.mel_per_frame * self.audio_dim

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from :meth:`to_dict` output; unknown keys are refused (other version)."""
        if not isinstance(data, dict):
            raise CheckpointError(f"model config must be a JSON object, got {type(data).__name__}")
        data = drop_retired(data, RETIRED_MODEL, "model")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CheckpointError(f"model config has unknown keys {unknown}; was it written by a newer talk3d?")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        kw.setdefault("pose_token", True)  # runs saved before the field existed used the pose token
        kw.setdefault("audio_norm", "layer")  # ... and a LayerNorm on the audio tokens
        kw.setdefault("torso_mode", "volume")  # ... and rendered the torso in the volume
        kw.setdefault("mouth_code", 0)  # ... and had no lip-motion code
        kw.setdefault("mouth_basis", False)  # ... nor a lip-driven deltaplane basis
        return cls(**kw)

    @classmethod
    def quick(cls, **overrides: Any) -> ModelConfig:
        """CPU-sized model: 3x32x128^2 triplane, 64^2 neural, 256^2 output, 12+12 samples."""
        return cls(**overrides)

    @classmethod
    def full(cls, **overrides: Any) -> ModelConfig:
        """GPU-sized model: 3x32x256^2 triplane, 128^2 neural, 512^2 output, 48+48 samples."""
        base: dict[str, Any] = dict(triplane_res=256, neural_res=128, out_res=512, coarse_samples=48,
                                    importance_samples=48, decoder_hidden=64, unet_widths=(32, 64, 96, 128),
                                    sr_widths=(64, 32, 16))
        base.update(overrides)
        return cls(**base)

    @classmethod
    def tiny(cls, **overrides: Any) -> ModelConfig:
        """Unit-test size: 3x8x16^2 triplane, 16^2 neural, 32^2 output, 8+8 samples, 16-cell grid."""
        base: dict[str, Any] = dict(triplane_res=16, triplane_channels=8, decoder_hidden=16, feature_channels=8,
                                    neural_res=16, out_res=32, coarse_samples=8, importance_samples=8,
                                    audio_dim=8, audio_window=2, mel_per_frame=2, token_dim=16, attn_heads=2,
                                    unet_widths=(8, 16), unet_attn_res=8, sr_widths=(16, 8), occupancy_res=16)
        base.update(overrides)
        return cls(**base)
