"""Allocator settings for torch's large CPU tensors.

A render or fit step allocates and frees tensors of a few to tens of megabytes many times per
frame. With glibc's defaults, blocks above a (dynamic) threshold are mapped on their own and
unmapped when freed, so the next frame pays the page faults of touching fresh memory again.
:func:`keep_freed_memory` has glibc serve blocks up to :data:`MMAP_THRESHOLD` from its heap and
keep up to :data:`TRIM_THRESHOLD` of freed memory for the next allocations. Measured on the Obama
avatar (2 cores, docs/render.md "Speed on CPU"): ``--pose fixed`` 41.6-43.1 -> 45.8-46.6 model
frames/s, peak memory unchanged within the run-to-run scatter.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD = 32 << 20
"""Blocks at least this large are still mapped on their own (glibc's own ceiling for its dynamic threshold)."""
TRIM_THRESHOLD = 256 << 20
"""Free memory at the top of the heap beyond this is returned to the system."""
_applied: list[bool] = []


def keep_freed_memory() -> bool:
    """Apply the settings above to this process's glibc allocator, once; False where the C library
    is not glibc (musl, macOS, Windows): nothing changes there."""
    if _applied:
        return _applied[0]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.gnu_get_libc_version  # noqa: B018 (glibc only)
            ok = all(libc.mallopt(param, value) == 1
                     for param, value in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
        except (OSError, AttributeError):
            ok = False
    _applied.append(ok)
    return ok
