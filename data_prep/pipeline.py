"""`talk3d prep`: video -> tracked dataset (format in :mod:`talk3d.dataset`).

Steps (each skipped when its outputs exist, each file written atomically):

1. probe and validate the input (ffmpeg), 2. FaceMesh on every frame (``.prep/track_*``),
3. fixed square crop, 4. canonical shape + landmark head poses (``landmarks.npy``, ``poses.npy``
...), 5. frames, masks and background plate, 6. photometric pose refinement (``poses.npy``),
7. torso offsets, 8. audio + log-mel, 9. blink, 10. previews, 11. ``manifest.json`` (its
presence marks a complete dataset; ``.prep/`` is then removed).

Output-folder rule: a new or empty folder is used; a folder holding an unfinished prep
(``.prep/state.json``) of the same source file (SHA-256) and settings is resumed; a complete
dataset, an unfinished prep of another source/settings, or any other non-empty folder is
refused unless ``force`` (which starts over; non-dataset folders are never deleted). On an
error a folder this call created is removed; on Ctrl-C it is kept so a rerun resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from talk3d.camera import camera_angles, focal_pixels_from_35mm
from talk3d.console import NativeStderrToLog, info, make_progress, warn
from talk3d.dataset import (
    DATASET_ENTRIES,
    MANIFEST,
    Manifest,
    frame_name,
    split_frames,
    validate,
    write_manifest,
)
from talk3d.errors import UserError
from talk3d.folders import (
    MARKER,
    check_separate,
    claim_output,
    commit_staged,
    finish_interrupted_swap,
    is_empty,
    plain_scratch_folder,
    read_marker,
    write_marker,
)
from talk3d.io import (
    atomic_path,
    close_file_logs,
    need_free_space,
    read_json_dict,
    read_npy,
    remove_stale_temporaries,
    remove_tree,
    setup_file_log,
    sha256_file,
    write_json,
    write_npy,
)
from talk3d.video import FrameReader, VideoInfo, probe_video
from talk3d_prep import track as track_mod
from talk3d_prep.frames import write_frames_and_masks
from talk3d_prep.preview import draw_tile, write_contact_sheet, write_pose_plot
from talk3d_prep.split import Split, tail_split, turned_split

WORK = ".prep"


@dataclass
class PrepConfig:
    """Settings of `talk3d prep`."""

    size: int = 512
    """Side of the square output frames in pixels."""
    fps: float = 25.0
    """Output frame rate; the video is resampled to it (constant frame rate)."""
    audio: Path | None = None
    """Audio file used instead of the video's own track (required when the video has none)."""
    max_side: int = 1280
    """Larger videos are downscaled while decoding so their long side is at most this."""
    crop_scale: float = 2.8
    """Crop side as a multiple of the median face height (chin to forehead), at most the frame's short side."""
    crop_padding: bool = False
    """Keep the full crop side past the frame edges, padding by edge replication (default: shrink to fit)."""
    focal: float = 3.0
    """Normalised focal length (fx / side) assumed on the head-and-shoulders framing (~19 degree field
    of view) when the camera's own focal length is unknown."""
    focal_35mm: float | None = None
    """The camera's 35 mm-equivalent focal length, when known (phone EXIF, lens spec): used instead of
    ``focal``. Defined on the image diagonal (43.27 mm full frame); a right focal improves pose accuracy."""
    photometric_poses: bool = True
    """Refine the landmark head poses by aligning the textured rigid face to the frames
    (:mod:`talk3d.face.photometric`): removes the landmark detector's pitch bias."""
    refined_smooth_frames: int = 5
    """Savitzky-Golay window (frames) applied to the photometrically refined poses; <= 2 disables it."""
    smooth_seconds: float = 0.75
    """Savitzky-Golay window for head-rotation smoothing in seconds (19 frames at 25 fps); 0 disables it."""
    translation_smooth_frames: int = 5
    """Savitzky-Golay window (frames) for the re-solved head translation; <= 2 disables it."""
    holdout: str = "tail"
    """Which frames are held out for evaluation: ``tail`` (the last ``val_fraction``) or ``turned``
    (the head poses furthest from the median yaw, :mod:`talk3d_prep.split`)."""
    val_fraction: float = 0.1
    """Fraction of frames at the end held out for evaluation (``holdout="tail"``)."""
    turned_fraction: float = 0.15
    """Fraction of frames held out with ``holdout="turned"``."""
    max_missing: float = 0.05
    """Largest fraction of frames without a detected face (shorter gaps are interpolated)."""
    min_duration: float = 3.0
    """Shortest accepted video in seconds."""
    recommended_duration: float = 60.0
    """Videos shorter than this get a warning (3-5 minutes give the best avatars)."""
    jpeg_quality: int = 95
    """JPEG quality of the frames."""
    segmentation_size: int = 256
    """Resolution the person segmentation runs at (its model works at 256x256)."""
    segmentation_stride: int = 2
    """Segment every n-th frame and blend the person probability in between (1 = every frame)."""
    background_samples: int = 40
    """Frames sampled (evenly) for the median background plate."""
    preview_frames: int = 8
    """Frames shown in preview.png."""

    def with_holdout_fraction(self, fraction: float) -> PrepConfig:
        """A copy holding out ``fraction`` of the frames with this config's ``holdout`` kind."""
        name = "turned_fraction" if self.holdout == "turned" else "val_fraction"
        return dataclasses.replace(self, **{name: float(fraction)})

    def settings(self) -> dict[str, Any]:
        """JSON-able settings (recorded in the manifest and used to decide resuming)."""
        d = dataclasses.asdict(self)
        d["audio"] = str(self.audio) if self.audio is not None else None
        return d


