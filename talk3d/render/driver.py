"""``talk3d render``: driving audio (or the held-out frames) -> video with sound, plus extras.

Frames are produced batch by batch (:func:`talk3d.model.drive.forward_frames`: each batch's
conditioning from the clip's audio, normalised once, then ``batch`` frames per forward pass)
and streamed into the video writers, so memory stays bounded for long audio.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talk3d import threads
from talk3d.checks import check_fields
from talk3d.console import info, make_progress, warn
from talk3d.dataset import frames_audio
from talk3d.device import resolve_device
from talk3d.errors import UserError
from talk3d.folders import check_separate
from talk3d.image import resize
from talk3d.io import atomic_dir
from talk3d.media import AUDIO_RATE, VideoWriter, read_audio, write_wav
from talk3d.memory import keep_freed_memory
from talk3d.render import outputs, paths
from talk3d.render.audio_drive import frame_count, load_driving_audio
from talk3d.render.config import RENDER_BOUNDS, RenderConfig, RenderResult
from talk3d.render.mpi import box_near_far, export_mpi, save_mpi
from talk3d.render.plate import FullFrameOutput


@dataclass
class Drive:
    """Everything per output frame that the model is conditioned on."""

    features: np.ndarray
    """``(T, D)`` audio features."""
    feature_rate: float
    """Rows per second of ``features``."""
    fps: float
    """Video frame rate (audio time of frame ``f`` is ``f / fps``)."""
    frame_indices: np.ndarray
    """``(F,)`` frame numbers passed to the conditioning (index ``blink``/``head``)."""
    blink: np.ndarray
    """``(N,)`` eye closure indexed by ``frame_indices``."""
    head: torch.Tensor
    """``(N, 4, 4)`` head-motion cameras indexed by ``frame_indices`` (conditioning)."""
    cameras: torch.Tensor
    """``(F, 4, 4)`` render cameras (head motion + requested view), one per output frame."""
    mux_audio: Path | None
    """Audio file muxed into the video (``None``: silent video)."""
    duration: float
    """Seconds of driving audio."""
    torso: np.ndarray | None = None
    """``(N, 2)`` torso offsets indexed by ``frame_indices`` (None: resting torso)."""
    plate: np.ndarray | None = None
    """``(F,)`` the source frame each output frame stands for (the full-frame plate)."""
    phones: np.ndarray | None = None
    """``(T, P)`` phone rows of the audio (rows of ``features``): the run's lip prior drives the mouth."""


def _check_config(cfg: RenderConfig) -> None:
    """Refuse settings that cannot render: unknown modes, NaN/inf or out-of-range numbers."""
    if cfg.frames not in ("audio", "val"):
        raise UserError(f"--frames must be 'audio' or 'val', got '{cfg.frames}'")
    if cfg.batch < 0:
        raise UserError("--batch must be 0 (automatic) or a positive number of frames")
    from talk3d.model.precision import PRECISIONS  # (talk3d.model is imported when the run is loaded)

    if cfg.precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{cfg.precision}'")
    from talk3d.model.lip_prior import LIP_DRIVES

    if cfg.lip_drive not in LIP_DRIVES:
        raise UserError(f"--lip-drive must be one of {', '.join(LIP_DRIVES)}, got '{cfg.lip_drive}'")
    if cfg.size is not None and not 8 <= cfg.size <= 4096:
        raise UserError(f"--size {cfg.size} is out of range: give a side between 8 and 4096 pixels")
    if cfg.mpi_size is not None and not 8 <= cfg.mpi_size <= 4096:
        raise UserError(f"--mpi-size {cfg.mpi_size} is out of range: give a side between 8 and 4096 pixels")
    if cfg.fps is not None and not 1.0 <= cfg.fps <= 240.0:
        raise UserError(f"--fps {cfg.fps} is out of range: give a frame rate between 1 and 240")
    if cfg.mpi_layers < 2 or cfg.mpi_samples < 1:
        raise UserError("--mpi-layers must be at least 2")
    if cfg.full_frame and cfg.stereo:
        raise UserError("--full-frame and --stereo cannot be combined: a side-by-side pair does not fit the "
                        "source frame; render one of them")
    if cfg.plate_frame is not None and not (cfg.full_frame and cfg.pose == "fixed" and cfg.frames == "audio"):
        raise UserError("--plate-frame chooses the still plate of --full-frame --pose fixed with driving audio "
                        "(--frames val shows each held-out frame's own); add those options or leave it out")
    if cfg.source is not None and not cfg.full_frame:
        raise UserError("--source points --full-frame at a moved copy of the source video; add --full-frame or "
                        "leave it out")
    try:
        check_fields(cfg, RENDER_BOUNDS, "--")
    except ValueError as exc:
        raise UserError(f"{str(exc).replace('_', '-')}; fix that option") from None


