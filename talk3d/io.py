"""Atomic file writing, JSON helpers and per-folder log files.

Every output is written to a temporary name in the same folder and renamed into place,
so a crash or Ctrl-C never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from talk3d.errors import UserError


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
# Names of the temporaries made by atomic_path / atomic_dir (mkstemp adds 8 random characters).
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")
# ... and those of libraries writing through tempfile's default names (only cleaned in talk3d's own folders).
_ANONYMOUS_TEMPORARY = re.compile(r"^\.?tmp[A-Za-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


def _usual_mode(path: Path, directory: bool) -> None:
    """Give a file made by mkstemp/mkdtemp (mode 0600/0700) the user's usual permissions (umask)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary file keeps the target's suffix (or ``suffix``) so that libraries which
    pick a format from the extension (imageio, PIL, ffmpeg) still work. On an exception
    the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    ext = suffix if suffix is not None else "".join(target.suffixes[-1:])
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{ext}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            _usual_mode(tmp, directory=False)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; move it onto ``path`` on success.

    An existing folder at ``path`` is replaced only once the new one is complete.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _usual_mode(tmp, directory=True)
        if target.exists() or target.is_symlink():
            # the old folder goes aside under a temporary name (cleaned like any stale temporary),
            # and comes back if the new one cannot be moved in
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
            os.replace(target, old / "old")
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old / "old", target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file (``ValueError`` when it is not JSON, ``OSError`` when unreadable)."""
    return json.loads(Path(path).read_text())


def read_json_dict(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON object, or ``None`` when the file is missing, unreadable or holds something else
    (for records whose absence or damage just means "redo that work")."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_json_object(path: str | os.PathLike, fix: str) -> dict[str, Any]:
    """Read a JSON object; raise :class:`UserError` ending in ``fix`` when it is unreadable or not one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read '{path}' ({_reason(exc)}); {fix}") from None
    if not isinstance(data, dict):
        raise UserError(f"'{path}' does not hold a JSON object; {fix}")
    return data


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a ``.npy`` array atomically (never pickled object arrays)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)


def read_npy(path: str | os.PathLike, mmap: bool = False, fix: str = "re-run the talk3d command that wrote it",
             finite: bool = False) -> np.ndarray:
    """Read a ``.npy`` array without allowing pickled objects.

    Raises:
        UserError: the file is missing, truncated, damaged, pickled, or (with ``finite``) holds
            NaN/inf; the message ends in ``fix``.
    """
    try:
        _check_npy_size(Path(path))
        array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except _NPY_PARSE_ERRORS as exc:
        raise UserError(f"'{path}' is damaged or truncated ({_reason(exc)}); {fix}") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise UserError(f"'{path}' does not hold a numeric array; {fix}")
    if finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise UserError(f"'{path}' holds NaN or infinite values; {fix}")
    return array


# What numpy's .npy reader raises on a damaged header (it parses the header as a Python literal).
_NPY_PARSE_ERRORS = (OSError, ValueError, EOFError, MemoryError, SyntaxError, TypeError, KeyError, OverflowError,
                     tokenize.TokenError)


def _check_npy_size(path: Path) -> None:
    """Refuse a ``.npy`` whose header promises more data than the file holds (before any allocation)."""
    from numpy.lib import format as npy_format

    with open(path, "rb") as f:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        header_end = f.tell()
    needed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if header_end + needed > path.stat().st_size:
        raise ValueError(f"its header promises {needed} bytes of data, the file holds {path.stat().st_size - header_end}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def need_free_space(folder: str | os.PathLike, needed_bytes: float, what: str) -> None:
    """Refuse to start when the disk holding ``folder`` has less than ``needed_bytes`` free."""
    probe = os.path.abspath(folder)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise UserError(f"not enough free space for {what} in '{folder}': it needs about "
                        f"{needed_bytes / 1e6:,.0f} MB, the disk has {free / 1e6:,.0f} MB free; free some space "
                        f"or choose another output folder")


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def safe_child(folder: str | os.PathLike, name: str) -> Path | None:
    """``folder / name`` when ``name`` is a plain entry name (no separators, not ``.``/``..``), else None."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        return None
    return Path(folder) / name


def confined(folder: str | os.PathLike, name: Any, what: str, fix: str,
             error: type[UserError] = UserError) -> Path:
    """``folder / name`` for a name read from a file; refuse (``error``) names that leave ``folder``."""
    path = safe_child(folder, name) if isinstance(name, str) else None
    if path is None:
        raise error(f"{what} names '{name}', which is not a file inside '{folder}'; {fix}")
    return path


def remove_tree(path: str | os.PathLike) -> None:
    """Remove a file, link or folder if it exists (links are removed, never followed)."""
    p = Path(path)
    if p.is_symlink() or p.is_file():
        p.unlink(missing_ok=True)
    elif p.is_dir():
        shutil.rmtree(p)


def remove_stale_temporaries(folder: str | os.PathLike, anonymous: bool = False) -> int:
    """Remove the temporaries a killed process left in ``folder`` (``atomic_path``/``atomic_dir`` names,
    and with ``anonymous`` also ``tmpXXXXXXXX`` names, for folders only talk3d writes in).

    Returns:
        How many were removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    anonymous = anonymous and not folder.is_symlink()  # a linked folder may hold other programs' files
    count = 0
    for p in folder.iterdir():
        if _TEMPORARY.match(p.name) or (anonymous and _ANONYMOUS_TEMPORARY.match(p.name)):
            remove_tree(p)
            count += 1
    return count


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def setup_file_log(folder: str | os.PathLike, name: str) -> logging.Logger:
    """Return the ``talk3d`` logger with a file handler appending to ``folder/name.log``.

    The CLI prints to the terminal with rich; the log file keeps the full record of a run
    (settings, timings, warnings) for later reading.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("talk3d")
    logger.setLevel(logging.INFO)
    log_path = (folder / f"{name}.log").resolve()
    for h in logger.handlers:
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == log_path:
            return logger
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


def close_file_logs() -> None:
    """Detach and close the ``talk3d`` logger's file handlers (end of a command, tests).

    Native libraries' lines still on their way to the log (:class:`talk3d.console.NativeStderrToLog`)
    are written first.
    """
    from talk3d.console import flush_native_lines

    flush_native_lines()
    logger = logging.getLogger("talk3d")
    for h in list(logger.handlers):
        if isinstance(h, logging.FileHandler):
            logger.removeHandler(h)
            h.close()