# --------------------------------------------------------------------------------------
# output folder handling


@dataclass
class PrepFolders:
    """Where a prep writes: the dataset folder, its scratch folder and the dataset being built."""

    out: Path
    """The dataset folder the user named (``-o``)."""
    created: bool
    """The folder did not exist, or was empty, before this prep (a failure then empties it again)."""
    existed: bool
    """The folder existed before this prep."""
    had_marker: bool = False
    """The folder held talk3d's marker before this prep (a failure removes one it added)."""
    resumed: bool = False
    """An unfinished prep of the same video and settings was found: its finished steps are kept
    whatever happens."""

    @property
    def work(self) -> Path:
        """Scratch folder (``.prep``): resume state and intermediate results."""
        return self.out / WORK

    @property
    def stage(self) -> Path:
        """The new dataset, built here and moved into ``out`` only once complete."""
        return self.out / WORK / "dataset"


def _prepare_out_dir(out_dir: Path, source_hash: str, settings: dict[str, Any], force: bool) -> PrepFolders:
    """Check the output folder, then create the scratch folder or resume the one there.

    A new or empty folder is used; a talk3d dataset folder is accepted (a complete dataset only
    with ``force``: the new one replaces it once complete); anything else is refused. An
    unfinished prep of the same source and settings resumes; one of another source or settings
    is started over only with ``force``; an unreadable resume state is started over.
    """
    existed = out_dir.exists()
    created = not claim_output(out_dir, "dataset", "prep")
    folders = PrepFolders(out_dir, created=created, existed=existed, had_marker=read_marker(out_dir) is not None)
    plain_scratch_folder(folders.work)
    finish_interrupted_swap(out_dir, folders.stage, "dataset", DATASET_ENTRIES)
    if (out_dir / MANIFEST).is_file() and not force:
        raise UserError(f"'{out_dir}' already holds a prepared dataset; use --force to rebuild it (it is "
                        f"replaced only once the new one is complete) or choose another -o")
    state = read_json_dict(folders.work / "state.json")
    if state is None and folders.work.exists():
        if (folders.work / "state.json").exists():
            warn(f"the resume state of the unfinished prep in '{out_dir}' is unreadable: starting that prep over")
        remove_tree(folders.work)
    elif state is not None and (state.get("source_sha256"), state.get("settings")) != (source_hash, settings):
        if not force:
            what = "another video" if state.get("source_sha256") != source_hash else "other settings"
            raise UserError(f"'{out_dir}' holds an unfinished prep of {what}; rerun with the same video and "
                            f"settings to resume it, or use --force to start over")
        remove_tree(folders.work)
    elif state is not None:
        info(f"resuming the unfinished prep in '{out_dir}'")
        folders.resumed = True
    folders.stage.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folders.stage)
    write_json(folders.work / "state.json", {"source_sha256": source_hash, "settings": settings})
    write_marker(out_dir, "dataset", DATASET_ENTRIES)
    return folders


