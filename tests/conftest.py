"""Shared pytest fixtures: keep tests on CPU and small."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

# Two cores are shared by the whole suite (and by mediapipe's own threads): one torch thread
# per test process avoids oversubscription, which made small CPU tests 100x slower.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real recordings (../shared/data); tests using it skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("shared recordings (../shared/data) are not present")
    return SHARED_DATA


@pytest.fixture
def render_impl_env() -> Iterator[Callable[[str | None], None]]:
    """``use(value)``: resolve the render setting as if the process had started with
    ``TALK3D_RENDER_IMPL=value`` (``None``: unset); the setting is re-read from the real
    environment afterwards. The variable is read once at start (talk3d.ops), so setting it
    during a test has no effect by itself."""
    from talk3d import ops

    def use(value: str | None) -> None:
        ops.reset_render_impl({} if value is None else {ops.ENV_VAR: value})

    yield use
    ops.reset_render_impl()
