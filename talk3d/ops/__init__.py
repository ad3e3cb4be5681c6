"""Volume-rendering primitives with one dispatch point.

The renderer calls :func:`sample_triplane` and :func:`composite_rays` only. Which
implementation runs is decided here, in :func:`select_impl`:

* ``"torch"``: the pure-torch twin in :mod:`talk3d.ops.reference` (CPU and GPU).
* ``"cuda"``: fused kernels from ``cuda_ext`` (built lazily on first CUDA use).
* ``"auto"`` (default): CUDA kernels for CUDA tensors when they build, else the twin;
  triplane sampling of float32 CPU tensors takes the embedding-bag path of
  :mod:`talk3d.ops.bag` (same semantics, a faster forward; tested against the twin).

The choice is a process setting, :func:`render_impl`: ``auto`` unless the environment
variable ``TALK3D_RENDER_IMPL`` (``auto|torch|cuda``) says otherwise when this module is
imported (read and checked once, not per call), and :func:`set_render_impl` overrides both.
An explicit ``impl=`` argument overrides the setting. ``cuda`` that cannot be honoured (CPU
tensors, no GPU, no compiler, failed build) raises a one-line :class:`UserError`; ``auto``
falls back to the twin with a one-line warning (once). See docs/cuda.md.

``cuda_ext`` does not import talk3d: its errors are translated into :class:`UserError` here
and its messages reach talk3d's console through :func:`cuda_ext.set_reporters`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

import torch

from talk3d.errors import UserError
from talk3d.ops.bag import sample_triplane_bag
from talk3d.ops.reference import PLANE_AXES, composite_rays_ref, sample_triplane_ref

__all__ = [
    "ENV_VAR",
    "IMPLS",
    "PLANE_AXES",
    "composite_rays",
    "render_impl",
    "reset_render_impl",
    "sample_triplane",
    "select_impl",
    "set_render_impl",
]

ENV_VAR = "TALK3D_RENDER_IMPL"
IMPLS = ("auto", "torch", "cuda")

_setting: dict[str, str | None] = {"impl": "auto", "error": None}
_kernels_state = {"reporting": False}


# --------------------------------------------------------------------------------------
# the process setting


def _from_environment(environ: Mapping[str, str]) -> tuple[str, str | None]:
    """``(implementation, error message or None)`` from ``TALK3D_RENDER_IMPL`` (unset or empty: auto)."""
    raw = environ.get(ENV_VAR, "").strip()
    if not raw:
        return "auto", None
    if raw.lower() not in IMPLS:
        return "auto", f"{ENV_VAR} must be one of auto, torch, cuda; got {raw!r} (unset it or fix its value)"
    return raw.lower(), None


def reset_render_impl(environ: Mapping[str, str] | None = None) -> None:
    """Resolve the setting from ``TALK3D_RENDER_IMPL`` again, forgetting :func:`set_render_impl`.

    Runs once when this module is imported (process start). Tests call it to simulate a start
    with another environment.

    Args:
        environ: the environment to read (default ``os.environ``).
    """
    impl, error = _from_environment(os.environ if environ is None else environ)
    _setting.update(impl=impl, error=error)


def set_render_impl(name: str) -> None:
    """Use ``name`` (``auto``, ``torch`` or ``cuda``) from now on; overrides ``TALK3D_RENDER_IMPL``.

    Raises:
        UserError: an unknown name.
    """
    impl = str(name).strip().lower()
    if impl not in IMPLS:
        raise UserError(f"the render implementation must be one of auto, torch, cuda; got {name!r}")
    _setting.update(impl=impl, error=None)


def render_impl() -> str:
    """The implementation set for this process: ``auto``, ``torch`` or ``cuda``.

    Raises:
        UserError: ``TALK3D_RENDER_IMPL`` held an unknown value at start (one line saying so).
    """
    if _setting["error"] is not None:
        raise UserError(str(_setting["error"]))
    return str(_setting["impl"])


reset_render_impl()


def _requested(impl: str | None) -> str:
    """The implementation asked for: the argument, else the process setting (:func:`render_impl`)."""
    if not impl:
        return render_impl()
    if impl.lower() not in IMPLS:
        raise ValueError(f"render implementation must be one of {IMPLS}, got {impl!r}")
    return impl.lower()


# --------------------------------------------------------------------------------------
# cuda_ext: messages and errors in talk3d's terms


def _report_build(build_dir: Path) -> None:
    from talk3d.console import info

    info(f"building talk3d CUDA kernels (first use; cached in {build_dir}) ...")


def _report_unavailable(reason: str) -> None:
    from talk3d.console import warn

    warn(f"CUDA render kernels unavailable: {reason}; using the torch renderer "
         f"(set {ENV_VAR}=torch to silence)")


def _kernels() -> ModuleType:
    """``cuda_ext``, reporting through talk3d's console (raises ImportError when it is missing)."""
    import cuda_ext

    if not _kernels_state["reporting"]:
        cuda_ext.set_reporters(on_build=_report_build, on_unavailable=_report_unavailable)
        _kernels_state["reporting"] = True
    return cuda_ext


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn cuda_ext's :class:`KernelUnavailableError` into talk3d's one-line :class:`UserError`."""
    from cuda_ext import KernelUnavailableError

    try:
        yield
    except KernelUnavailableError as exc:
        raise UserError(f"{ENV_VAR}=cuda cannot be honoured: {exc.reason}; "
                        f"use {ENV_VAR}=auto or torch") from None


def _kernels_usable(impl: str) -> bool:
    """Whether the CUDA kernels run this call (``cuda``: they must, or a UserError says why)."""
    try:
        kernels = _kernels()
    except ImportError as exc:
        if impl == "cuda":
            raise UserError(f"{ENV_VAR}=cuda but cuda_ext cannot be imported ({exc}); "
                            f"reinstall talk3d or set {ENV_VAR}=auto") from exc
        return False
    with _user_errors():
        return kernels.kernels_available(strict=(impl == "cuda"))


# --------------------------------------------------------------------------------------
# dispatch


def select_impl(tensor: torch.Tensor, impl: str | None = None) -> str:
    """Return ``"torch"`` or ``"cuda"`` for an input tensor and a requested implementation.

    * ``"torch"``: always the twin.
    * ``"auto"``: the CUDA kernels for float32/float16/bfloat16 CUDA tensors when they build
      (a failed build warns once and falls back); the twin for CPU or float64 tensors.
    * ``"cuda"``: the CUDA kernels or a :class:`~talk3d.errors.UserError` saying why not
      (CPU tensors, no CUDA, no compiler, failed build); float64 is computed in float32.

    ``impl=None`` uses the process setting (:func:`render_impl`); an unknown ``impl`` is a
    ValueError.
    """
    impl = _requested(impl)
    if impl == "torch":
        return "torch"
    if impl == "cuda" and not tensor.is_cuda:
        raise UserError(
            f"{ENV_VAR}=cuda needs CUDA tensors, got a {tensor.device.type} tensor; "
            f"run on a GPU (--device cuda) or set {ENV_VAR}=auto"
        )
    if not tensor.is_cuda or (impl == "auto" and tensor.dtype == torch.float64):
        return "torch"
    return "cuda" if _kernels_usable(impl) else "torch"


def sample_triplane(planes: torch.Tensor, points: torch.Tensor, reduce: str = "sum",
                    impl: str | None = None) -> torch.Tensor:
    """Sample triplane features at points; see :func:`sample_triplane_ref` for shapes.

    Under ``auto``, float32 CPU tensors use :func:`~talk3d.ops.bag.sample_triplane_bag`;
    ``torch`` always runs the twin.
    """
    chosen = select_impl(planes, impl)
    if chosen == "cuda":
        with _user_errors():
            return _kernels().sample_triplane_cuda(planes, points, reduce)
    if _requested(impl) == "auto" and not planes.is_cuda and planes.dtype == torch.float32:
        return sample_triplane_bag(planes, points, reduce)
    return sample_triplane_ref(planes, points, reduce)


def composite_rays(sigmas: torch.Tensor, features: torch.Tensor, t_vals: torch.Tensor,
                   deltas: torch.Tensor, impl: str | None = None) -> dict[str, torch.Tensor]:
    """Alpha-composite ray samples; see :func:`composite_rays_ref` for shapes."""
    if select_impl(sigmas, impl) == "cuda":
        with _user_errors():
            return _kernels().composite_rays_cuda(sigmas, features, t_vals, deltas)
    return composite_rays_ref(sigmas, features, t_vals, deltas)
