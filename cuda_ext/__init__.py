"""Custom CUDA volume-rendering kernels (forward and backward), drop-in for the torch twin.

Three layers per kernel (gsplat / nerfacc style):

* lazy loader (:mod:`cuda_ext._loader`): compiled with ninja on first CUDA use, cached by a
  hash of the sources; never at import;
* checked wrappers around ``torch.autograd.Function`` (:func:`sample_triplane_cuda`,
  :func:`composite_rays_cuda`);
* the pure-torch twin in :mod:`talk3d.ops.reference`, which defines the semantics.

Callers use :mod:`talk3d.ops` (``sample_triplane`` / ``composite_rays``), which dispatches.
The dependency is one-way: talk3d imports this package, this package never imports talk3d
(talk3d turns :class:`KernelUnavailableError` into its one-line ``UserError`` and receives
the loader's messages through :func:`set_reporters`).
"""

from __future__ import annotations

from cuda_ext._loader import KernelUnavailableError, build_dir, cache_root, load_extension, set_reporters
from cuda_ext.composite import composite_rays_cuda
from cuda_ext.triplane import sample_triplane_cuda

__all__ = [
    "KernelUnavailableError",
    "build_dir",
    "cache_root",
    "composite_rays_cuda",
    "kernels_available",
    "load_extension",
    "sample_triplane_cuda",
    "set_reporters",
]


def kernels_available(strict: bool = False) -> bool:
    """Whether the CUDA kernels can be used (builds them on first call when CUDA is present).

    Args:
        strict: raise :class:`KernelUnavailableError` with the reason instead of returning
            False (a non-strict miss reports the reason once per process, see
            :func:`set_reporters`).
    """
    return load_extension(strict=strict) is not None
