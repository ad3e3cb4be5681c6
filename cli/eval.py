"""`talk3d eval RUN_DIR`: held-out metrics, novel views, speed, plots and a side-by-side video."""

from __future__ import annotations

from pathlib import Path

import typer

from talk3d_cli.common import DEVICE_HELP, FORCE_HELP, QUIET_HELP, apply_quiet, cli_command


@cli_command
def command(
    run_dir: Path = typer.Argument(..., help="Run folder written by 'talk3d fit'."),
    audio: list[Path] = typer.Option([], "--audio", "-a", help="Driving audio for the cross-driven figures (repeatable)."),
    drive_video: list[Path] = typer.Option(
        [], "--drive-video", help="Driving clip with video (repeatable): the avatar's mouth, driven by its audio at a "
        "fixed pose, against the speaker's own tracked mouth (correlation, closure recall, range)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Report folder (default: RUN_DIR/eval)."),
    frames: int = typer.Option(50, "--frames", help="Held-out frames evaluated (self-driven suite)."),
    view_frames: int = typer.Option(8, "--view-frames", help="Held-out frames rendered per novel view."),
    seconds: float = typer.Option(6.0, "--seconds", help="Seconds of each driving audio or clip rendered."),
    source: Path | None = typer.Option(None, "--source", help="The source video, when it has moved since prep, for "
                                       "the full-frame figures (checked by SHA-256)."),
    vad: str = typer.Option("auto", "--vad", help="Voice activity detector: auto, silero or energy."),
    lip_drive: str = typer.Option("auto", "--lip-drive", help="What moves the mouth: auto (the phonetic lip prior "
                                  "for --audio/--drive-video, the audio head on the held-out frames, as render), "
                                  "prior or audio (one of them everywhere)."),
    video: bool = typer.Option(True, "--video/--no-video", help="Write the side-by-side comparison video."),
    batch_size: int = typer.Option(4, "--batch-size", help="Frames per forward pass."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Evaluate a fitted avatar: PSNR/SSIM/LMD on held-out frames, lip sync on new audio, novel views, speed."""
    apply_quiet(quiet)
    from talk3d.errors import UserError
    from talk3d.eval.report import EvalConfig, evaluate

    if vad not in ("auto", "silero", "energy"):
        raise UserError(f"--vad must be auto, silero or energy, not '{vad}'")
    if frames < 3 or view_frames < 1 or not 0 < seconds <= 3600 or batch_size < 1:
        raise UserError("--frames must be >= 3, --view-frames and --batch-size >= 1, --seconds between 0 and 3600")
    cfg = EvalConfig(audio=[str(a) for a in audio], drive_videos=[str(c) for c in drive_video],
                     out=str(out) if out else None, device=device,
                     max_val_frames=frames, view_frames=view_frames, max_cross_seconds=seconds, vad=vad, lip_drive=lip_drive,
                     video=video, batch_size=batch_size, force=force, source=str(source) if source else None)
    evaluate(run_dir, cfg)
