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
import select
import struct
import sys
import threading
import time
import weakref
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


# What native libraries print on file descriptor 2: glog lines ("W0000 00:00:... file.cc:114] ..."),
# TensorFlow Lite's delegate note and absl's warning about logging before InitializeLog.
_NATIVE_LINE = re.compile(r"^(?:[WIEF]\d{4} |INFO: Created TensorFlow Lite|WARNING: All log messages before absl::)")


class _NativeRoute:
    """The process-wide routing of file descriptor 2 behind :class:`NativeStderrToLog`.

    Installed while at least one holder holds it (a command, a prep, a mediapipe graph): fd 2
    is then a pipe read by a thread that logs native lines and copies anything else to the
    terminal, while ``sys.stderr`` writes to the terminal directly.
    """

    def __init__(self) -> None:
        self.forget()

    def forget(self) -> None:
        """Start from nothing without closing anything: at creation, and in a forked child (no
        pump runs there; its fd 2 stays the parent's pipe, whose pump reads the child's lines too)."""
        self.lock = threading.Lock()  # holders and (un)installing
        self.pump_lock = threading.Lock()  # held by the pump while it handles what it read
        self.holders = 0
        self.saved: int | None = None  # the terminal (the original fd 2), while installed
        self.read_end: int | None = None
        self.stderr = None  # our sys.stderr on ``saved``
        self.old_stderr = None
        self.thread: threading.Thread | None = None

    def acquire(self) -> None:
        with self.lock:
            self.holders += 1
            if self.holders == 1:
                self._install()

    def release(self) -> None:
        with self.lock:
            self.holders = max(0, self.holders - 1)
            if self.holders == 0:
                self._remove()

    def _install(self) -> None:
        if os.environ.get("TALK3D_NATIVE_LOGS"):
            return
        try:
            if sys.stderr.fileno() != 2:  # pytest's capture, a notebook: leave it alone
                return
        except (AttributeError, OSError, ValueError):
            return
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self.old_stderr = sys.stderr
        encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
        self.stderr = sys.stderr = open(self.saved, "w", buffering=1, encoding=encoding,
                                        errors="backslashreplace", closefd=False)
        self.thread = threading.Thread(target=self._pump, args=(self.read_end, os.dup(self.saved)),
                                       name="talk3d-native-stderr", daemon=True)
        self.thread.start()

    def _remove(self) -> None:
        if self.saved is None:
            return
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # closes the pipe's write end held by fd 2: the pump sees the end
        if self.thread is not None:
            self.thread.join(timeout=2)
        if sys.stderr is self.stderr:
            sys.stderr = self.old_stderr
            self.stderr.close()
            os.close(self.saved)
        else:  # something (a progress display) swapped sys.stderr meanwhile and may restore ours
            self.stderr.flush()  # later: it stays open, writing to the terminal
        self.saved = self.stderr = self.old_stderr = self.thread = self.read_end = None

    def _pump(self, read_end: int, terminal: int) -> None:
        """Read fd 2's pipe until its end: native lines to the log, the rest to the terminal."""
        pending = b""
        try:
            while True:
                if os.name == "posix":  # wait outside the lock (pipes cannot be selected on Windows)
                    select.select([read_end], [], [])
                with self.pump_lock:  # flush() waits for what was read to be handled
                    chunk = os.read(read_end, 65536)
                    if not chunk:
                        if pending:
                            self._route_line(pending, terminal)
                        return
                    *lines, pending = (pending + chunk).split(b"\n")
                    for raw in lines:
                        self._route_line(raw, terminal)
        finally:
            os.close(read_end)
            os.close(terminal)

    @staticmethod
    def _route_line(raw: bytes, terminal: int) -> None:
        line = raw.decode(errors="replace")
        if _NATIVE_LINE.match(line):
            log.info("native library: %s", line)
        else:
            with contextlib.suppress(OSError):
                os.write(terminal, raw + b"\n")

    def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the pump has handled all that fd 2 received so far."""
        deadline = time.monotonic() + timeout
        while self.read_end is not None:
            if not self.pump_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return
            try:
                if self.read_end is None or _unread_bytes(self.read_end) == 0:
                    return
            finally:
                self.pump_lock.release()
            if time.monotonic() >= deadline:
                return
            time.sleep(0.005)


def _unread_bytes(fd: int) -> int:
    """Bytes waiting in a pipe (0 when it cannot be told, e.g. on Windows)."""
    try:
        import fcntl
        import termios

        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except (ImportError, OSError):
        return 0


_route = _NativeRoute()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_route.forget)


class NativeStderrToLog:
    """Native libraries' lines on file descriptor 2 go to the log file, not the terminal.

    mediapipe's graphs write glog/TFLite lines ("W0000 ... Feedback manager requires...") from
    their own threads, at any time (graph start, first frames), straight to file descriptor 2,
    where Python's logging settings cannot reach them. While any :class:`NativeStderrToLog` is
    held, fd 2 is a pipe read by a thread that sends those lines to the ``talk3d`` log (the
    command's log file) and passes any other native output through to the terminal; Python's
    own ``sys.stderr`` (rich's progress bars, errors, warnings) keeps writing to the terminal
    itself. Held by every CLI command, by :func:`talk3d_prep.pipeline.run_prep` and by each
    mediapipe wrapper for its lifetime, so the lines are routed whatever the entry point.
    Holders nest (one routing per process). A no-op when stderr is not file descriptor 2
    (pytest's capture) or with ``TALK3D_NATIVE_LOGS=1``.

    Use as a context manager, or :meth:`start` / :meth:`stop` for an object's lifetime.
    """

    def __init__(self) -> None:
        self._held = False
        self._release: weakref.finalize | None = None

    def start(self) -> NativeStderrToLog:
        """Hold the routing (once per instance); returns self. An instance collected while it
        holds the routing lets go of it (a tracker never closed does not keep fd 2 piped)."""
        if not self._held:
            self._held = True
            _route.acquire()
            self._release = weakref.finalize(self, _route.release)
        return self

    def stop(self) -> None:
        """Let go of the routing (the last holder restores fd 2); safe to call twice."""
        if self._held:
            self._held = False
            self._release()

    def __enter__(self) -> NativeStderrToLog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def flush_native_lines(timeout: float = 1.0) -> None:
    """Let the native lines written so far reach the log (call before closing a log file)."""
    _route.flush(timeout)


@contextlib.contextmanager
def terminal_stderr() -> Iterator[None]:
    """Point file descriptor 2 at the terminal again for child processes started inside
    (torchrun's ranks: each rank routes its own native lines to its log)."""
    with _route.lock:
        saved = _route.saved
        if saved is None:
            pipe_fd = None
        else:
            pipe_fd = os.dup(2)
            os.dup2(saved, 2)
    try:
        yield
    finally:
        if pipe_fd is not None:
            os.dup2(pipe_fd, 2)
            os.close(pipe_fd)
