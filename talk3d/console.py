"""Terminal output shared by all stages: a rich console, progress bars and ``--quiet``.

Library code reports progress through :func:`progress` and messages through :func:`info`
and :func:`warn`; the CLI decides (``--quiet``) whether they reach the terminal. Warnings
always go to the log file too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
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
_state = {"quiet": False, "secondary": False}
log = logging.getLogger("talk3d")
log.addHandler(logging.NullHandler())  # records go to the run's log file only; the console prints itself


def set_quiet(quiet: bool) -> None:
    """Silence progress bars and info messages (warnings and errors still print)."""
    _state["quiet"] = quiet


def set_secondary(secondary: bool) -> None:
    """Ranks other than 0 of a data-parallel fit: nothing on the terminal (rank 0 speaks for all)."""
    _state["secondary"] = secondary
    _state["quiet"] = _state["quiet"] or secondary


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
    if not _state["secondary"]:
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


@contextlib.contextmanager
def silence_native_stderr() -> Iterator[None]:
    """Silence native libraries that write to file descriptor 2 (mediapipe's glog/TFLite lines).

    Those lines ("Feedback manager requires...", "Created TensorFlow Lite XNNPACK delegate")
    are noise for users; they appear when a mediapipe graph starts and on its first frame.
    Set ``TALK3D_NATIVE_LOGS=1`` to see them.
    """
    if os.environ.get("TALK3D_NATIVE_LOGS"):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)
