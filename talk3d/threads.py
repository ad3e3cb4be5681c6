"""CPU threads shared fairly between the talk3d processes running on one machine.

Two torch processes that each use every core (torch's default) slow each other down far more
than twofold: their OpenMP threads spin while waiting for cores the other process holds
(measured on 2 cores: a fit 4-13x slower beside a render). So every talk3d process takes its
share: ``cores // processes`` threads, where ``processes`` counts the talk3d processes of this
user that are alive now. Each process registers a file in a per-user folder and holds an
exclusive ``flock`` on it for its lifetime; a file nobody holds a lock on belongs to a process
that has ended and is removed. Long loops (fit steps, render batches) call :func:`rebalance`,
which re-counts at most every :data:`RECHECK_SECONDS` and changes ``torch.set_num_threads``
when the share changed, so a fit goes back to all cores once the render beside it ends.

An explicit thread count (``--set threads=N`` for fit, ``--threads`` for render) is kept as
given. On systems without ``fcntl`` (Windows) every process keeps all cores.
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path

RECHECK_SECONDS = 5.0
"""How often a running process re-counts its peers."""

_state: dict[str, object] = {"handle": None, "fixed": 0, "floor": 1, "checked": 0.0}


def registry() -> Path:
    """The per-user folder of process files."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"talk3d-{uid}-processes"


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _register() -> bool:
    """Create and lock this process's file (once); False where locking is unavailable."""
    if _state["handle"] is not None:
        return True
    try:
        import fcntl
    except ImportError:
        return False
    folder = registry()
    path = folder / f"{os.getpid()}.lock"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            return False  # not a private folder of ours (another user's, or a link): do not share
        for _ in range(5):
            handle = open(path, "a")  # noqa: SIM115 (held open, and locked, for the process's life)
            fcntl.flock(handle, fcntl.LOCK_EX)  # waits out a peer that is checking this file
            if path.exists() and os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                _state["handle"] = handle
                return True
            handle.close()  # a peer removed the file while we waited: create it again
    except OSError:
        pass
    return False


def running_processes() -> int:
    """talk3d processes of this user alive now (this one included); stale files are removed."""
    if not _register():
        return 1
    import fcntl

    own = f"{os.getpid()}.lock"
    alive = 1
    for path in registry().glob("*.lock"):
        if path.name == own or path.is_symlink() or not path.is_file():
            continue  # only plain files talk3d made are counted or removed
        try:
            with open(path, "a") as other:
                try:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    alive += 1  # its owner holds the lock: running
                    continue
                path.unlink(missing_ok=True)  # nobody held it: that process has ended (removed while locked)
        except OSError:
            continue
    return alive


def fair_share(floor: int = 1) -> int:
    """Threads for this process: ``cores // max(running talk3d processes, floor)`` (at least 1)."""
    return max(1, cores() // max(running_processes(), floor))


def start(threads: int = 0, processes: int = 1) -> int:
    """Register this process and set its torch threads: ``threads`` when positive, else the fair share.

    Args:
        threads: an explicit count (kept as given), or 0 for the fair share.
        processes: talk3d processes known to share the machine even before they register
            (the local ranks of a data-parallel fit).
    Returns:
        The thread count set.
    """
    import torch

    _state["fixed"] = max(0, int(threads))
    _state["floor"] = max(1, int(processes))
    _state["checked"] = time.monotonic()
    n = _state["fixed"] or fair_share(int(_state["floor"]))  # type: ignore[arg-type]
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return int(n)


def rebalance() -> int:
    """Re-count the peers (at most every :data:`RECHECK_SECONDS`) and adapt the thread count."""
    import torch

    now = time.monotonic()
    if _state["fixed"] or now - float(_state["checked"]) < RECHECK_SECONDS:  # type: ignore[arg-type]
        return torch.get_num_threads()
    return start(0, int(_state["floor"]))  # type: ignore[arg-type]