def planned_outputs(out_path: Path, cfg: RenderConfig) -> list[Path]:
    """Every path a render with ``cfg`` writes (checked before any work)."""
    out = [out_path]
    if cfg.depth:
        out.append(outputs.depth_path(out_path))
    if cfg.alpha:
        out.append(outputs.alpha_dir(out_path))
    if cfg.mpi_dir is not None:
        out += [Path(cfg.mpi_dir) / f"frame_{i:06d}" for i in cfg.mpi_frames]
    return out


def render(run_dir: str | os.PathLike, audio_path: str | os.PathLike | None, out_path: str | os.PathLike,
           config: RenderConfig | None = None, force: bool = False) -> RenderResult:
    """Render a fitted avatar saying ``audio_path`` (or its held-out frames) into ``out_path``.

    Raises:
        UserError / CheckpointError: bad run folder, audio, angles or existing outputs.
    """
    from talk3d.fit.checkpoint import load_run

    cfg = config or RenderConfig()
    _check_config(cfg)
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".mp4":
        raise UserError(f"output '{out_path}' must end in .mp4")
    written = planned_outputs(out_path, cfg) + ([Path(cfg.mpi_dir)] if cfg.mpi_dir is not None else [])
    for planned in written:
        check_separate(planned, [("run folder", run_dir), ("audio", audio_path), ("source video", cfg.source)])
    outputs.check_outputs(planned_outputs(out_path, cfg), force)
    if cfg.frames == "audio" and audio_path is None:
        raise UserError("give a driving AUDIO file, or --frames val to render the held-out frames")
    device = resolve_device(cfg.device)
    run = load_run(run_dir, device)
    from talk3d.model.lip_prior import check_lip_drive

    check_lip_drive(cfg.lip_drive, run.lip_prior, run.run_dir)
    if cfg.frames == "val":  # the dataset's audio and frames are an input too
        for planned in written:
            check_separate(planned, [("dataset", run.dataset_dir)])
    if cfg.full_frame:
        for planned in written:
            check_separate(planned, [("source video", cfg.source or run.manifest.source or None)])
    return render_run(run, audio_path, out_path, cfg, force=force)


def _drive_from_audio(run, audio_path: str | os.PathLike, cfg: RenderConfig, fps: float) -> Drive:
    from talk3d.model.lip_prior import driving_phones

    audio = load_driving_audio(audio_path)
    n = frame_count(audio.duration, fps)
    poses = torch.as_tensor(run.poses, dtype=torch.float32)
    head, source = paths.head_motion(poses, n, cfg.pose)
    plate = None
    if cfg.full_frame:  # a fixed head stands in front of one still frame, with that frame's torso
        plate = source if cfg.pose == "tracked" else np.full(n, _still_frame(poses, cfg.plate_frame))
        source = plate
    torso = paths.torso_track(run.torso_offsets, source)
    blink = paths.blink_track(np.asarray(run.blink), n, cfg.blink)
    yaw = paths.yaw_schedule(n, fps, cfg.yaw, cfg.orbit, cfg.orbit_range, cfg.orbit_period)
    paths.check_angles(yaw, cfg.pitch, poses, head)
    cams = paths.view_cameras(head, yaw, cfg.pitch)
    return Drive(features=audio.features, feature_rate=audio.feature_rate, fps=fps,
                 frame_indices=np.arange(n), blink=blink, head=head, cameras=cams,
                 mux_audio=audio.path, duration=audio.duration, torso=torso, plate=plate,
                 phones=driving_phones(run.lip_prior, audio.samples, cfg.lip_drive))


