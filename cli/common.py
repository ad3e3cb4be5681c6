"""Shared CLI plumbing: one-line errors, Ctrl-C handling, --quiet."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

QUIET_HELP = "Print only warnings and errors (no progress bars)."
FORCE_HELP = "Overwrite existing outputs instead of refusing or resuming."
DEVICE_HELP = "Torch device: 'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'."


def cli_command(fn: F) -> F:
    """Wrap a command: user errors print one line and exit 1, Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from talk3d.console import console
        from talk3d.errors import UserError

        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted:[/yellow] finished steps are kept; run the same command again to resume")
            raise typer.Exit(130) from None
        finally:
            from talk3d.io import close_file_logs

            close_file_logs()
            sys.stdout.flush()

    return wrapper  # type: ignore[return-value]


def apply_quiet(quiet: bool) -> None:
    from talk3d.console import set_quiet

    set_quiet(quiet)