def _clean_failed(folders: PrepFolders) -> None:
    """Remove what a failed prep wrote: its scratch folder (unless it resumed earlier work, which
    is kept), and in a folder it made, the rest too."""
    close_file_logs()
    if folders.resumed:
        return
    remove_tree(folders.work)
    if not folders.had_marker:
        remove_tree(folders.out / MARKER)
    if not folders.created:
        return
    if not folders.existed and is_empty(folders.out):
        folders.out.rmdir()


def _estimated_bytes(vinfo: VideoInfo, config: PrepConfig) -> float:
    """Disk space a prep needs: frames (JPEG) and masks (PNG), the scratch copies, audio."""
    frames = vinfo.duration * config.fps
    per_frame = config.size ** 2 * 0.45 + 8192
    return frames * per_frame + vinfo.duration * 16000 * 2 * 2 + 50e6


# --------------------------------------------------------------------------------------
# steps


def _check_input(video: Path, config: PrepConfig) -> VideoInfo:
    """Probe the video and the ``--audio`` file before any work (one-line errors)."""
    from talk3d.media import read_audio

    vinfo = probe_video(video, config.max_side)
    if vinfo.duration < config.min_duration:
        raise UserError(f"'{video}' is {vinfo.duration:.1f} s long; prep needs at least {config.min_duration:.0f} s "
                        f"of video (3-5 minutes recommended)")
    if config.audio is not None:
        if not Path(config.audio).is_file():
            raise UserError(f"audio file '{config.audio}' does not exist; fix the --audio path")
        read_audio(config.audio, max_seconds=2.0)  # unreadable or soundless: one line, before any work
    if not vinfo.has_audio and config.audio is None:
        raise UserError(f"'{video}' has no audio track; add one with --audio FILE (the speech of this video)")
    return vinfo


def _step_track(work: Path, reader: FrameReader) -> track_mod.TrackResult:
    done = work / "track.json"
    if read_json_dict(done) is not None:
        try:
            res = track_mod.TrackResult(read_npy(work / "track_landmarks.npy"), read_npy(work / "track_valid.npy"),
                                        read_npy(work / "track_faces.npy"))
            info("tracking: done already (resuming)")
            return res
        except UserError:
            warn("the saved tracking of the interrupted prep is damaged: tracking again")
    t0 = time.perf_counter()
    res = track_mod.track_frames(reader, reader.expected_frames())
    write_npy(work / "track_landmarks.npy", res.landmarks)
    write_npy(work / "track_valid.npy", res.valid)
    write_npy(work / "track_faces.npy", res.num_faces)
    write_json(done, {"num_frames": int(res.valid.size), "seconds": time.perf_counter() - t0})
    return res


def _step_poses(out: Path, work: Path, lm: np.ndarray, valid: np.ndarray, config: PrepConfig,
                k: np.ndarray) -> dict[str, float]:
    from talk3d.face import build_canonical, estimate_pose, pose_stats, refit_translation, smooth_poses

    names = ("landmarks.npy", "landmark_valid.npy", "canonical_landmarks.npy", "poses.npy")
    stats = read_json_dict(work / "pose_stats.json")
    if stats is not None and all((out / n).is_file() for n in names):
        info("poses: done already (resuming)")
        return stats
    canonical = build_canonical(lm[valid])
    raw = estimate_pose(lm, canonical, k, config.size)
    window = 2 * int(config.smooth_seconds * config.fps / 2 + 0.5) + 1
    poses = smooth_poses(raw, window) if config.smooth_seconds > 0 else raw
    poses = refit_translation(poses, lm, canonical, k, config.size, config.translation_smooth_frames)
    stats = pose_stats(lm[valid], canonical, poses[valid], k, config.size)
    stats["rotation_step_median_deg_raw"] = pose_stats(lm[valid], canonical, raw[valid], k, config.size)[
        "rotation_step_median_deg"]
    dist = np.linalg.norm(poses[:, :3, 3], axis=1)
    stats["camera_distance"] = float(dist.mean())
    write_npy(out / "landmarks.npy", lm.astype(np.float32))
    write_npy(out / "landmark_valid.npy", valid.astype(bool))
    write_npy(out / "canonical_landmarks.npy", canonical)
    write_npy(out / "poses.npy", poses.astype(np.float32))
    write_npy(work / "poses_landmarks.npy", poses.astype(np.float32))
    write_json(work / "pose_stats.json", stats)
    return stats


