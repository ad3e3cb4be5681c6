"""`talk3d demo`: placeholder until its issue lands."""

from __future__ import annotations

from cli.common import cli_command


@cli_command
def command() -> None:
    """Not implemented yet."""
    from talk3d.errors import UserError

    raise UserError("'talk3d demo' is not implemented yet")
