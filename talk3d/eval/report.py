"""``talk3d eval``: run the suites on a fitted run and write the report folder.

Output folder (``RUN_DIR/eval`` unless ``out`` is given)::

    report.json       every figure (machine-readable)
    report.md         the same as tables
    views.png         detection rate / pose error / identity distance per view angle
    mouth.png         mouth opening over time vs ground truth and vs voice activity
    training.png      training curves from the run's metrics.jsonl
    side_by_side.mp4  ground truth | render | yaw 30 | depth, with audio
    eval.log          the log of this evaluation
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talk3d.checks import check_fields
from talk3d.console import info, warn
from talk3d.dataset import TalkingHeadDataset
from talk3d.device import machine_info, resolve_device
from talk3d.errors import UserError
from talk3d.eval import dlib_face, plots, suites
from talk3d.eval.drive_video import check_driving_clip, video_driven
from talk3d.eval.driver import RunDriver
from talk3d.eval.full_frame import full_frame, write_picture
from talk3d.eval.turned import turned_views
from talk3d.folders import (
    MARKER,
    check_separate,
    claim_output,
    commit_staged,
    plain_scratch_folder,
    write_marker,
)
from talk3d.io import close_file_logs, remove_tree, setup_file_log, write_json

# What an evaluation writes into its report folder (what --force replaces; nothing else).
EVAL_ENTRIES = ("report.json", "report.md", "views.png", "views_frames.png", "turned.png", "mouth.png", "drive.png",
                "training.png", "full_frame.png", "side_by_side.mp4", "eval.log")
STAGING = ".eval-new"
EVAL_BOUNDS = {"max_val_frames": (1, 10**6), "view_frames": (1, 10**5), "max_cross_seconds": (0.1, 3600),
               "speed_frames": (1, 10**4), "batch_size": (1, 4096)}
DEFAULT_VIEWS = [(-30.0, 0.0), (-15.0, 0.0), (15.0, 0.0), (30.0, 0.0), (0.0, -15.0), (0.0, 15.0)]


@dataclass
class EvalConfig:
    """Settings of ``talk3d eval``."""

    audio: list[str] = field(default_factory=list)
    """Driving audio files for the cross-driven suite (none: the suite is skipped)."""
    drive_videos: list[str] = field(default_factory=list)
    """Driving clips with video: the avatar's mouth against the speaker's own tracked mouth
    (:mod:`talk3d.eval.drive_video`; none: the suite is skipped)."""
    out: str | None = None
    """Output folder; default ``RUN_DIR/eval``."""
    device: str = "auto"
    """Torch device ('auto' picks CUDA when present)."""
    max_val_frames: int = 50
    """Held-out frames evaluated in the self-driven suite (the first ones, contiguous)."""
    view_frames: int = 8
    """Held-out frames rendered per novel view."""
    views: list[tuple[float, float]] = field(default_factory=lambda: list(DEFAULT_VIEWS))
    """(yaw, pitch) degrees of the novel views."""
    max_cross_seconds: float = 6.0
    """Seconds of each driving audio rendered in the cross-driven suite."""
    speed_frames: int = 8
    """Frames timed for the render speed (after one warm-up frame)."""
    batch_size: int = 4
    """Frames per forward pass."""
    source: str | None = None
    """The source video for the full-frame figures when it has moved (default: the path prep
    recorded; the figures are skipped, with the reason, when it cannot be found)."""
    vad: str = "auto"
    """Voice activity detector: 'auto' (silero-vad when installed, else energy), 'silero', 'energy'."""
    lip_drive: str = "auto"
    """What drives the mouth (``talk3d.model.lip_prior.LIP_DRIVES``): ``auto`` = the phonetic lip
    prior on ``--audio``/``--drive-video``, the audio head on the held-out frames (as render)."""
    video: bool = True
    """Write the side-by-side video (renders the held-out frames once more at yaw 30)."""
    force: bool = False
    """Overwrite an existing report."""


def evaluate(run_dir: str | os.PathLike, config: EvalConfig, driver: Any = None) -> dict[str, Any]:
    """Evaluate a fitted run; write the report folder; return the report dict.

    Args:
        run_dir: folder written by ``talk3d fit``.
        config: :class:`EvalConfig`.
        driver: rendering adapter (tests pass a stand-in); default :class:`RunDriver`.
    Raises:
        UserError: missing run/dataset/audio, or an existing report without ``force``.
    """
    run_dir = Path(run_dir)
    try:
        check_fields(config, EVAL_BOUNDS, "--")
    except ValueError as exc:
        raise UserError(f"{str(exc).replace('_', '-')}; fix that option") from None
    out = Path(config.out) if config.out else run_dir / "eval"
    inputs = [("run folder", run_dir), *(("audio", a) for a in config.audio), *(("clip", c) for c in config.drive_videos)]
    check_separate(out, inputs, allowed=[run_dir / "eval"])
    had_report = claim_output(out, "eval", "eval")
    if (out / "report.json").exists() and not config.force:
        raise UserError(f"'{out}' already holds a report: pass --force to overwrite it or --out to write elsewhere")
    for a in config.audio:
        if not Path(a).is_file():
            raise UserError(f"driving audio '{a}' does not exist; give an existing audio file to --audio")
    for c in config.drive_videos:
        check_driving_clip(Path(c))
    if config.source is not None and not Path(config.source).is_file():
        raise UserError(f"--source '{config.source}' does not exist; give the moved copy of the source video")
    device = str(resolve_device(config.device))
    if driver is None:
        driver = RunDriver(run_dir, device, config.lip_drive)
    check_separate(out, [("dataset", driver.dataset_dir)])
    if not (driver.dataset_dir / "manifest.json").is_file():
        raise UserError(f"the run's dataset '{driver.dataset_dir}' is missing: the self-driven and view figures "
                        f"need its held-out frames; restore it at that path")
    plain_scratch_folder(out / STAGING)
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, "eval", EVAL_ENTRIES)
    try:
        return _evaluate(run_dir, out, config, driver, device)
    except BaseException:
        close_file_logs()
        remove_tree(out / STAGING)
        if not had_report:  # a folder this evaluation made (or found empty) is left as it was
            remove_tree(out / MARKER)
            if not existed and not any(out.iterdir()):
                out.rmdir()
        raise


def _evaluate(run_dir: Path, final_out: Path, config: EvalConfig, driver: Any, device: str) -> dict[str, Any]:
    """Run the suites into the staging folder and move the report into ``final_out``."""
    out = final_out / STAGING  # the report is built here, moved in only once complete
    remove_tree(out)
    out.mkdir(parents=True)
    setup_file_log(out, "eval")
    info(f"evaluating '{run_dir}' on {device}; report in '{final_out}'")
    t_start = time.perf_counter()
    dataset = TalkingHeadDataset(driver.dataset_dir)

    report: dict[str, Any] = {
        "run": str(run_dir), "step": getattr(driver, "step", None), "machine": machine_info(device),
        # what drives the mouth: the run's phonetic lip prior, or the model's audio-to-lip head
        "lip_drive": getattr(driver, "lip_drive", "auto"), "mouth_driven_by": _lip_drive(driver),
        "config": asdict(config), "optional_extra": {
            "dlib": dlib_face.available(), "silero_vad": _silero(),
        },
    }
    sd = suites.self_driven(driver, dataset, config.max_val_frames, config.batch_size)
    sd.figures.update(suites.fixed_pose_lip_sync(driver, sd.arrays["indices"], sd.arrays["open_gt"],
                                                 config.batch_size))
    report["self_driven"] = sd.figures
    info(f"self-driven: PSNR {_fmt(sd.figures['psnr'])}, SSIM {_fmt(sd.figures['ssim'], 3)}, "
         f"LMD mouth {_fmt(sd.figures['lmd_mouth'])}")

    ff = full_frame(dataset, sd.arrays, config.source)
    report["full_frame"] = ff.figures
    if ff.figures["available"]:
        info(f"full frame {ff.figures['frame_size'][0]}x{ff.figures['frame_size'][1]}: PSNR "
             f"{_fmt(ff.figures['psnr_full_frame'])} dB, seam step {_fmt(ff.figures['seam_step'])} "
             f"(source {_fmt(ff.figures['seam_step_source'])})")
    else:
        info(f"full-frame figures skipped: {ff.figures['reason']}")

    cross = [suites.cross_driven(driver, a, config.max_cross_seconds, config.batch_size, config.vad)
             for a in config.audio]
    report["cross_driven"] = [c.figures for c in cross]
    driven = [video_driven(driver, c, config.max_cross_seconds, config.batch_size) for c in config.drive_videos]
    report["video_driven"] = [figures for figures, _ in driven]

    reference = suites.identity_reference(dataset)
    nv = suites.novel_views(driver, dataset, list(config.views), config.view_frames, config.batch_size, reference)
    report["novel_views"] = nv.figures["views"]
    tv = turned_views(driver, dataset, config.batch_size)
    report["turned"] = tv.figures
    if tv.figures["available"]:
        r, b = tv.figures["render"], tv.figures["baseline"]
        info(f"turned held-out frames ({tv.figures['frames']}, up to {tv.figures['degrees_beyond_max']:.1f} degrees "
             f"beyond training): PSNR {_fmt(r['psnr'])} vs {_fmt(b['psnr'])} dB at the nearest training pose, "
             f"head {_fmt(r['head_psnr'])} vs {_fmt(b['head_psnr'])} dB")
    report["speed"] = suites.speed(driver, config.speed_frames).figures
    rows = plots.read_metrics_jsonl(run_dir / "metrics.jsonl")
    report["training"] = {"rows": len(rows), "last": rows[-1] if rows else None}

    plots.plot_views(report["novel_views"], out / "views.png")
    _plot_view_frames(sd.arrays["rgb"], nv.arrays, out / "views_frames.png")
    if tv.figures["available"]:
        _plot_turned(tv, out / "turned.png")
    plots.plot_mouth(driver.fps, sd.arrays, [(Path(c.figures["audio"]).name, c.arrays["opening"],
                                              c.arrays["speech"]) for c in cross], out / "mouth.png")
    report["training"]["plotted"] = plots.plot_training(rows, out / "training.png")
    files = ["report.json", "report.md", "views.png", "views_frames.png", "mouth.png", "training.png", "eval.log"]
    if tv.figures["available"]:
        files.append("turned.png")
    if ff.figures["available"]:
        write_picture(ff.arrays, ff.figures["crop_box"], out / "full_frame.png")
        files.append("full_frame.png")
    if driven:
        plots.plot_drive(driver.fps, [(Path(f["clip"]).name, a["speaker"], a["avatar"], f) for f, a in driven],
                         out / "drive.png")
        files.append("drive.png")
    if config.video:
        from talk3d.eval.video import write_side_by_side

        side = None
        if driver.audio_feats is not None:
            side = suites.render_all(driver, driver.audio_feats, driver.blink, driver.poses,
                                     sd.arrays["indices"], 30.0, 0.0, config.batch_size, "video yaw +30",
                                     torso=driver.torso_offsets, phones=driver.phones).rgb
        write_side_by_side(out / "side_by_side.mp4", sd.arrays["gt"], sd.arrays["rgb"], side, sd.arrays["depth"],
                           driver.fps, driver.dataset_dir / "audio.wav", sd.arrays["indices"])
        files.append("side_by_side.mp4")
    report["files"] = files
    report["seconds"] = time.perf_counter() - t_start
    write_json(out / "report.json", _clean(report))
    from talk3d.io import atomic_path

    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(to_markdown(report))
    commit_staged(final_out, out, "eval", EVAL_ENTRIES)
    info(f"wrote {', '.join(files)} to '{final_out}' in {report['seconds']:.0f} s")
    if sd.figures["face_detected_render"] < 1.0:
        warn(f"a face was detected in only {100 * sd.figures['face_detected_render']:.0f}% of the rendered "
             f"held-out frames")
    return report


def _plot_view_frames(frontal: np.ndarray, views: dict[str, np.ndarray], path: Path, count: int = 3) -> None:
    """The novel views' rendered frames, each angle a row under the same frames at yaw 0."""
    rows = [("yaw +0, pitch +0", frontal[:count])]
    for key, frames in views.items():
        yaw, pitch = key.split(",")
        rows.append((f"yaw {yaw}, pitch {pitch}", frames[:count]))
    plots.plot_frame_grid(rows, path, title="novel views: the rendered frames")