def _step_refine_poses(out: Path, work: Path, lm: np.ndarray, valid: np.ndarray, config: PrepConfig,
                       k: np.ndarray) -> dict[str, float]:
    """Photometric pose refinement (after the frames are written); returns its figures."""
    from talk3d.face import pose_stats, smooth_poses
    from talk3d.face.photometric import refine_poses_photometric

    stats_path = work / "pose_refine.json"
    done = read_json_dict(stats_path)
    if done is not None:
        info("pose refinement: done already (resuming)")
        return done
    landmark_poses = read_npy(work / "poses_landmarks.npy")
    canonical = read_npy(out / "canonical_landmarks.npy")
    n = landmark_poses.shape[0]

    def load(indices: Sequence[int]) -> np.ndarray:
        return np.stack([_read_frame(out, int(i)) for i in indices])

    with make_progress() as bar:
        task = bar.add_task("refining poses", total=None, status="")

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        poses, stats = refine_poses_photometric(load, n, landmark_poses, canonical, k, progress=progress)
    if config.refined_smooth_frames > 2:
        poses = smooth_poses(poses, config.refined_smooth_frames)
    info(f"pose refinement: photometric RMS {stats['photometric_rms_before']:.2f} -> "
         f"{stats['photometric_rms_after']:.2f} (0-255), rotation change median "
         f"{stats['photometric_rotation_change_median_deg']:.2f} deg, max "
         f"{stats['photometric_rotation_change_max_deg']:.2f} deg, "
         f"{stats['photometric_frames_kept_landmark_pose']} frames kept their landmark pose")
    stats.update(pose_stats(lm[valid], canonical, poses[valid], k, config.size))
    stats["camera_distance"] = float(np.linalg.norm(poses[:, :3, 3], axis=1).mean())
    write_npy(out / "poses.npy", poses.astype(np.float32))
    write_json(stats_path, stats)
    return stats


def _step_audio(out: Path, video: Path, config: PrepConfig, num_frames: int) -> None:
    from talk3d.audio import compute_logmel
    from talk3d.media import AUDIO_RATE, read_audio, write_wav
    from talk3d.phonemes import phone_rows

    if all((out / name).is_file() for name in ("audio.wav", "audio_feats.npy", "phonemes.npy")):
        info("audio: done already (resuming)")
        return
    source = Path(config.audio) if config.audio is not None else video
    audio = read_audio(source, AUDIO_RATE)
    target = int(round(num_frames / config.fps * AUDIO_RATE))
    if abs(audio.size - target) > 0.5 * AUDIO_RATE:
        warn(f"audio ({audio.size / AUDIO_RATE:.1f} s) and video ({target / AUDIO_RATE:.1f} s) lengths differ; "
             f"the audio is {'trimmed' if audio.size > target else 'padded with silence'} to the video")
    audio = np.pad(audio[:target], (0, max(0, target - audio.size)))
    write_wav(out / "audio.wav", audio, AUDIO_RATE)
    write_npy(out / "audio_feats.npy", compute_logmel(audio).astype(np.float16))
    # phones of the samples as stored: what render and fit read back from audio.wav
    write_npy(out / "phonemes.npy", phone_rows(read_audio(out / "audio.wav", AUDIO_RATE)).astype(np.float16))


