"""Loader behaviour without a GPU: lazy, cached by source hash, warn-once fallback, strict errors."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import cuda_ext
from cuda_ext import _loader
from talk3d.errors import UserError
from talk3d.ops import select_impl


@pytest.fixture(autouse=True)
def fresh_loader():
    _loader.reset()
    yield
    _loader.set_source_dir(None)


def test_import_does_not_build() -> None:
    code = ("import cuda_ext, talk3d.ops; "
            "assert cuda_ext._loader._state['module'] is None and cuda_ext._loader._state['error'] is None")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_cuda_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_ext.kernels_available() is False
    assert cuda_ext.kernels_available() is False
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "no CUDA device" in warnings[0]
    with pytest.raises(cuda_ext.KernelUnavailableError, match="cannot be honoured: no CUDA device"):
        cuda_ext.kernels_available(strict=True)
    # cuda_ext has its own error; talk3d's dispatch turns it into the one-line UserError users see
    fake_cuda_tensor = SimpleNamespace(is_cuda=True, dtype=torch.float32)
    with pytest.raises(UserError, match=r"^TALK3D_RENDER_IMPL=cuda cannot be honoured: no CUDA device is "
                                        r"available; use TALK3D_RENDER_IMPL=auto or torch$"):
        select_impl(fake_cuda_tensor, "cuda")  # type: ignore[arg-type]


def test_talk3d_prints_the_fallback_warning(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fake_cuda_tensor = SimpleNamespace(is_cuda=True, dtype=torch.float32)
    assert select_impl(fake_cuda_tensor, "auto") == "torch"  # type: ignore[arg-type]
    assert select_impl(fake_cuda_tensor, "auto") == "torch"  # type: ignore[arg-type]
    warnings = [(r.name, r.getMessage()) for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [("talk3d", "CUDA render kernels unavailable: no CUDA device is available; using the torch "
                                   "renderer (set TALK3D_RENDER_IMPL=torch to silence)")]


def test_cuda_ext_does_not_import_talk3d() -> None:
    """One-way dependency: talk3d imports cuda_ext, never the reverse (not even lazily)."""
    for path in sorted(Path(cuda_ext.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not [n for n in names if n.split(".")[0] == "talk3d"], f"{path.name} imports {names}"
    code = ("import sys, cuda_ext, cuda_ext.emulation, cuda_ext.testing; "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'talk3d'], sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def _pretend_buildable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_loader, "_why_unavailable", lambda: None)
    monkeypatch.setenv("TALK3D_CUDA_CACHE", str(tmp_path / "cache"))


def test_broken_source_dir_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog) -> None:
    _pretend_buildable(monkeypatch, tmp_path)
    broken = tmp_path / "csrc"
    broken.mkdir()
    (broken / "bindings.cpp").write_text("this is not C++\n")
    _loader.set_source_dir(broken)
    fake_cuda_tensor = SimpleNamespace(is_cuda=True, dtype=torch.float32)
    assert select_impl(fake_cuda_tensor, "auto") == "torch"  # type: ignore[arg-type]
    assert any("build failed (missing CUDA sources" in r.getMessage() for r in caplog.records)
    with pytest.raises(UserError, match="TALK3D_RENDER_IMPL=cuda cannot be honoured"):
        select_impl(fake_cuda_tensor, "cuda")  # type: ignore[arg-type]


def test_compile_error_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog) -> None:
    _pretend_buildable(monkeypatch, tmp_path)
    calls = []

    def failing_load(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("Error building extension 'talk3d_render': nvcc exited with 1")

    import torch.utils.cpp_extension as cpp_extension

    monkeypatch.setattr(cpp_extension, "load", failing_load)
    assert cuda_ext.kernels_available() is False
    assert cuda_ext.kernels_available() is False
    assert len(calls) == 1  # the failure is remembered: no rebuild per call
    kw = calls[0]
    assert Path(kw["build_directory"]) == _loader.build_dir()
    assert Path(kw["build_directory"]).parent == tmp_path / "cache"
    assert {Path(s).name for s in kw["sources"]} == set(_loader.SOURCES)
    assert sum("Error building extension" in r.getMessage() for r in caplog.records) == 1


def test_build_dir_keyed_by_source_hash(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in _loader.SOURCES + _loader.HEADERS:
        (src / name).write_bytes((_loader.CSRC / name).read_bytes())
    h1 = _loader.source_hash(src)
    assert h1 == _loader.source_hash(_loader.CSRC)
    (src / "composite.cu").write_text((src / "composite.cu").read_text() + "\n// changed\n")
    assert _loader.source_hash(src) != h1