def _plot_turned(tv: suites.SuiteResult, path: Path, count: int = 4) -> None:
    """Ground truth | render | nearest-training-pose baseline for the most turned held-out frames."""
    a = tv.arrays
    order = np.argsort(-a["beyond"], kind="stable")[:count]
    per = {p["frame"]: p for p in tv.figures["per_frame"]}
    titles = [f"#{a['indices'][j]} yaw {per[int(a['indices'][j])]['yaw']:+.0f} (+{a['beyond'][j]:.1f})" for j in order]
    plots.plot_frame_grid([("ground truth", a["gt"][order]), ("render", a["render"][order]),
                           ("nearest training pose", a["baseline"][order])], path, titles,
                          title="turned held-out frames (degrees beyond the training range)")


def _lip_drive(driver: Any) -> str:
    """What drives the evaluated mouth, on new audio and on the training clip's own."""
    run = getattr(driver, "run", None)
    if getattr(run, "lip_prior", None) is None:
        return "the model's audio head (the run has no phonetic lip prior)"
    own = "phonetic prior" if getattr(driver, "phones", None) is not None else "audio head"
    new = "audio head" if getattr(driver, "lip_drive", "auto") == "audio" else "phonetic prior"
    return f"{new} on new audio, {own} on the training clip's own audio"