def _step_torso(out: Path, work: Path, num_frames: int, train: np.ndarray) -> dict[str, float]:
    from talk3d_prep.torso import track_torso

    stats_path = work / "torso.json"
    done = read_json_dict(stats_path)
    if done is not None and (out / "torso_offsets.npy").is_file():
        info("torso offsets: done already (resuming)")
        return done
    offsets, stats = track_torso(out, num_frames, train)
    if not stats.get("torso_tracked"):
        warn("no steady torso region in the frames: the torso is not tracked (offsets 0)")
    write_npy(out / "torso_offsets.npy", offsets)
    write_json(stats_path, stats)
    return stats


def _step_blink(out: Path, lm: np.ndarray) -> dict[str, float]:
    from talk3d.face import eye_aspect_ratio, eye_closure

    ear = eye_aspect_ratio(lm)
    ear_open = float(np.percentile(ear, 90))
    ear_closed = 0.35 * ear_open
    if not (out / "blink.npy").is_file():
        write_npy(out / "blink.npy", eye_closure(lm, ear_open, ear_closed))
    return {"ear_open": ear_open, "ear_closed": ear_closed}


def _step_preview(out: Path, lm: np.ndarray, valid: np.ndarray, poses: np.ndarray, k: np.ndarray,
                  config: PrepConfig, held_out: np.ndarray) -> None:
    import cv2

    if (out / "preview.png").is_file() and (out / "poses.png").is_file():
        return
    n = lm.shape[0]
    tiles = []
    for i in np.unique(np.linspace(0, n - 1, min(config.preview_frames, n)).round().astype(int)):
        frame = _read_frame(out, int(i))
        labels = cv2.imread(str(out / "masks" / frame_name(int(i), "png")), cv2.IMREAD_UNCHANGED)
        caption = f"#{i}{'' if valid[i] else ' (interp.)'}{' val' if held_out[i] else ''}"
        tiles.append(draw_tile(frame, labels, lm[i], poses[i], k, caption))
    write_contact_sheet(out / "preview.png", tiles)
    write_pose_plot(out / "poses.png", poses, valid, config.fps, held_out)


# --------------------------------------------------------------------------------------
# entry point


def run_prep(video: Path, out_dir: Path, config: PrepConfig, force: bool = False) -> Manifest:
    """Turn a talking-head video into a dataset folder; return its manifest.

    Every input is checked before anything is written; the dataset is built in ``OUT/.prep``
    and moved into ``OUT`` only once complete (replacing, with ``force``, only the entries a
    previous prep wrote).

    mediapipe's native log lines go to ``prep.log``, not the terminal, whoever calls this (the
    CLI, the demo, a script): see :class:`talk3d.console.NativeStderrToLog`.

    Raises:
        UserError: bad input (message says what to do); the output folder is left as it was.
    """
    with NativeStderrToLog():
        return _run_prep(video, out_dir, config, force)


def _run_prep(video: Path, out_dir: Path, config: PrepConfig, force: bool) -> Manifest:
    """:func:`run_prep` while native lines are routed to the log."""
    video, out_dir = Path(video), Path(out_dir)
    if config.holdout not in ("tail", "turned"):
        raise UserError(f"holdout must be 'tail' or 'turned', not '{config.holdout}'")
    t_start = time.perf_counter()
    check_separate(out_dir, [("video", video), ("audio file", config.audio)])
    vinfo = _check_input(video, config)
    source_hash = sha256_file(video)
    settings = config.settings()
    need_free_space(str(out_dir), _estimated_bytes(vinfo, config), "this prep")
    folders = _prepare_out_dir(out_dir, source_hash, settings, force)
    try:
        setup_file_log(folders.stage, "prep")
        manifest = _build_dataset(video, vinfo, folders, config, source_hash, t_start)
        close_file_logs()
        commit_staged(out_dir, folders.stage, "dataset", DATASET_ENTRIES)
        remove_tree(folders.work)
        return manifest
    except KeyboardInterrupt:
        close_file_logs()
        raise
    except OSError as exc:  # a full disk or another file error: the finished steps stay for a resume
        close_file_logs()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"the disk holding '{out_dir}' is full: this prep needs about "
                            f"{_estimated_bytes(vinfo, config) / 1e6:,.0f} MB; free some space and run it "
                            f"again") from None
        raise
    except BaseException:
        _clean_failed(folders)
        raise


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the seconds the block takes to ``timings[key]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0


