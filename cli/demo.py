"""`talk3d demo`: the whole chain (sample -> prep -> fit -> render) on a built-in synthetic clip."""

from __future__ import annotations

from pathlib import Path

import typer

from talk3d_cli.common import DEVICE_HELP, FORCE_HELP, QUIET_HELP, apply_quiet, cli_command


@cli_command
def command(
    workdir: Path = typer.Option(Path("~/.cache/talk3d/sample"), "--workdir", "-w",
                                 help="Folder for the sample clip, dataset, avatar run and orbit video (reused)."),
    seconds: float = typer.Option(16.0, help="Length of the synthetic sample clip in seconds."),
    steps: int = typer.Option(400, help="Total fit steps (the quick preset shortened so the demo takes ~5 CPU minutes)."),
    orbit_range: float = typer.Option(20.0, "--orbit-range", help="Yaw range (+- degrees) of the rendered orbit about the mean head pose."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Show the tool working without a video: synthetic sample -> prep -> fit -> orbit render."""
    apply_quiet(quiet)
    from talk3d.console import console
    from talk3d.demo import DemoConfig, describe, run_demo

    result = run_demo(DemoConfig(workdir=workdir, seconds=seconds, fit_steps=steps, orbit_range=orbit_range,
                                 device=device), force=force)
    for line in describe(result):
        console.print(line, soft_wrap=True)
