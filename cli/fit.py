"""`talk3d fit DATASET -o RUN`: fit an avatar to a prepared dataset (flags -> FitConfig -> fit)."""

from __future__ import annotations

from pathlib import Path

import typer

from talk3d_cli.common import DEVICE_HELP, FORCE_HELP, QUIET_HELP, apply_quiet, cli_command


@cli_command
def command(
    dataset: Path = typer.Argument(..., help="Prepared dataset folder (made by 'talk3d prep')."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder to write (resumes when it holds a run)."),
    preset: str = typer.Option("quick", "--preset", help="quick (2 CPU cores, ~13 min, 256^2), standard, full (GPU, 512^2)."),
    steps: int | None = typer.Option(None, "--steps", help="Total training steps (stage lengths keep their proportions)."),
    size: int | None = typer.Option(None, "--size", help="Output resolution, e.g. 256 or 512 (neural image is a quarter)."),
    batch: int | None = typer.Option(None, "--batch", help="Frames per training step."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate of the networks (the triplane's scales with it)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    set_: list[str] = typer.Option([], "--set", help="Override any setting: KEY=VALUE, e.g. --set model.coarse_samples=32 (repeatable)."),
    nproc: int = typer.Option(1, "--nproc", help="Data-parallel processes on this machine (starts torchrun: one per GPU, "
                                                 "or CPU processes with gloo); each takes --batch frames per step. "
                                                 "Several machines: run torchrun yourself (docs/fit.md)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Fit a personal 3D talking avatar to a prepared dataset."""
    apply_quiet(quiet)
    if nproc != 1:
        import sys

        from talk3d.fit.launch import launch_fit

        return launch_fit(nproc, sys.argv[2:], str(out))
    from talk3d.console import info
    from talk3d.fit.config import apply_override, set_size
    from talk3d.fit.config import preset as make_preset
    from talk3d.fit.trainer import fit

    cfg = make_preset(preset)
    if steps is not None:
        cfg.set_total_steps(steps)
    if size is not None:
        set_size(cfg, size)
    if batch is not None:
        cfg.batch_size = batch
    if lr is not None:
        cfg.lr_planes *= lr / cfg.lr
        cfg.lr = lr
    cfg.device = device
    for item in set_:
        apply_override(cfg, item)
    result = fit(dataset, out, cfg, force=force)
    v = result.val
    info(f"[bold]avatar:[/bold] {result.avatar_path}  ({result.steps} steps, {result.wall_time_s / 60:.1f} min this run)")
    if v:
        info(f"held-out: PSNR {v.get('psnr', float('nan')):.2f} dB, SSIM {v.get('ssim', float('nan')):.3f}, "
             f"mouth PSNR {v.get('mouth_psnr', float('nan')):.2f} dB")
    info(f"previews, curves.png, metrics.jsonl and fit.log are in {result.run_dir}")