def _announce(video: Path, vinfo: VideoInfo, folders: PrepFolders, config: PrepConfig) -> None:
    """The prep's first log lines: what is read, and warnings about the video."""
    info(f"prep '{video}' -> '{folders.out}' ({vinfo.width}x{vinfo.height}, {vinfo.duration:.1f} s, "
         f"rotation {vinfo.rotation:g}, audio {'from ' + str(config.audio) if config.audio else 'from the video'})")
    if vinfo.downscaled:
        info(f"large video: decoding at {vinfo.width}x{vinfo.height} (long side <= {config.max_side})")
    if vinfo.duration < config.recommended_duration:
        warn(f"the video is only {vinfo.duration:.0f} s long; avatars improve with 3-5 minutes of footage")


def _filled_landmarks(raw: Any, config: PrepConfig) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks with short gaps interpolated, and the frames that show several faces; warns of both."""
    multi = raw.num_faces > 1
    if multi.any():
        warn(f"{int(multi.sum())} frames show more than one face (frames "
             f"{track_mod.format_ranges(track_mod.frame_ranges(multi))}); tracking the largest")
    filled = track_mod.fill_gaps(raw.landmarks, raw.valid, config.max_missing)
    if (~raw.valid).any():
        warn(f"no face in {int((~raw.valid).sum())} frames "
             f"({track_mod.format_ranges(track_mod.frame_ranges(~raw.valid))}); landmarks interpolated there")
    return filled, multi


def _crop_and_camera(filled: np.ndarray, valid: np.ndarray, vinfo: VideoInfo,
                     config: PrepConfig) -> tuple[list[float], np.ndarray, float, np.ndarray]:
    """The fixed crop box, the landmarks in crop pixels, the normalised focal length and the
    intrinsics ``(3, 3)``."""
    crop_box = list(track_mod.choose_crop(filled, valid, vinfo.width, vinfo.height, config.crop_scale,
                                          allow_padding=config.crop_padding))
    lm = track_mod.landmarks_to_crop(filled, crop_box, config.size)
    if config.focal_35mm is not None:  # the camera's own focal, on the (decoded) image diagonal
        focal = focal_pixels_from_35mm(config.focal_35mm, vinfo.width, vinfo.height) / crop_box[2]
    else:  # defined on the framing's side: a crop shrunk to fit keeps the perspective
        focal = config.focal * track_mod.framing_side(filled, valid, config.crop_scale) / crop_box[2]
    k = np.array([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]], np.float32)
    return crop_box, lm, focal, k


def _choose_split(poses: np.ndarray, config: PrepConfig) -> tuple[Split, np.ndarray]:
    """The held-out split of ``config.holdout`` and the camera angles ``(N, 3)`` degrees it used."""
    import torch

    angles = camera_angles(torch.as_tensor(poses, dtype=torch.float64)).numpy()
    n = poses.shape[0]
    if config.holdout == "turned":
        return turned_split(angles[:, 0], config.fps, config.turned_fraction), angles
    return tail_split(n, config.val_fraction), angles


def _build_dataset(video: Path, vinfo: VideoInfo, folders: PrepFolders, config: PrepConfig, source_hash: str,
                   t_start: float) -> Manifest:
    """Run (or resume) every step into ``folders.stage``; write and validate its manifest."""
    out, work = folders.stage, folders.work
    _announce(video, vinfo, folders, config)
    timings: dict[str, float] = {}
    with _timed(timings, "track_s"):
        raw = _step_track(work, FrameReader(vinfo, config.fps))
    n = int(raw.valid.size)
    filled, multi = _filled_landmarks(raw, config)
    crop_box, lm, focal, k = _crop_and_camera(filled, raw.valid, vinfo, config)
    with _timed(timings, "poses_s"):
        pstats = _step_poses(out, work, lm, raw.valid, config, k)
    with _timed(timings, "frames_masks_s"):
        unseen = _step_frames(out, work, vinfo, config, crop_box, lm)
    if config.photometric_poses:
        with _timed(timings, "pose_refine_s"):
            pstats.update(_step_refine_poses(out, work, lm, raw.valid, config, k))
    split, angles = _choose_split(read_npy(out / "poses.npy"), config)
    train, held = split_frames(n, split.train_end, split.val_runs, split.margin_runs)
    held_mask = np.zeros(n, bool)
    held_mask[held] = True
    with _timed(timings, "torso_s"):
        torso_stats = _step_torso(out, work, n, train)
    with _timed(timings, "audio_s"):
        _step_audio(out, video, config, n)
    blink_stats = _step_blink(out, lm)
    with _timed(timings, "preview_s"):
        _step_preview(out, lm, raw.valid, read_npy(out / "poses.npy"), k, config, held_mask)
    distance = float(pstats.pop("camera_distance"))
    stats: dict[str, Any] = {
        "tracking_rate": float(raw.valid.mean()),
        "frames_without_face": int((~raw.valid).sum()),
        "frames_with_several_faces": int(multi.sum()),
        **pstats,
        "background_unseen_fraction": float(unseen),
        **blink_stats,
        **torso_stats,
        "source_rotation_deg": vinfo.rotation,
        "source_fps": vinfo.fps,
        "source_duration_s": vinfo.duration,
        **{k_: round(v, 3) for k_, v in timings.items()},
        "total_s": round(time.perf_counter() - t_start, 3),
    }
    manifest = Manifest(
        num_frames=n, fps=float(config.fps), size=int(config.size), intrinsics=k.tolist(), train_end=split.train_end,
        holdout=config.holdout, val_runs=split.val_runs, margin_runs=split.margin_runs,
        train_angles={name: [float(angles[train, j].min()), float(angles[train, j].max())]
                      for j, name in enumerate(("yaw", "pitch"))},
        source=str(video.resolve()), source_sha256=source_hash, source_size=[vinfo.width, vinfo.height],
        crop_box=[float(v) for v in crop_box], crop_exact=True, audio_sample_rate=16000, audio_feature_rate=100.0,
        audio_feature_dim=80, has_phonemes=True, scene_scale=float(focal * config.size / distance),
        camera_distance=distance, frames_format="jpg", prep_settings=config.settings(), stats=stats,
    )
    write_manifest(out, manifest)
    validate(out, manifest)
    info(f"prep done: {n} frames, {100 * stats['tracking_rate']:.1f}% tracked, reprojection RMS "
         f"{stats['reprojection_rms_px']:.2f} px, median rotation step {stats['rotation_step_median_deg']:.3f} deg, "
         f"{stats['total_s']:.1f} s")
    return manifest


def _step_frames(out: Path, work: Path, vinfo: VideoInfo, config: PrepConfig, crop_box: list[float],
                 lm: np.ndarray) -> float:
    """Cropped frames, masks and the background plate; returns the plate's never-seen fraction."""
    import cv2

    done = read_json_dict(work / "frames.json")
    if done is not None and (out / "background.png").is_file() and "background_unseen_fraction" in done:
        info("frames + masks: done already (resuming)")
        return float(done["background_unseen_fraction"])
    reader = FrameReader(vinfo, config.fps, crop=tuple(crop_box), out_size=config.size)
    plate, unseen = write_frames_and_masks(reader, out, lm, config.size, config.jpeg_quality,
                                           config.segmentation_size, config.background_samples,
                                           config.segmentation_stride)
    with atomic_path(out / "background.png") as tmp:
        if not cv2.imwrite(str(tmp), plate[..., ::-1]):
            raise OSError(errno.EIO, "could not write the background plate", str(out / "background.png"))
    write_json(work / "frames.json", {"num_frames": int(lm.shape[0]), "background_unseen_fraction": unseen})
    return float(unseen)


def _read_frame(out: Path, index: int) -> np.ndarray:
    """RGB ``(H, W, 3)`` uint8 frame ``index`` written by this prep."""
    import cv2

    img = cv2.imread(str(out / "frames" / frame_name(index, "jpg")))
    if img is None:
        raise OSError(f"could not read frame {index} of '{out}'")
    return img[..., ::-1]
