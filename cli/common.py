"""Shared CLI plumbing: one-line errors, Ctrl-C handling, --quiet."""

from __future__ import annotations

import functools
import logging
import os
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
        from talk3d.console import NativeStderrToLog, console
        from talk3d.errors import UserError, describe_os_error

        speaks = os.environ.get("RANK", "0") in ("", "0")  # in a data-parallel fit, rank 0 speaks for all
        try:
            with NativeStderrToLog():  # mediapipe's native log lines go to the log file, not the terminal
                return fn(*args, **kwargs)
        except UserError as exc:
            if speaks:
                _one_line(console, str(exc))
            raise typer.Exit(1) from None
        except OSError as exc:  # full disk, read-only folder, vanished file: one line, traceback in the log
            log = logging.getLogger("talk3d")
            if any(isinstance(h, logging.FileHandler) for h in log.handlers):
                log.error("file-system error", exc_info=True)
            if speaks:
                _one_line(console, describe_os_error(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if speaks:
                console.print("[yellow]interrupted:[/yellow] finished steps are kept; run the same command again "
                              "to resume")
            raise typer.Exit(130) from None
        finally:
            from talk3d.io import close_file_logs

            close_file_logs()
            sys.stdout.flush()

    return wrapper  # type: ignore[return-value]


def _one_line(console: Any, message: str) -> None:
    from rich.markup import escape

    console.print(f"[red]error:[/red] {escape(' '.join(message.split()))}", soft_wrap=True, highlight=False)


def apply_quiet(quiet: bool) -> None:
    from talk3d.console import set_quiet

    set_quiet(quiet)