def _still_frame(poses: torch.Tensor, chosen: int | None) -> int:
    """The still plate of a fixed-pose full-frame render: ``chosen``, or the frame whose pose
    is nearest the mean pose the head is rendered at."""
    if chosen is not None:
        if not 0 <= chosen < poses.shape[0]:
            raise UserError(f"--plate-frame {chosen} is outside the source's frames 0-{poses.shape[0] - 1}")
        return int(chosen)
    mean = paths.mean_pose(poses)
    return int(torch.linalg.matrix_norm(poses - mean, dim=(-2, -1)).argmin())


def _drive_val(run, cfg: RenderConfig, tmp: Path) -> Drive:
    from talk3d.model.lip_prior import own_clip_phones

    m = run.manifest
    if run.audio_feats is None:
        raise UserError(f"run '{run.run_dir}' has no audio_feats.npy copy: re-run 'talk3d fit' to render --frames val")
    if cfg.fps is not None and abs(cfg.fps - m.fps) > 1e-6:
        warn(f"--frames val renders at the dataset's {m.fps:g} fps; --fps {cfg.fps:g} is ignored")
    idx = np.asarray(m.val_frames, dtype=np.int64)
    poses = torch.as_tensor(run.poses, dtype=torch.float32)
    head = poses if cfg.pose == "tracked" else paths.mean_pose(poses).expand_as(poses).clone()
    blink = np.asarray(run.blink, dtype=np.float32)
    if cfg.blink == "off":
        blink = np.zeros_like(blink)
    yaw = paths.yaw_schedule(idx.size, m.fps, cfg.yaw, cfg.orbit, cfg.orbit_range, cfg.orbit_period)
    paths.check_angles(yaw, cfg.pitch, poses, head[torch.from_numpy(idx)])
    cams = paths.view_cameras(head[torch.from_numpy(idx)], yaw, cfg.pitch)
    mux = None
    wav = Path(run.dataset_dir) / "audio.wav"
    if wav.is_file():  # the held-out runs' sound, one after the other like their frames
        audio = read_audio(wav)
        seg = frames_audio(audio, AUDIO_RATE, m.fps, idx)
        if seg.size:
            mux = tmp / "val_audio.wav"
            write_wav(mux, seg)
    if mux is None:
        warn(f"dataset audio '{wav}' is not available: the validation video will be silent")
    # the plates' torso when they are shown (full frame), else the resting torso with a fixed head
    torso = np.asarray(run.torso_offsets, dtype=np.float32) if cfg.pose == "tracked" or cfg.full_frame else None
    return Drive(features=np.asarray(run.audio_feats, dtype=np.float32), feature_rate=m.audio_feature_rate,
                 fps=m.fps, frame_indices=idx, blink=blink, head=head, cameras=cams, mux_audio=mux,
                 duration=idx.size / m.fps, torso=torso, plate=idx if cfg.full_frame else None,
                 phones=own_clip_phones(run.lip_prior, run.phonemes, cfg.lip_drive))


