"""Terminal output shared by all stages: a rich console, progress bars and ``--quiet``.

Library code reports progress through :func:`progress` and messages through :func:`info`
and :func:`warn`; the CLI decides (``--quiet``) whether they reach the terminal. Warnings
always go to the log file too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

console = Console(stderr=True, highlight=False)
_state = {"quiet": False}
log = logging.getLogger("talk3d")


def set_quiet(quiet: bool) -> None:
    """Silence progress bars and info messages (warnings and errors still print)."""
    _state["quiet"] = quiet


def is_quiet() -> bool:
    return _state["quiet"]


def info(message: str) -> None:
    """Print an informational line (unless quiet) and log it."""
    log.info(message)
    if not _state["quiet"]:
        console.print(message)


def warn(message: str) -> None:
    """Print a warning line (always) and log it."""
    log.warning(message)
    console.print(f"[yellow]warning:[/yellow] {message}")


def make_progress(transient: bool = False) -> Progress:
    """A rich Progress with bar, count, elapsed and remaining time; disabled when quiet."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=transient,
        disable=_state["quiet"],
    )


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar (no bar when quiet)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as bar:
        task = bar.add_task(description, total=total, status="")
        for item in items:
            yield item
            bar.advance(task)
