"""`talk3d prep VIDEO -o DATA`: turn a talking-head video into a tracked dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from talk3d_cli.common import FORCE_HELP, QUIET_HELP, apply_quiet, cli_command


@cli_command
def command(
    video: Path = typer.Argument(..., help="Talking-head video of one person (mp4/mov/mkv...), ideally 3-5 minutes."),
    out: Path = typer.Option(..., "-o", "--out", help="Dataset folder to create (an unfinished one is resumed)."),
    size: int = typer.Option(512, "--size", min=64, max=2048, help="Side of the square output frames in pixels."),
    fps: float = typer.Option(25.0, "--fps", min=1.0, max=120.0, help="Output frame rate (the video is resampled to it)."),
    audio: Path | None = typer.Option(None, "--audio", help="Use this audio file instead of the video's own sound track."),
    crop_scale: float = typer.Option(2.8, "--crop-scale", min=1.2, max=6.0,
                                     help="Crop side as a multiple of the face height (chin to forehead); "
                                          "at most the frame's short side."),
    crop_padding: bool = typer.Option(False, "--crop-padding",
                                      help="Keep the full --crop-scale framing on tight footage by padding past the "
                                           "frame edges (edge replication; the streaks cost quality)."),
    focal_35mm: float | None = typer.Option(None, "--focal-35mm", min=5.0, max=2000.0,
                                            help="The camera's 35 mm-equivalent focal length in mm, if known (phone "
                                                 "EXIF 'FocalLengthIn35mmFormat', lens spec; diagonal definition). "
                                                 "Default: assume a ~19 degree field of view around the head. The "
                                                 "right value makes head angles more accurate."),
    photometric_poses: bool = typer.Option(True, "--photometric-poses/--landmark-poses",
                                           help="Refine head poses by aligning the textured face to the frames "
                                                "(default; corrects the landmark detector's pitch bias) or keep the "
                                                "landmark-only poses (faster)."),
    holdout: str = typer.Option("tail", "--holdout", help="Frames held out for evaluation: 'tail' (the clip's last "
                                "part, 10% by default) or 'turned' (about 15% by default: the frames whose head yaw "
                                "lies furthest from the median, on each side the head turns to, in runs of >= 0.5 s "
                                "with an unused margin around each: ground truth for novel views)."),
    holdout_fraction: float | None = typer.Option(None, "--holdout-fraction", min=0.02, max=0.4,
                                                  help="Share of the frames held out (default: 0.10 for 'tail', "
                                                       "about 0.15 for 'turned'). A larger 'turned' share trains "
                                                       "on a narrower range of head angles, so the held-out frames "
                                                       "lie further beyond it; prep refuses, at its end, a share "
                                                       "that leaves less than half the frames to train on."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Track the face, crop, estimate head poses, segment, extract audio features."""
    apply_quiet(quiet)
    from talk3d.console import console
    from talk3d.errors import UserError
    from talk3d_prep.pipeline import PrepConfig, run_prep

    if holdout not in ("tail", "turned"):
        raise UserError(f"--holdout must be 'tail' or 'turned', not '{holdout}'")

    config = PrepConfig(size=size, fps=fps, audio=audio, crop_scale=crop_scale, crop_padding=crop_padding,
                        focal_35mm=focal_35mm, photometric_poses=photometric_poses, holdout=holdout)
    if holdout_fraction is not None:
        config = config.with_holdout_fraction(holdout_fraction)
    manifest = run_prep(video, out, config, force=force)
    s = manifest.stats
    console.print(
        f"[green]dataset ready[/green] '{out}': {manifest.num_frames} frames "
        f"({len(manifest.train_frames)} train / {len(manifest.val_frames)} held out, {manifest.holdout}), "
        f"{100 * s['tracking_rate']:.1f}% tracked, reprojection RMS {s['reprojection_rms_px']:.2f} px, "
        f"jitter (median rotation step) {s['rotation_step_median_deg']:.3f} deg, {s['total_s']:.1f} s",
        soft_wrap=True,
    )