def render_run(run, audio_path: str | os.PathLike | None, out_path: Path, cfg: RenderConfig,
               force: bool = False) -> RenderResult:
    """Render with an already loaded run (see :func:`talk3d.fit.checkpoint.load_run`)."""
    _check_config(cfg)
    out_path = Path(out_path)
    outputs.check_outputs(planned_outputs(out_path, cfg), force)
    source_info = None
    if cfg.full_frame:  # the source is checked (SHA-256) before any work
        from talk3d.render.plate import find_source

        source_info = find_source(run.manifest, cfg.source)
    threads.start(cfg.threads)
    keep_freed_memory()
    size = int(cfg.size or run.model_config.out_res)
    timings = {"audio": 0.0, "model": 0.0, "write": 0.0, "mpi": 0.0}
    with tempfile.TemporaryDirectory(prefix="talk3d_render_") as tmpdir:
        t = time.perf_counter()
        if cfg.frames == "val":
            drive = _drive_val(run, cfg, Path(tmpdir))
        else:
            drive = _drive_from_audio(run, audio_path, cfg, float(cfg.fps or run.manifest.fps))
        timings["audio"] = time.perf_counter() - t
        extra, frame_size = _render_video(run, drive, out_path, cfg, size, timings, source_info)
    n = drive.frame_indices.size
    result = RenderResult(out_path=out_path, num_frames=n, fps=drive.fps, duration=drive.duration, size=size,
                          render_fps=n / max(timings["model"], 1e-9), extra_outputs=extra, timings=timings,
                          frame_size=frame_size)
    info(f"wrote {out_path}: {n} frames at {drive.fps:g} fps ({n / drive.fps:.2f} s, audio {drive.duration:.2f} s), "
         f"{frame_size[0]}x{frame_size[1]}{' stereo' if cfg.stereo else ''}"
         f"{' (full frame)' if cfg.full_frame else ''}, model {result.render_fps:.1f} frames/s")
    for name, p in extra.items():
        info(f"  {name}: {p}")
    return result


def _mpi_frames(cfg: RenderConfig, n: int) -> list[int]:
    """The output frames to export as MPIs (``--mpi-frames`` within the video)."""
    if cfg.mpi_dir is None:
        return []
    frames = sorted(i for i in cfg.mpi_frames if i < n)
    if not frames:
        raise UserError(f"--mpi-frames {','.join(map(str, cfg.mpi_frames))}: the video has only {n} frames "
                        f"(0-{n - 1}); choose frames in that range")
    if len(frames) < len(cfg.mpi_frames):
        warn(f"--mpi-frames beyond the last frame ({n - 1}) are skipped")
    return frames


