"""Terminal output shared by all stages: a rich console, progress bars and ``--quiet``.

Library code reports progress through :func:`progress` and messages through :func:`info`
and :func:`warn`; the CLI decides (``--quiet``) whether they reach the terminal. Warnings
always go to the log file too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
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


# What native libraries print on file descriptor 2: glog lines ("W0000 00:00:... file.cc:114] ..."),
# TensorFlow Lite's delegate note and absl's warning about logging before InitializeLog.
_NATIVE_LINE = re.compile(r"^(?:[WIEF]\d{4} |INFO: Created TensorFlow Lite|WARNING: All log messages before absl::)")


class NativeStderrToLog:
    """For a whole command: native libraries' lines on file descriptor 2 go to the log file.

    mediapipe's graphs write glog lines from their own threads, at any time (not only while a
    graph starts), straight to file descriptor 2. Here fd 2 becomes a pipe read by a thread that
    sends those lines to the ``talk3d`` log (the command's log file) and passes any other native
    output through to the terminal; Python's own ``sys.stderr`` (rich's progress bars, errors,
    warnings) keeps writing to the terminal itself. A no-op when stderr is not a real file
    (tests) or with ``TALK3D_NATIVE_LOGS=1``.
    """

    current: NativeStderrToLog | None = None
    """The active instance (one per process)."""

    def __init__(self) -> None:
        self._saved: int | None = None
        self._old_stderr = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> NativeStderrToLog:
        if os.environ.get("TALK3D_NATIVE_LOGS"):
            return self
        try:
            if sys.stderr.fileno() != 2:
                return self
        except (AttributeError, OSError, ValueError):
            return self
        sys.stderr.flush()
        self._saved = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._old_stderr = sys.stderr
        sys.stderr = open(self._saved, "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                          errors="backslashreplace", closefd=False)
        self._thread = threading.Thread(target=self._pump, args=(read_end,), daemon=True)
        self._thread.start()
        NativeStderrToLog.current = self
        return self

    def _pump(self, read_end: int) -> None:
        with open(read_end, "rb", closefd=True) as pipe:
            for raw in pipe:
                line = raw.decode(errors="replace").rstrip("\n")
                if _NATIVE_LINE.match(line):
                    log.info("native library: %s", line)
                elif self._saved is not None:
                    os.write(self._saved, raw)

    def __exit__(self, *exc: object) -> None:
        if self._saved is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's write end held by fd 2: the pump sees the end
        if self._thread is not None:
            self._thread.join(timeout=2)
        sys.stderr = self._old_stderr
        os.close(self._saved)
        self._saved = None
        NativeStderrToLog.current = None


@contextlib.contextmanager
def terminal_stderr() -> Iterator[None]:
    """Point file descriptor 2 at the terminal again for child processes started inside
    (torchrun's ranks: each rank routes its own native lines to its log)."""
    active = NativeStderrToLog.current
    if active is None or active._saved is None:
        yield
        return
    pipe_fd = os.dup(2)
    os.dup2(active._saved, 2)
    try:
        yield
    finally:
        os.dup2(pipe_fd, 2)
        os.close(pipe_fd)