def _silero() -> bool:
    from talk3d.eval.vad import silero_available

    return silero_available()


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN -> None, inf -> 'inf', tuples -> lists."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    return obj


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if isinstance(v, (int, float)):
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _drive_table(report: dict[str, Any]) -> str:
    rows = report.get("video_driven") or []
    if not rows:
        return "No driving clip given (use `--drive-video CLIP`)."
    return _table(
        ["clip", "frames", "opening corr (lag)", "closure recall (closures)", "closure precision", "range vs training",
         "range vs speaker", "tracked speaker / render"],
        [[Path(r["clip"]).name, str(r["frames"]), f"{_fmt(r['opening_corr'], 3)} ({r['opening_corr_lag_frames']:+d})",
          f"{_fmt(r['closure_recall'])} ({r['speaker_closures']})", _fmt(r["closure_precision"]),
          _fmt(r["range_vs_training"]),
          _fmt(r["range_vs_speaker"]), f"{_fmt(r['speaker_tracked'])} / {_fmt(r['render_tracked'])}"] for r in rows])


def _turned_table(report: dict[str, Any]) -> str:
    tv = report.get("turned") or {}
    if not tv.get("available"):
        return f"Skipped: {tv.get('reason', 'not run')}."
    head = (f"{tv['frames']} held-out frames at yaw {tv['held_out_yaw'][0]:+.1f}..{tv['held_out_yaw'][1]:+.1f} "
            f"(training {tv['train_yaw'][0]:+.1f}..{tv['train_yaw'][1]:+.1f}); up to "
            f"{tv['degrees_beyond_max']:.1f} degrees beyond the training range (mean {tv['degrees_beyond_mean']:.1f}).")
    rows = [[name, _fmt(f["psnr"]), _fmt(f["ssim"], 4), _fmt(f["head_psnr"]), _fmt(f["lmd_mouth"]),
             _fmt(f.get("lmd_face")), _fmt(f.get("identity_distance"), 3), _fmt(f["face_detected"])]
            for name, f in (("render at the frame's pose", tv["render"]), ("baseline: nearest training pose", tv["baseline"]))]
    return head + "\n\n" + _table(["", "PSNR", "SSIM", "head PSNR", "LMD mouth (px @512)", "LMD face (px @512)",
                                   "identity distance to the frame", "face detected"], rows)


