"""Settings of ``talk3d render`` and the summary it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Millimetres per canonical unit, used only to convert ``--ipd 63mm``. The canonical box
# [-1, 1]^3 holds the head, so one unit is about half a head width (~75-80 mm on adults).
MM_PER_UNIT = 80.0
# Bounds of the numeric settings (degrees, seconds, factors); NaN and inf are always refused.
RENDER_BOUNDS = {
    "yaw": (-360, 360), "pitch": (-360, 360), "orbit_range": (0, 360), "orbit_period": (0, 1e6),
    "motion_scale": (0, 10), "size": (8, 4096), "fps": (1, 240), "batch": (0, 4096), "threads": (0, 4096),
    "ipd": (1e-6, 10), "mpi_layers": (2, 1024), "mpi_samples": (1, 1024), "mpi_size": (8, 4096),
    "mpi_frames": (0, 10**9), "quality": (0, 51), "plate_frame": (0, 10**9),
}


@dataclass
class RenderConfig:
    """What to render and how (``talk3d render`` flags map one-to-one onto these fields)."""

    yaw: float = 0.0
    """Extra camera yaw about the head centre, degrees (> 0: camera towards the subject's left)."""
    pitch: float = 0.0
    """Extra camera pitch about the head centre, degrees (> 0: camera above the head)."""
    orbit: bool = False
    """Sweep the yaw over the clip as a sinusoid ``yaw + orbit_range * sin(2 pi t / period)``."""
    orbit_range: float = 30.0
    """Amplitude of the orbit sweep, degrees."""
    orbit_period: float = 0.0
    """Period of the orbit sweep in seconds; 0 = one full sweep over the whole clip."""
    pose: str = "tracked"
    """Head motion: ``tracked`` (the training clip's tracked poses played forward then
    backward, so the motion never jumps) or ``fixed`` (the mean tracked pose)."""
    blink: str = "auto"
    """``auto``: the training clip's blink track looped like the poses; ``off``: eyes open."""
    motion_scale: float = 1.0
    """Intensity of audio-driven motion (scales the deltaplane; 0 = still identity, 1 = as trained)."""
    size: int | None = None
    """Output side in pixels; ``None`` = the model's output resolution."""
    fps: float | None = None
    """Output frame rate; ``None`` = the dataset's frame rate."""
    device: str = "auto"
    """Torch device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    batch: int = 0
    """Frames rendered per forward pass; 0 = automatic: 4 on CPU (the U-Net and SR run more
    efficiently on 12 plane images than on 3: on the Obama avatar at 256^2 on 2 cores, measured
    before the allocator settings, 19-22 model frames/s at batch 1, 29-31 at batch 4; batch 1
    uses the least memory), 8 on CUDA."""
    precision: str = "auto"
    """Numeric type of the U-Net and the super-resolution: ``auto`` (bfloat16 on CPUs that compute it
    natively, float32 elsewhere), ``float32`` or ``bfloat16``; see :mod:`talk3d.model.precision`."""
    lip_drive: str = "auto"
    """What drives the mouth of an avatar with a phonetic lip prior: ``auto`` (the prior for new
    audio, the audio head for ``--frames val``), ``prior`` or ``audio``; see
    :data:`talk3d.model.lip_prior.LIP_DRIVES`."""
    threads: int = 0
    """CPU threads for torch; 0 = a fair share of the cores, re-counted while other talk3d
    processes start and end (:mod:`talk3d.threads`)."""
    frames: str = "audio"
    """``audio``: drive with the given audio; ``val``: self-driven on the dataset's held-out
    frames with their own audio and poses (the audio argument is then optional)."""
    depth: bool = False
    """Also write ``OUT.depth.mp4``: colour-mapped depth, normalised to the head box."""
    alpha: bool = False
    """Also write RGBA PNG frames (foreground with transparency) into ``OUT.alpha/``."""
    stereo: bool = False
    """Write side-by-side stereo (left eye on the left) instead of a single view."""
    ipd: float = 0.8
    """Stereo baseline in canonical units (about 63 mm at ``MM_PER_UNIT`` = 80 mm/unit)."""
    mpi_dir: Path | None = None
    """Folder for multiplane-image exports (one sub-folder per chosen frame); ``None`` = none."""
    mpi_frames: list[int] = field(default_factory=lambda: [0])
    """Output frame indices to export as MPIs."""
    mpi_layers: int = 32
    """Number of MPI planes (uniform in disparity between the box's near and far)."""
    mpi_samples: int = 4
    """Radiance-field samples per MPI depth slab."""
    mpi_size: int | None = None
    """Side of the MPI layers in pixels; ``None`` = the model's neural (volume-rendering) resolution."""
    quality: int = 18
    """H.264 CRF (lower = better quality, larger files)."""
    full_frame: bool = False
    """Paste each rendered crop back into the source video's full frame at its own resolution
    (:mod:`talk3d.render.full_frame`); depth, RGBA and MPI outputs stay the crop's."""
    source: Path | None = None
    """The source video for ``full_frame`` when it has moved (default: the path prep recorded)."""
    plate_frame: int | None = None
    """Source frame used as the still plate of ``full_frame`` with ``pose="fixed"``; ``None``: the
    frame whose head pose is nearest the mean pose."""


@dataclass
class RenderResult:
    """Summary of a finished render."""

    out_path: Path
    """The mp4 written."""
    num_frames: int
    """Frames rendered."""
    fps: float
    """Frame rate of the video."""
    duration: float
    """Duration of the driving audio in seconds (video length = num_frames / fps)."""
    size: int
    """Side of the (per-eye) frames in pixels."""
    render_fps: float
    """Measured rendering speed, frames per second (model only, no encoding)."""
    extra_outputs: dict[str, Path] = field(default_factory=dict)
    """Other files written: ``depth``, ``alpha``, ``mpi``."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per phase (``audio``, ``model``, ``write``, ``mpi``)."""
    frame_size: tuple[int, int] = (0, 0)
    """``(width, height)`` of the video (the source's with ``full_frame``)."""


def parse_ipd(text: str | float) -> float:
    """Parse ``--ipd``: canonical units (``0.8``) or millimetres (``63mm``) -> canonical units."""
    from talk3d.errors import UserError

    s = str(text).strip().lower()
    scale = 1.0
    if s.endswith("mm"):
        s, scale = s[:-2].strip(), 1.0 / MM_PER_UNIT
    try:
        value = float(s) * scale
    except ValueError:
        raise UserError(f"--ipd must be a number in canonical units or millimetres like '63mm', got '{text}'") from None
    if not 0.0 < value < 10.0:
        raise UserError(f"--ipd {text} is out of range: give a positive baseline such as 0.8 or 63mm")
    return value


def parse_frame_list(text: str) -> list[int]:
    """Parse ``--mpi-frames 0,10,20`` into a sorted list of unique non-negative indices."""
    from talk3d.errors import UserError

    try:
        items = sorted({int(t) for t in str(text).replace(" ", "").split(",") if t != ""})
    except ValueError:
        raise UserError(f"--mpi-frames must be comma-separated frame numbers like 0,10,20, got '{text}'") from None
    if not items or items[0] < 0:
        raise UserError(f"--mpi-frames needs non-negative frame numbers like 0,10,20, got '{text}'")
    return items
