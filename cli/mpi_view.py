"""`talk3d mpi-view MPI_DIR -o IMG.png`: render an exported multiplane image from a new camera."""

from __future__ import annotations

from pathlib import Path

import typer

from talk3d_cli.common import FORCE_HELP, QUIET_HELP, apply_quiet, cli_command


@cli_command
def command(
    mpi_dir: Path = typer.Argument(..., help="MPI folder (mpi.json + layer PNGs) from 'talk3d render --mpi'."),
    out: Path = typer.Option(..., "-o", "--out", help="Output image (.png)."),
    yaw: float = typer.Option(0.0, help="Extra camera yaw about the head centre, degrees."),
    pitch: float = typer.Option(0.0, help="Extra camera pitch about the head centre, degrees."),
    dx: float = typer.Option(0.0, help="Sideways camera shift along its x axis, canonical units (> 0: right)."),
    size: int | None = typer.Option(None, help="Output side in pixels (default: the layer size)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Render a multiplane image from a new camera (plane homographies + back-to-front compositing)."""
    from talk3d.render.mpi import view_mpi

    apply_quiet(quiet)
    view_mpi(mpi_dir, out, yaw=yaw, pitch=pitch, dx=dx, size=size, force=force)
