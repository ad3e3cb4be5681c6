"""The ``talk3d`` command: registers one sub-command per stage."""

from __future__ import annotations

import typer

from talk3d_cli import demo, fit, mpi_view, prep, render
from talk3d_cli import eval as eval_cmd

app = typer.Typer(
    name="talk3d",
    help="Personal 3D talking avatars: prep a video, fit an avatar, render it with any audio at any angle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("prep")(prep.command)
app.command("fit")(fit.command)
app.command("render")(render.command)
app.command("eval")(eval_cmd.command)
app.command("demo")(demo.command)
app.command("mpi-view")(mpi_view.command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