class _Outputs:
    """The files one render writes: the video, and with their options the depth video, the
    RGBA frames and the MPIs. Enter it in an :class:`contextlib.ExitStack`."""

    def __init__(self, stack: contextlib.ExitStack, out_path: Path, drive: Drive, cfg: RenderConfig,
                 near_far: tuple[float, float], run, source_info=None):
        self.cfg, self.near_far, self.extra = cfg, near_far, {}
        # on a CPU the cores are rendering: the encoders and the plate's decoder get one thread each
        codec = 1 if next(run.avatar.parameters()).device.type == "cpu" else None
        self.video = stack.enter_context(VideoWriter(out_path, drive.fps, audio=drive.mux_audio, quality=cfg.quality,
                                                     threads=codec))
        self.full = (FullFrameOutput(stack, run, drive.plate, source_info, out_path.parent.resolve(), codec)
                     if drive.plate is not None else None)  # after the writer made the output's folder
        self.depth = self.alpha = None
        if cfg.depth:
            self.extra["depth"] = outputs.depth_path(out_path)
            self.depth = stack.enter_context(VideoWriter(self.extra["depth"], drive.fps, audio=drive.mux_audio,
                                                         quality=cfg.quality, threads=codec))
        if cfg.alpha:
            self.extra["alpha"] = outputs.alpha_dir(out_path)
            self.alpha = stack.enter_context(atomic_dir(self.extra["alpha"]))

    def prepare(self, res: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """The torch part of writing a batch of :func:`_forward` outputs (on the rendering thread):
        uint8 frames ``(B, H, W, 3)`` and what the options need, as numpy arrays."""
        batch = {"rgb": outputs.to_uint8(res["rgb"])}
        if self.full is not None:
            batch["person"] = res["alpha_c"][:, 0].float().cpu().numpy()
        if self.depth is not None:
            dmap = outputs.colorize_depth(res["depth"], res["alpha"], *self.near_far)
            batch["depth"] = outputs.to_uint8(resize(dmap, res["rgb"].shape[-1]))
        if self.alpha is not None:
            batch["rgba"] = outputs.to_uint8(outputs.straight_rgba(res["fg_c"], res["alpha_c"]))
        return batch

    def write(self, first: int, batch: dict[str, np.ndarray]) -> None:
        """Write a batch from :meth:`prepare` whose first output frame is ``first`` (numpy, cv2 and
        the encoders' pipes only: it may run on a thread beside the next batch's rendering)."""
        frames = batch["rgb"]
        if self.full is not None:
            frames = self.full.frames(frames, batch["person"])
        for img in frames:
            self.video.write(img)
        for img in batch.get("depth", ()):
            self.depth.write(img)
        if "rgba" in batch:
            outputs.write_rgba_frames(self.alpha, first, batch["rgba"])

    def export_mpi(self, avatar, frame: int, cam: torch.Tensor, k: torch.Tensor, cond: dict[str, torch.Tensor]) -> None:
        """The MPI of output frame ``frame`` (conditioning ``cond`` of batch 1, camera ``cam (4, 4)``)."""
        self.extra["mpi"] = Path(self.cfg.mpi_dir)
        _export_frame_mpi(avatar, cam, k, cond, self.cfg, *self.near_far, self.extra["mpi"] / f"frame_{frame:06d}")


def _render_video(run, drive: Drive, out_path: Path, cfg: RenderConfig, size: int,
                  timings: dict[str, float], source_info=None) -> tuple[dict[str, Path], tuple[int, int]]:
    """Render every frame of ``drive`` into the outputs; adds the seconds spent to ``timings``
    and returns the extra outputs written (``depth``, ``alpha``, ``mpi``) and the video's
    ``(width, height)``. ``source_info``: the checked source video of a full-frame render."""
    from talk3d.model.drive import DrivingClip, forward_frames

    avatar, mcfg = run.avatar, run.model_config
    avatar.precision = cfg.precision
    device = next(avatar.parameters()).device
    n = drive.frame_indices.size
    mpi_frames = _mpi_frames(cfg, n)
    k = torch.as_tensor(np.asarray(run.manifest.intrinsics, dtype=np.float32))
    radius = float(np.linalg.norm(np.maximum(np.abs(mcfg.box_min), np.abs(mcfg.box_max))))
    clip = DrivingClip.from_arrays(mcfg, drive.features, drive.feature_rate, drive.fps, drive.blink, drive.head,
                                   drive.torso, run.lip_prior if drive.phones is not None else None, drive.phones)
    with contextlib.ExitStack() as stack:
        out = _Outputs(stack, out_path, drive, cfg, box_near_far(drive.cameras[0], radius=radius), run,
                       source_info)
        # pasting and encoding overlap the next batch's rendering; one batch in flight (memory
        # bounded, errors surface at once); shut down before the outputs close (LIFO)
        writer = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="talk3d-write"))
        pending: Future | None = None

        def timed_write(first: int, batch: dict[str, np.ndarray]) -> None:
            t0 = time.perf_counter()
            out.write(first, batch)
            timings["write"] += time.perf_counter() - t0  # on the writer thread, overlapping the model

        bar = stack.enter_context(make_progress())
        task = bar.add_task(f"rendering {out_path.name}", total=n, status="")

        def timed_forward(c: torch.Tensor, kk: torch.Tensor, cond: dict[str, torch.Tensor]) -> dict:
            t0 = time.perf_counter()
            res = _forward(avatar, c, kk, cond, cfg, size)
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings["model"] += time.perf_counter() - t0  # the model alone: what "frames/s" reports
            return res

        for fb in forward_frames(avatar, clip, drive.frame_indices, drive.cameras, k,
                                 cfg.batch or (8 if device.type == "cuda" else 4), forward=timed_forward,
                                 before_batch=threads.rebalance):
            batch = out.prepare(fb.out)
            if pending is not None:
                pending.result()
            pending = writer.submit(timed_write, fb.positions.start, batch)
            for f in range(fb.positions.start, fb.positions.stop):
                if f in mpi_frames:
                    t = time.perf_counter()
                    j = f - fb.positions.start
                    out.export_mpi(avatar, f, fb.cameras[j], k, {kk: v[j:j + 1] for kk, v in fb.cond.items()})
                    timings["mpi"] += time.perf_counter() - t
            bar.update(task, advance=fb.positions.stop - fb.positions.start,
                       status=f"{fb.positions.stop / max(timings['model'], 1e-9):.1f} frames/s")
            del fb  # the next batch's forward pass does not need this one's outputs alive
        if pending is not None:
            pending.result()
    width = 2 * size if cfg.stereo else size
    return out.extra, (out.full.placement.frame_size if out.full is not None else (width, size))


