"""Lazy loader of the CUDA extension: built on first CUDA use, never at import.

The extension is compiled with ``torch.utils.cpp_extension.load`` (ninja) into a build
directory keyed by a hash of the sources, the torch / CUDA / Python versions, so a rebuild
happens only when one of them changes::

    $TALK3D_CUDA_CACHE or $XDG_CACHE_HOME/talk3d/cuda_ext or ~/.cache/talk3d/cuda_ext
        <hash>/   ninja files, objects and the .so

Any failure (no CUDA, no compiler, a build error) is remembered: :func:`load_extension`
returns ``None`` after reporting the reason once; ``strict=True`` raises
:class:`KernelUnavailableError`.

This package does not import talk3d (talk3d imports it): the start of a build and the reason the
kernels are unavailable go to the ``cuda_ext`` logger unless :func:`set_reporters` installs
other receivers (:mod:`talk3d.ops` sends them to talk3d's console and log file).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
#: Sources of the extension; ``render_math.h`` and ``launchers.h`` are hashed too.
SOURCES = ("bindings.cpp", "triplane.cu", "composite.cu")
HEADERS = ("render_math.h", "launchers.h")


log = logging.getLogger("cuda_ext")


class KernelUnavailableError(RuntimeError):
    """The CUDA kernels were required (``strict=True``) but cannot be used.

    Attributes:
        reason: why not, one line (e.g. "no CUDA device is available").
    """

    def __init__(self, reason: str):
        super().__init__(f"the CUDA render kernels were required but cannot be honoured: {reason}")
        self.reason = reason


def _log_build(build_dir: Path) -> None:
    log.info("building the CUDA render kernels (first use; cached in %s) ...", build_dir)


def _log_unavailable(reason: str) -> None:
    log.warning("CUDA render kernels unavailable: %s; using the torch fallback", reason)


_lock = threading.Lock()
_state: dict[str, object] = {"module": None, "error": None, "warned": False}
_source_dir: list[Path] = [CSRC]  # tests point this at a broken copy
_reporters: dict[str, Callable] = {"build": _log_build, "unavailable": _log_unavailable}


def set_reporters(on_build: Callable[[Path], None] | None = None,
                  on_unavailable: Callable[[str], None] | None = None) -> None:
    """Choose who hears about the loader's events (``None`` restores the ``cuda_ext`` logger).

    Args:
        on_build: called with the build directory when a build starts (it takes a while).
        on_unavailable: called with the one-line reason the first time a non-strict load finds
            the kernels unavailable (once per process, until :func:`reset`).
    """
    _reporters["build"] = on_build or _log_build
    _reporters["unavailable"] = on_unavailable or _log_unavailable


def set_source_dir(path: Path | None) -> None:
    """Use another source directory (``None`` restores the packaged one) and forget the last load."""
    _source_dir[0] = Path(path) if path is not None else CSRC
    reset()


def reset() -> None:
    """Forget the loaded module, the remembered failure and the warn-once flag."""
    with _lock:
        _state.update(module=None, error=None, warned=False)


def cache_root() -> Path:
    """Root of the build cache (see the module docstring)."""
    if os.environ.get("TALK3D_CUDA_CACHE"):
        return Path(os.environ["TALK3D_CUDA_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "talk3d" / "cuda_ext"


def source_hash(src_dir: Path | None = None) -> str:
    """Hash of the sources and the toolchain they are built against (16 hex digits)."""
    src_dir = src_dir or _source_dir[0]
    h = hashlib.sha256()
    for name in SOURCES + HEADERS:
        path = src_dir / name
        h.update(name.encode())
        h.update(path.read_bytes() if path.is_file() else b"<missing>")
    h.update(f"{torch.__version__}|{torch.version.cuda}|{platform.python_version()}".encode())
    h.update(os.environ.get("TORCH_CUDA_ARCH_LIST", "").encode())
    return h.hexdigest()[:16]


def build_dir(src_dir: Path | None = None) -> Path:
    """Build directory for the current sources: ``cache_root() / source_hash()``."""
    return cache_root() / source_hash(src_dir)


def _why_unavailable() -> str | None:
    """A reason the kernels cannot be built here, or None when a build is worth trying."""
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    if torch.version.cuda is None:
        return "this torch build has no CUDA support"
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None:
        return "no CUDA toolkit (nvcc) was found; set CUDA_HOME"
    return None


def _build() -> ModuleType:
    from torch.utils.cpp_extension import load

    src_dir = _source_dir[0]
    missing = [n for n in SOURCES if not (src_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"missing CUDA sources in {src_dir}: {', '.join(missing)}")
    out = build_dir(src_dir)
    out.mkdir(parents=True, exist_ok=True)
    _reporters["build"](out)
    return load(
        name=f"talk3d_render_{source_hash(src_dir)}",
        sources=[str(src_dir / n) for n in SOURCES],
        extra_include_paths=[str(src_dir)],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3", "-lineinfo"],
        build_directory=str(out),
        verbose=bool(os.environ.get("TALK3D_CUDA_VERBOSE")),
    )


def load_extension(strict: bool = False) -> ModuleType | None:
    """Return the compiled extension, building it on first use.

    Args:
        strict: raise :class:`KernelUnavailableError` instead of reporting and returning None.
    Returns:
        The extension module, or None when it is unavailable (the reason is reported once per
        process, see :func:`set_reporters`).
    """
    with _lock:
        if _state["module"] is None and _state["error"] is None:
            reason = _why_unavailable()
            if reason is None:
                try:
                    _state["module"] = _build()
                except Exception as exc:  # noqa: BLE001 - any build failure means "fall back"
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    reason = f"the CUDA kernel build failed ({first[:200]})"
            _state["error"] = reason
        if _state["module"] is not None:
            return _state["module"]  # type: ignore[return-value]
        reason = str(_state["error"])
        if strict:
            raise KernelUnavailableError(reason)
        if not _state["warned"]:
            _state["warned"] = True
            _reporters["unavailable"](reason)
        return None
