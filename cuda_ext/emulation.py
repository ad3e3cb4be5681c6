"""CPU emulation of the compiled extension, for tests on machines without a GPU.

Compiles ``csrc/host_emulation.cpp`` (the kernels' exact per-thread bodies from
``render_math.h`` run in plain loops) with the system C++ compiler and exposes the same four
functions as the torch binding (``triplane_forward``, ``triplane_backward``,
``composite_forward``, ``composite_backward``) on CPU float32 tensors, with the same
allocation rules (zeros / ``None`` when a gradient is not needed). Patching it in for
``load_extension`` runs the real autograd Functions end to end on CPU.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import torch

from cuda_ext._loader import CSRC

_F = ctypes.POINTER(ctypes.c_float)
_I64, _INT = ctypes.c_int64, ctypes.c_int


def compiler() -> str | None:
    """Path of a C++ compiler, or None."""
    return shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def _p(t: torch.Tensor | None):
    if t is None:
        return None
    assert t.dtype == torch.float32 and t.is_contiguous() and t.device.type == "cpu"
    return ctypes.cast(t.data_ptr(), _F) if t.numel() else None


class HostEmulation:
    """The kernels' bodies on CPU behind the binding's interface (see module docstring)."""

    def __init__(self, out_dir: Path) -> None:
        cxx = compiler()
        if cxx is None:
            raise RuntimeError("no C++ compiler found")
        lib = Path(out_dir) / "t3d_host_emulation.so"
        cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", f"-I{CSRC}",
               str(CSRC / "host_emulation.cpp"), "-o", str(lib)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"host emulation build failed: {res.stderr.strip()[:2000]}")
        self.lib = ctypes.CDLL(str(lib))
        self.lib.t3d_triplane_forward.argtypes = [_F, _F, _F, _I64, _I64, _INT, _INT, _INT, _INT]
        self.lib.t3d_triplane_backward.argtypes = [_F, _F, _F, _F, _F, _I64, _I64, _INT, _INT, _INT, _INT]
        self.lib.t3d_composite_forward.argtypes = [_F] * 9 + [_I64, _INT, _INT]
        self.lib.t3d_composite_backward.argtypes = [_F] * 16 + [_I64, _INT, _INT]

    def triplane_forward(self, planes_cl: torch.Tensor, points: torch.Tensor, concat: bool) -> torch.Tensor:
        b, _, h, w, c = planes_cl.shape
        n = points.shape[1]
        out = torch.zeros(b, n, 3 * c if concat else c)
        self.lib.t3d_triplane_forward(_p(planes_cl), _p(points), _p(out), b, n, c, h, w, int(concat))
        return out

    def triplane_backward(self, planes_cl, points, grad_out, concat, need_planes, need_points):
        b, _, h, w, c = planes_cl.shape
        n = points.shape[1]
        gp = torch.zeros_like(planes_cl) if need_planes else None
        gx = torch.zeros_like(points) if need_points else None
        if b * n and (need_planes or need_points):
            self.lib.t3d_triplane_backward(_p(planes_cl), _p(points), _p(grad_out), _p(gp), _p(gx),
                                           b, n, c, h, w, int(concat))
        return [gp, gx]

    def composite_forward(self, sigmas, features, t_vals, deltas):
        r, s, c = features.shape
        weights, trans = torch.empty_like(sigmas), torch.empty_like(sigmas)
        out, depth, alpha = torch.zeros(r, c), torch.zeros(r), torch.zeros(r)
        if r:
            self.lib.t3d_composite_forward(_p(sigmas), _p(features), _p(t_vals), _p(deltas),
                                           _p(weights), _p(trans), _p(out), _p(depth), _p(alpha),
                                           r, s, c)
        return [weights, trans, out, depth, alpha]

    def composite_backward(self, sigmas, features, t_vals, deltas, weights, trans,
                           g_weights, g_trans, g_feat, g_depth, g_alpha, needs):
        r, s, c = features.shape
        scratch = torch.empty_like(sigmas)
        g_sig = torch.empty_like(sigmas) if needs[0] else None
        g_f = torch.empty_like(features) if needs[1] else None
        g_t = torch.empty_like(sigmas) if needs[2] else None
        g_d = torch.empty_like(sigmas) if needs[3] else None
        if r * s:
            self.lib.t3d_composite_backward(
                _p(sigmas), _p(features), _p(t_vals), _p(deltas), _p(weights), _p(trans),
                _p(g_weights), _p(g_trans), _p(g_feat), _p(g_depth), _p(g_alpha), _p(scratch),
                _p(g_sig), _p(g_f), _p(g_t), _p(g_d), r, s, c)
        return [g_sig, g_f, g_t, g_d]