@torch.no_grad()
def _forward(avatar, cams: torch.Tensor, k: torch.Tensor, cond: dict[str, torch.Tensor], cfg: RenderConfig,
             size: int) -> dict[str, torch.Tensor]:
    """Run the avatar for one batch; with stereo, both eyes in one pass and joined side by side.

    Returns ``rgb (B, 3, H, W')`` (W' = 2W for stereo), ``depth``/``alpha (B, 1, h, w')`` and the
    centre/left-eye premultiplied foreground ``fg_c (B, 3, H, W)`` and ``alpha_c (B, 1, H, W)``
    for RGBA frames.
    """
    b = cams.shape[0]
    kk = k.to(cams).expand(b, 3, 3)  # (B, 3, 3) or (3, 3)
    if cfg.stereo:
        left, right = paths.stereo_pair(cams, cfg.ipd)
        cams2 = torch.cat([left, right], 0)
        cond2 = {n: torch.cat([v, v], 0) for n, v in cond.items()}
        out = avatar(cams2, kk.repeat(2, 1, 1), cond2, motion_scale=cfg.motion_scale, out_size=size)
        sbs = {n: outputs.side_by_side(out[n][:b], out[n][b:]) for n in ("rgb", "depth", "alpha")}
        sbs["fg_c"], sbs["alpha_c"] = out["rgb_fg"][:b], out["alpha_hr"][:b]
        return sbs
    out = avatar(cams, kk, cond, motion_scale=cfg.motion_scale, out_size=size)
    return {"rgb": out["rgb"], "depth": out["depth"], "alpha": out["alpha"], "fg_c": out["rgb_fg"],
            "alpha_c": out["alpha_hr"]}


def _export_frame_mpi(avatar, cam: torch.Tensor, k: torch.Tensor, cond: dict[str, torch.Tensor],
                      cfg: RenderConfig, near: float, far: float, folder: Path) -> None:
    """Export one frame's radiance field as an MPI seen from ``cam`` ``(4, 4)``."""
    from talk3d.render.field import avatar_field, avatar_torso_layer

    field, size, background = avatar_field(avatar, cond, cfg.motion_scale, cfg.mpi_size)
    torso = avatar_torso_layer(avatar, cam, cond, size)  # image torso mode only
    mpi = export_mpi(field, cam, k, size, near, far, layers=cfg.mpi_layers, samples=cfg.mpi_samples,
                     background=background, extra_layers=[torso] if torso is not None else [])
    save_mpi(folder, mpi)
