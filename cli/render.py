"""`talk3d render`: placeholder until its issue lands."""

from __future__ import annotations

from cli.common import cli_command


@cli_command
def command() -> None:
    """Not implemented yet."""
    from talk3d.errors import UserError

    raise UserError("'talk3d render' is not implemented yet")
