"""`talk3d render RUN_DIR AUDIO -o OUT.mp4`: flags -> RenderConfig -> talk3d.render.driver.render."""

from __future__ import annotations

from pathlib import Path

import typer

from talk3d_cli.common import DEVICE_HELP, FORCE_HELP, QUIET_HELP, apply_quiet, cli_command


@cli_command
def command(
    run_dir: Path = typer.Argument(..., help="Run folder written by 'talk3d fit'."),
    audio: Path | None = typer.Argument(None, help="Driving audio: any file ffmpeg reads (wav, mp3, m4a, a video). "
                                                    "Optional with --frames val."),
    out: Path = typer.Option(..., "-o", "--out", help="Output video (.mp4, H.264 + AAC)."),
    yaw: float = typer.Option(0.0, help="Camera yaw about the head centre, degrees (> 0: towards the subject's left)."),
    pitch: float = typer.Option(0.0, help="Camera pitch about the head centre, degrees (> 0: from above)."),
    orbit: bool = typer.Option(False, "--orbit", help="Sweep the yaw as a sinusoid over the clip."),
    orbit_range: float = typer.Option(30.0, help="Amplitude of the --orbit sweep, degrees."),
    orbit_period: float = typer.Option(0.0, help="Period of the --orbit sweep, seconds (0: the whole clip)."),
    pose: str = typer.Option("tracked", help="Head motion: 'tracked' (training poses played forward then "
                                             "backward) or 'fixed' (mean tracked pose)."),
    blink: str = typer.Option("auto", help="'auto': the training clip's blinks, looped; 'off': eyes open."),
    motion_scale: float = typer.Option(1.0, help="Intensity of audio-driven motion (0 still, 1 as trained, >1 more)."),
    size: int | None = typer.Option(None, help="Output side in pixels (default: the model's output resolution)."),
    fps: float | None = typer.Option(None, help="Output frame rate (default: the dataset's)."),
    frames: str = typer.Option("audio", help="'audio': drive with AUDIO; 'val': self-driven on the held-out frames."),
    depth: bool = typer.Option(False, "--depth", help="Also write OUT.depth.mp4 (colour-mapped depth)."),
    alpha: bool = typer.Option(False, "--alpha", help="Also write RGBA PNG frames into OUT.alpha/."),
    stereo: bool = typer.Option(False, "--stereo", help="Side-by-side stereo for VR (left eye on the left)."),
    ipd: str = typer.Option("0.8", help="Stereo baseline: canonical units (0.8) or millimetres ('63mm', "
                                        "at 80 mm per unit)."),
    mpi: Path | None = typer.Option(None, "--mpi", help="Export multiplane images into this folder."),
    mpi_frames: str = typer.Option("0", help="Comma-separated output frames to export as MPIs, e.g. 0,10,20."),
    mpi_layers: int = typer.Option(32, help="MPI planes (uniform in disparity over the head box)."),
    mpi_size: int | None = typer.Option(None, help="MPI layer side in pixels (default: the neural resolution)."),
    full_frame: bool = typer.Option(False, "--full-frame", help="Paste the avatar back into the source video's full "
                                    "frame at its own size (the crop's border feathered, colours matched); "
                                    "--depth/--alpha/--mpi stay the crop's."),
    source: Path | None = typer.Option(None, "--source", help="The source video for --full-frame when it has "
                                       "moved (default: the path prep recorded; checked by SHA-256)."),
    plate_frame: int | None = typer.Option(None, "--plate-frame", help="Source frame behind a --full-frame "
                                           "--pose fixed render (default: the one nearest the mean head pose)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    batch: int = typer.Option(0, help="Frames per forward pass (0: automatic, 4 on CPU, 8 on CUDA)."),
    precision: str = typer.Option("auto", help="Number type of the U-Net and super-resolution: auto (bfloat16 "
                                  "on CPUs that compute it natively, else float32), float32 or bfloat16."),
    lip_drive: str = typer.Option("auto", "--lip-drive", help="What moves the mouth: auto (the phonetic lip prior "
                                  "for new audio, which carries to any voice and language; the model's own audio head "
                                  "for --frames val), prior, or audio (the head learned on the training voice)."),
    threads: int = typer.Option(0, help="CPU threads (0: a fair share of the cores with other running talk3d "
                                        "commands)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Render a fitted avatar saying AUDIO, from any head angle, into a video with sound."""
    from talk3d.render.config import RenderConfig, parse_frame_list, parse_ipd
    from talk3d.render.driver import render

    apply_quiet(quiet)
    cfg = RenderConfig(yaw=yaw, pitch=pitch, orbit=orbit, orbit_range=orbit_range, orbit_period=orbit_period,
                       pose=pose, blink=blink, motion_scale=motion_scale, size=size, fps=fps, device=device,
                       batch=batch, precision=precision, lip_drive=lip_drive, threads=threads, frames=frames, depth=depth, alpha=alpha, stereo=stereo, ipd=parse_ipd(ipd),
                       mpi_dir=mpi, mpi_frames=parse_frame_list(mpi_frames), mpi_layers=mpi_layers,
                       mpi_size=mpi_size, full_frame=full_frame, source=source, plate_frame=plate_frame)
    render(run_dir, audio, out, cfg, force=force)