def _full_frame_table(report: dict[str, Any]) -> str:
    ff = report.get("full_frame") or {}
    if not ff.get("available"):
        return f"Skipped: {ff.get('reason', 'not run')}"
    sd = report["self_driven"]
    return _table(["figure", "value"], [
        ["frame size, crop box in it (x0, y0, side)", f"{ff['frame_size'][0]}x{ff['frame_size'][1]}, {ff['crop_box']}"],
        ["PSNR full frame / crop area at source resolution (dB)",
         f"{_fmt(ff['psnr_full_frame'])} / {_fmt(ff['psnr_crop_area'])}"],
        ["PSNR of the crop at the working resolution (dB, as above)", _fmt(sd["psnr"])],
        ["seam: colour step across the crop's sides, output / source (levels)",
         f"{_fmt(ff['seam_step'])} / {_fmt(ff['seam_step_source'])}"],
        ["feather (px)", _fmt(ff["feather_px"], 1)],
    ])


def to_markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables."""
    m = report["machine"]
    sd = report["self_driven"]
    parts = [
        f"# talk3d eval: {report['run']}",
        f"Step {report.get('step')}; {m['cpu']} ({m['cores']} cores), torch {m['torch']}, device {m['device']}"
        + (f" ({m['cuda_device']})" if "cuda_device" in m else "") + f". Mouth: {report['mouth_driven_by']} (--lip-drive {report['lip_drive']}).",
        "## Self-driven (held-out frames, never trained on)",
        _table(["figure", "value"], [
            ["frames", f"{sd['frames']} (from {sd['first_frame']})"],
            ["PSNR (dB)", _fmt(sd["psnr"])], ["SSIM", _fmt(sd["ssim"], 4)],
            ["mouth-region PSNR (dB)", _fmt(sd["mouth_psnr"])],
            ["LMD mouth, mediapipe (px @512)", _fmt(sd["lmd_mouth"])],
            ["LMD face, mediapipe (px @512)", _fmt(sd["lmd_face"])],
            ["LMD mouth, dlib 68 (px @512)", _fmt(sd["lmd_mouth_dlib68"])],
            ["LMD face, dlib 68 (px @512)", _fmt(sd["lmd_face_dlib68"])],
            ["mouth-opening correlation with ground truth", _fmt(sd["mouth_open_corr"], 3)],
            ["... with the head held still (audio alone)", _fmt(sd.get("mouth_open_corr_fixed_pose"), 3)],
            ["mouth-opening std, audio alone / ground truth", _fmt(sd.get("mouth_open_std_ratio_fixed_pose"), 3)],
            ["face detected in renders / ground truth",
             f"{_fmt(sd['face_detected_render'], 3)} / {_fmt(sd['face_detected_gt'], 3)}"],
        ]),
        "## Cross-driven (new audio, no ground truth)",
    ]
    if report["cross_driven"]:
        parts.append(_table(
            ["audio", "frames", "VAD", "speech", "face det.", "corr(mouth, VAD)", "best corr (lag)",
             "open speech/pause"],
            [[Path(c["audio"]).name, str(c["frames"]), c["vad"], _fmt(c["speech_fraction"]),
              _fmt(c["face_detected"]), _fmt(c["mouth_vad_corr"], 3),
              f"{_fmt(c['mouth_vad_corr_best'], 3)} ({c['mouth_vad_best_lag_frames']:+d})",
              _fmt(c["speech_pause_ratio"])] for c in report["cross_driven"]]))
    else:
        parts.append("No driving audio given (use `--audio FILE`).")
    parts += ["## Turned held-out frames (novel views against ground truth)", _turned_table(report)]
    parts += ["## Full frame (held-out renders pasted into their source frames)", _full_frame_table(report)]
    parts += ["## Driven by other speakers' clips (their own mouth is the reference)", _drive_table(report)]
    parts += [
        "## Novel views",
        _table(["yaw", "pitch", "face detected", "yaw meas./exp.", "yaw err", "pitch meas./exp.", "pitch err",
                "identity dist.", "same person"],
               [[f"{r['yaw']:+g}", f"{r['pitch']:+g}", _fmt(r["face_detected"]),
                 f"{_fmt(r['yaw_measured'], 1)} / {_fmt(r['yaw_expected'], 1)}", _fmt(r["yaw_error"], 1),
                 f"{_fmt(r['pitch_measured'], 1)} / {_fmt(r['pitch_expected'], 1)}", _fmt(r["pitch_error"], 1),
                 _fmt(r["identity_distance"], 3), _fmt(r["same_person_rate"])] for r in report["novel_views"]]),
        "Identity distance: dlib 128-d embedding to the mean of training frames; same person below 0.6.",
        "## Speed",
        f"{_fmt(report['speed']['fps'])} frames/s at {report['speed']['size']} px on {report['speed']['device']} "
        f"({report['speed']['frames']} frames, batch {report['speed']['batch_size']}, "
        f"{report['speed']['threads']} threads).",
        "## Files",
        ", ".join(f"`{f}`" for f in report["files"]),
        "",
    ]
    return "\n\n".join(parts)
