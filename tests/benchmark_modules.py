"""Import a script of ``benchmarks/`` (not a package) as a module, for its tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(stem: str) -> ModuleType:
    """``benchmarks/<stem>.py`` as the module ``talk3d_bench_<stem>``, registered in
    ``sys.modules`` once (so its dataclasses work)."""
    name = f"talk3d_bench_{stem}"
    if name not in sys.modules:
        path = BENCHMARKS / f"{stem}.py"
        if not path.is_file():
            raise FileNotFoundError(f"no benchmark script {path}")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]  # no half-imported module for the next test
            raise
    return sys.modules[name]
